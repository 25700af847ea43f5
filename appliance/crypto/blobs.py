"""Encrypted blob files: streaming, segmented AES-256-GCM in the manner of Tink's streaming
AEAD and age's STREAM, for objects too large to hold in memory (datasets, model artifacts,
checkpoints, exports).

File layout::

    header  = b"APB" | format (u8) | key_version (u32) | segment_size (u32) | salt (16) | nonce_prefix (7)
    segment = AES-GCM(blob_key, nonce = nonce_prefix | index (u32) | last (u8), plaintext, aad) || tag (16)

``blob_key`` is HKDF-SHA256 of the tenant's data key with the per-file random ``salt`` and
the blob's identity, so each file has its own key and the 7-byte nonce prefix never has to
be unique across files. Every segment's associated data is the whole header plus
(tenant, kind, blob id); the nonce carries the segment index and a last-segment flag. So a
flipped bit, a reordered, dropped or appended segment, a cut tail, or a file moved to another
blob or tenant all fail authentication with the same :class:`IntegrityError`.

Segments are verified before any of their plaintext is released. A reader therefore sees
every segment up to the damage and then the error, before the end of the stream: consumers
that must not act on partial data should stage what they read and commit only after the
iterator finished without raising.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from appliance.crypto.aead import context
from appliance.crypto.data_keys import DataKeyService
from appliance.crypto.records import DATA_PURPOSE
from appliance.db.engine import transaction
from appliance.db.models import Blob
from appliance.errors import IntegrityError, InvalidInput, NotFound, StorageFull

MAGIC = b"APB"
FORMAT_VERSION = 1
DEFAULT_SEGMENT_SIZE = 1 << 20
MIN_SEGMENT_SIZE = 1 << 12
MAX_SEGMENT_SIZE = 1 << 26  # bound checked before authentication: a forged header cannot make us allocate more
TAG_BYTES = 16
_HEADER = struct.Struct(">3sBII16s7s")
HEADER_BYTES = _HEADER.size
_NONCE = struct.Struct(">7sIB")
MAX_SEGMENTS = 2**32 - 1
TMP_SUFFIX = ".tmp"
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Write failures that mean the disk (or a quota, or a file-size limit) has no room: StorageFull."""
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_KIND = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
_TMP = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]{0,63})\.[0-9a-f]{8}" + re.escape(TMP_SUFFIX) + "$")

Source = bytes | bytearray | memoryview | Iterable[bytes] | BinaryIO
KeyForVersion = Callable[[int], bytes]
Checkpoint = Callable[[str], None]


@dataclass(frozen=True)
class BlobHeader:
    key_version: int
    segment_size: int
    salt: bytes
    nonce_prefix: bytes
    raw: bytes

    @classmethod
    def new(cls, key_version: int, segment_size: int) -> BlobHeader:
        salt, prefix = secrets.token_bytes(16), secrets.token_bytes(7)
        raw = _HEADER.pack(MAGIC, FORMAT_VERSION, key_version, segment_size, salt, prefix)
        return cls(key_version, segment_size, salt, prefix, raw)

    @classmethod
    def parse(cls, raw: bytes) -> BlobHeader:
        """Structural checks only; the header is authenticated with the first segment."""
        if len(raw) != HEADER_BYTES:
            raise IntegrityError("blob file is malformed")
        magic, fmt, key_version, segment_size, salt, prefix = _HEADER.unpack(raw)
        if magic != MAGIC or fmt != FORMAT_VERSION or not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise IntegrityError("blob file is malformed")
        return cls(key_version, segment_size, salt, prefix, raw)


@dataclass(frozen=True)
class BlobInfo:
    id: str
    tenant_id: str
    kind: str
    key_version: int
    size: int
    created_at: datetime


def _info(row: Blob) -> BlobInfo:
    return BlobInfo(row.id, row.tenant_id, row.kind, row.key_version, row.size, row.created_at)


def _identity(tenant_id: str, kind: str, blob_id: str) -> bytes:
    return context("blob", tenant_id, kind, blob_id)


class _Cipher:
    """The per-file key and associated data; one instance per stream."""

    def __init__(self, dek: bytes, header: BlobHeader, identity: bytes) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=header.salt, info=b"appliance/blob/v1" + identity)
        self.aead = AESGCM(hkdf.derive(dek))
        self.aad = header.raw + identity
        self.prefix = header.nonce_prefix

    def nonce(self, index: int, last: bool) -> bytes:
        if index > MAX_SEGMENTS:
            raise InvalidInput("blob is too large for one stream")
        return _NONCE.pack(self.prefix, index, 1 if last else 0)


def _chunks(source: Source, size: int) -> Iterator[bytes | bytearray | memoryview]:
    if isinstance(source, bytes | bytearray | memoryview):
        yield source
        return
    if hasattr(source, "read"):
        reader: BinaryIO = source  # type: ignore[assignment]
        while chunk := reader.read(size):
            yield chunk
        return
    yield from source


def _segments(source: Source, size: int) -> Iterator[bytes | bytearray | memoryview]:
    """Exactly ``size``-byte pieces (the last may be shorter, and is empty only for an empty input)."""
    buf = bytearray()
    emitted = False
    for chunk in _chunks(source, size):
        if not buf and len(chunk) == size:
            emitted = True
            yield chunk
            continue
        buf += chunk
        start = 0
        while len(buf) - start >= size:
            emitted = True
            yield bytes(buf[start : start + size])
            start += size
        del buf[:start]
    if buf or not emitted:
        yield bytes(buf)


def encrypt_stream(source: Source, out: BinaryIO, header: BlobHeader, dek: bytes, identity: bytes) -> int:
    """Write header and segments to ``out``; returns the plaintext size. Memory: two segments."""
    cipher = _Cipher(dek, header, identity)
    out.write(header.raw)
    buf = bytearray(header.segment_size + TAG_BYTES)
    view = memoryview(buf)
    size = 0
    index = 0
    held: bytes | bytearray | memoryview | None = None
    for segment in _segments(source, header.segment_size):
        if held is not None:
            n = cipher.aead.encrypt_into(cipher.nonce(index, False), held, cipher.aad, view[: len(held) + TAG_BYTES])
            out.write(view[:n])
            index += 1
        size += len(segment)
        held = segment
    assert held is not None
    n = cipher.aead.encrypt_into(cipher.nonce(index, True), held, cipher.aad, view[: len(held) + TAG_BYTES])
    out.write(view[:n])
    return size


def read_header(fh: BinaryIO) -> BlobHeader:
    return BlobHeader.parse(fh.read(HEADER_BYTES))


def _read_full(fh: BinaryIO, buf: bytearray) -> int:
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = fh.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def decrypt_stream(fh: BinaryIO, key_for_version: KeyForVersion, identity: bytes) -> Iterator[bytes]:
    """Yield verified plaintext segments; raise IntegrityError at the first bad or missing one.

    ``key_for_version`` may raise KeyUnavailable (the tenant was shredded). Holds two
    ciphertext segments in memory, reused: the one being checked and a look-ahead that tells
    whether it is the last. Each yielded segment is a fresh ``bytes`` the caller may keep.
    """
    header = read_header(fh)
    cipher = _Cipher(key_for_version(header.key_version), header, identity)
    want = header.segment_size + TAG_BYTES
    current, following = bytearray(want), bytearray(want)
    n_current = _read_full(fh, current)
    index = 0
    while True:
        n_following = _read_full(fh, following) if n_current == want else 0
        last = n_following == 0
        if n_current < TAG_BYTES or (not last and n_current != want):
            raise IntegrityError("blob file is truncated or malformed")
        try:
            plaintext = cipher.aead.decrypt(cipher.nonce(index, last), memoryview(current)[:n_current], cipher.aad)
        except InvalidTag:
            raise IntegrityError("blob file failed authentication") from None
        yield plaintext
        if last:
            return
        current, following = following, current
        n_current = n_following
        index += 1


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, fill: Callable[[BinaryIO], int], checkpoint: Checkpoint | None = None) -> int:
    """Temp file in the same directory, fsync, rename, fsync the directory: a crash leaves
    either the old file or the new one at ``path``, never a mix (at worst a stray temp file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb", buffering=0) as fh:
            size = fill(fh)
            os.fsync(fh.fileno())
        if checkpoint is not None:
            checkpoint("blob.temp-written")
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno in NO_ROOM:
            raise StorageFull("the data directory has no room for this write; nothing was stored") from None
        raise
    fsync_dir(path.parent)
    return size


def _check_id(value: str, what: str) -> str:
    if not _ID.fullmatch(value):
        raise NotFound(f"no such {what}")
    return value


class BlobStore:
    """Tenant-scoped encrypted files at ``<blob_dir>/<tenant_id>/<blob_id>`` plus a ``blobs`` row.

    The file is written (atomically) before its row is committed, and the row is deleted
    before its file: a crash can leave an orphan file (sealed, harmless; see
    :meth:`remove_orphan_files`) but never a row without a readable file.
    """

    def __init__(
        self,
        blob_dir: Path,
        data_keys: DataKeyService,
        sessions: sessionmaker[Session],
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> None:
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError("segment size out of range")
        self._dir = blob_dir
        self._keys = data_keys
        self._sessions = sessions
        self._segment_size = segment_size

    @property
    def blob_dir(self) -> Path:
        return self._dir

    def path(self, tenant_id: str, blob_id: str) -> Path:
        return self._dir / _check_id(tenant_id, "tenant") / _check_id(blob_id, "blob")

    def _key_for(self, tenant_id: str) -> KeyForVersion:
        return lambda version: self._keys.key(tenant_id, DATA_PURPOSE, version)

    def put(self, tenant_id: str, kind: str, data: Source) -> BlobInfo:
        """Encrypt ``data`` (bytes, an iterable of chunks or a binary file) into a new blob."""
        if not _KIND.fullmatch(kind):
            raise InvalidInput("blob kind must be 1-32 of a-z, 0-9, '_', '.', '-'")
        blob_id = str(uuid.uuid4())
        active = self._keys.active(tenant_id, DATA_PURPOSE, tenant_id=tenant_id)
        header = BlobHeader.new(active.version, self._segment_size)
        identity = _identity(tenant_id, kind, blob_id)
        path = self.path(tenant_id, blob_id)
        size = write_atomically(path, lambda fh: encrypt_stream(data, fh, header, active.key, identity))
        try:
            with transaction(self._sessions) as session:
                row = Blob(id=blob_id, tenant_id=tenant_id, kind=kind, key_version=active.version, size=size)
                session.add(row)
                session.flush()
                return _info(row)
        except BaseException:
            with suppress(FileNotFoundError):
                path.unlink()
            raise

    def info(self, tenant_id: str, blob_id: str) -> BlobInfo:
        with self._sessions() as session:
            row = session.get(Blob, blob_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound("no such blob")
            return _info(row)

    def open(self, tenant_id: str, blob_id: str) -> Iterator[bytes]:
        """Verified plaintext segments; another tenant's blob id is NotFound.

        The iterator raises IntegrityError at the first damaged segment, possibly after it
        yielded earlier (verified) segments; see the module docstring.
        """
        info = self.info(tenant_id, blob_id)
        return self._read(self.path(tenant_id, blob_id), tenant_id, info.kind, blob_id)

    def _read(self, path: Path, tenant_id: str, kind: str, blob_id: str) -> Iterator[bytes]:
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise IntegrityError("blob file is missing") from None
        with fh:
            yield from decrypt_stream(fh, self._key_for(tenant_id), _identity(tenant_id, kind, blob_id))

    def read_bytes(self, tenant_id: str, blob_id: str) -> bytes:
        """Whole blob in memory: for small objects only."""
        return b"".join(self.open(tenant_id, blob_id))

    def list(self, tenant_id: str) -> list[BlobInfo]:
        with self._sessions() as session:
            rows = session.scalars(select(Blob).where(Blob.tenant_id == tenant_id).order_by(Blob.created_at, Blob.id))
            return [_info(r) for r in rows]

    def delete(self, tenant_id: str, blob_id: str) -> None:
        path = self.path(tenant_id, blob_id)
        with transaction(self._sessions) as session:
            gone = session.execute(delete(Blob).where(Blob.id == blob_id, Blob.tenant_id == tenant_id))
            if not gone.rowcount:  # type: ignore[attr-defined]
                raise NotFound("no such blob")
        with suppress(FileNotFoundError):
            path.unlink()

    def reencrypt(self, tenant_id: str, blob_id: str, version: int, checkpoint: Checkpoint | None = None) -> bool:
        """Rewrite one blob under key ``version``: new file atomically over the old, then the row.

        Safe to kill anywhere: the file at the path is always complete and names its own key
        version in its header, and both versions exist until rotation ends. Returns False
        when there was nothing to do.
        """
        info = self.info(tenant_id, blob_id)
        path = self.path(tenant_id, blob_id)
        identity = _identity(tenant_id, info.kind, blob_id)
        with path.open("rb") as fh:
            on_disk = read_header(fh).key_version
        if on_disk != version:
            header = BlobHeader.new(version, self._segment_size)
            dek = self._keys.key(tenant_id, DATA_PURPOSE, version)

            def fill(out: BinaryIO) -> int:
                return encrypt_stream(self._read(path, tenant_id, info.kind, blob_id), out, header, dek, identity)

            write_atomically(path, fill, checkpoint)
            if checkpoint is not None:
                checkpoint("blob.file-swapped")
        elif info.key_version == version:
            return False
        with transaction(self._sessions) as session:
            updated = session.execute(
                update(Blob).where(Blob.id == blob_id, Blob.tenant_id == tenant_id).values(key_version=version)
            )
            if not updated.rowcount:  # type: ignore[attr-defined]
                # deleted meanwhile: do not leave the rewritten file behind
                with suppress(FileNotFoundError):
                    path.unlink()
        return True

    def file_key_versions(self, tenant_id: str) -> dict[int, int]:
        """Key versions named by every file in the tenant's directory, temp files included,
        so a write still in progress counts as a use of its version. -> {version: files}."""
        found: dict[int, int] = {}
        tenant_dir = self._dir / _check_id(tenant_id, "tenant")
        if not tenant_dir.is_dir():
            return found
        for entry in tenant_dir.iterdir():
            try:
                with entry.open("rb") as fh:
                    version = read_header(fh).key_version
            except (IntegrityError, FileNotFoundError, IsADirectoryError):
                continue
            found[version] = found.get(version, 0) + 1
        return found

    def remove_orphan_files(self, tenant_id: str, older_than: datetime) -> int:
        """Remove what a killed write leaves in the tenant's directory, if last modified before
        ``older_than``: temp files (``<blob id>.<hex>.tmp``) and blob files whose row was
        never committed. Younger ones may belong to a write still running, so a caller picks
        a cutoff well past any write's duration. Other names are left alone. -> files removed."""
        tenant_dir = self._dir / _check_id(tenant_id, "tenant")
        try:
            entries = list(tenant_dir.iterdir())
        except FileNotFoundError:
            return 0
        candidates: list[Path] = []
        for entry in entries:
            if not (_TMP.fullmatch(entry.name) or _ID.fullmatch(entry.name)):
                continue
            try:
                st = entry.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and datetime.fromtimestamp(st.st_mtime, UTC) < older_than:
                candidates.append(entry)
        if not candidates:
            return 0
        with self._sessions() as session:  # rows read after the listing: a row committed since is seen
            rows = set(session.scalars(select(Blob.id).where(Blob.tenant_id == tenant_id)))
        removed = 0
        for entry in candidates:
            if entry.name in rows:
                continue
            with suppress(FileNotFoundError):
                entry.unlink()
                removed += 1
        return removed

    def purge_tenant(self, tenant_id: str) -> int:
        """Remove a deleted tenant's files (already unreadable once its keys are destroyed)."""
        tenant_dir = self._dir / _check_id(tenant_id, "tenant")
        removed = 0
        if tenant_dir.is_dir():
            for entry in tenant_dir.iterdir():
                with suppress(FileNotFoundError):
                    entry.unlink()
                    removed += 1
            with suppress(OSError):
                tenant_dir.rmdir()
        return removed
