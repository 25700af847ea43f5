"""Tenant-owned model files, sealed at rest with the tenant's data key.

A tenant's model may be trained on, or be, that tenant's data, so its files never sit in
the clear. Sealing turns a Hugging Face-format directory into ordinary tenant blobs
(:class:`appliance.crypto.blobs.BlobStore`, streaming AES-256-GCM under the tenant's DEK):
one ``model-file`` blob per file plus one ``model-manifest`` blob listing each file's
relative path, size, SHA-256 of its plaintext and blob id. The registry records the model
as ``sealed:<manifest blob id>``. Because the pieces are ordinary blobs, key rotation
re-encrypts them, tenant deletion shreds them, and another tenant's id never opens them.

Loading writes no plaintext to any filesystem: :meth:`SealedModels.open` decrypts each file
into an anonymous memory file (``memfd_create``, Linux), checks it against the manifest,
seals it read-only, and yields a private temporary directory that holds only symlinks to
``/proc/self/fd/<n>``. transformers, sentence-transformers, tokenizers and safetensors
follow those links like ordinary files (safetensors even memory-maps them). The directory
and the descriptors go away when the block ends; weights the loader mapped stay valid for
as long as the model lives, and their pages can still reach swap like any process memory.

Sealing is all or nothing: if any file fails, every blob written so far is deleted. A
process killed mid-way can leave unreferenced blobs; they are sealed, counted by key
rotation and removed with the tenant, and :meth:`SealedModels.sweep` deletes them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from appliance.crypto.blobs import BlobStore
from appliance.db.base import utcnow
from appliance.errors import IntegrityError, InvalidInput, NotFound, NotSupportedYet

SEALED_SCHEME = "sealed:"
"""Registry sources of sealed models: ``sealed:<manifest blob id>``."""
MANIFEST_KIND = "model-manifest"
FILE_KIND = "model-file"
MANIFEST_FORMAT = 1
MAX_FILES = 10_000
_CHUNK = 1 << 20
_SEALS = getattr(fcntl, "F_SEAL_WRITE", 8) | getattr(fcntl, "F_SEAL_GROW", 4) | getattr(fcntl, "F_SEAL_SHRINK", 2)


def is_sealed(source: str) -> bool:
    return source.startswith(SEALED_SCHEME)


@dataclass(frozen=True)
class SealedFile:
    path: str
    """Relative, ``/``-separated."""
    size: int
    sha256: str
    blob: str


@dataclass(frozen=True)
class Bundle:
    manifest: str
    files: tuple[SealedFile, ...]

    @property
    def blob_ids(self) -> list[str]:
        return [self.manifest, *(f.blob for f in self.files)]


def _manifest_id(source: str) -> str:
    if not is_sealed(source):
        raise InvalidInput("not a sealed model source")
    return source[len(SEALED_SCHEME) :]


def _relative(path: str) -> PurePosixPath:
    """A manifest path as a safe relative path (the manifest is authenticated; this is depth)."""
    rel = PurePosixPath(path)
    if not path or rel.is_absolute() or any(p in ("", ".", "..") for p in path.split("/")) or "\0" in path:
        raise IntegrityError("sealed model manifest is malformed")
    return rel


def _files_of(source: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``source`` (file symlinks followed, as Hugging Face caches use them)."""
    found: list[tuple[str, Path]] = []
    for top, dirs, files in os.walk(source, followlinks=False):
        here = Path(top)
        for d in dirs:
            if (here / d).is_symlink():
                raise InvalidInput(f"{source} holds a symlinked directory ({d}); copy it in as a real directory")
        for name in files:
            path = here / name
            if not path.is_file():
                raise InvalidInput(f"{path.relative_to(source)} in {source} is not a regular readable file")
            found.append((path.relative_to(source).as_posix(), path))
    if not found:
        raise InvalidInput(f"{source} holds no files")
    if len(found) > MAX_FILES:
        raise InvalidInput(f"{source} holds more than {MAX_FILES} files")
    return sorted(found)


def _read(path: Path, digest: Any, rel: str) -> Iterator[bytes]:
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                yield chunk
    except OSError as exc:
        raise InvalidInput(f"cannot read {rel} from the model directory: {exc.strerror}") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class SealedModels:
    """Seals, opens, deletes and sweeps tenant-owned model files in one blob store."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    def seal(self, tenant_id: str, source: Path) -> str:
        """Encrypt every file under ``source`` for ``tenant_id``; returns the registry source.

        Nothing is left behind on failure (unless the process dies, see :meth:`sweep`).
        """
        if not source.is_dir():
            raise InvalidInput(f"{source} is not a directory")
        written: list[str] = []
        try:
            entries = []
            for rel, path in _files_of(source):
                digest = hashlib.sha256()
                info = self._blobs.put(tenant_id, FILE_KIND, _read(path, digest, rel))
                written.append(info.id)
                entries.append({"path": rel, "size": info.size, "sha256": digest.hexdigest(), "blob": info.id})
            manifest = json.dumps({"format": MANIFEST_FORMAT, "files": entries}, sort_keys=True).encode()
            written.append(self._blobs.put(tenant_id, MANIFEST_KIND, manifest).id)
        except BaseException:
            self._delete_blobs(tenant_id, written)
            raise
        return SEALED_SCHEME + written[-1]

    def bundle(self, tenant_id: str, source: str) -> Bundle:
        """The verified manifest; another tenant's source is NotFound."""
        manifest_id = _manifest_id(source)
        if self._blobs.info(tenant_id, manifest_id).kind != MANIFEST_KIND:
            raise NotFound("no such sealed model")
        try:
            raw = json.loads(self._blobs.read_bytes(tenant_id, manifest_id))
            if raw.get("format") != MANIFEST_FORMAT:
                raise IntegrityError("sealed model manifest is malformed")
            files = tuple(
                SealedFile(str(f["path"]), int(f["size"]), str(f["sha256"]), str(f["blob"])) for f in raw["files"]
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError("sealed model manifest is malformed") from None
        for f in files:
            _relative(f.path)
        return Bundle(manifest_id, files)

    @contextlib.contextmanager
    def open(self, tenant_id: str, source: str) -> Iterator[Path]:
        """A directory of symlinks to verified, read-only memory files, for the block's duration.

        Raises IntegrityError naming the file when any file fails authentication or does not
        match the manifest; nothing of it stays in memory or on disk then.
        """
        if not hasattr(os, "memfd_create"):
            raise NotSupportedYet("sealed models load through memfd_create, which needs Linux")
        bundle = self.bundle(tenant_id, source)
        fds: list[int] = []
        scratch = Path(tempfile.mkdtemp(prefix="appliance-sealed-"))  # 0700; holds symlinks only
        try:
            for f in bundle.files:
                fd = os.memfd_create(PurePosixPath(f.path).name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
                fds.append(fd)
                self._fill(fd, tenant_id, f)
                link = scratch / _relative(f.path)
                link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                link.symlink_to(f"/proc/self/fd/{fd}")
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # before the fds close, so no link names a reused fd
            for fd in fds:
                os.close(fd)

    def _fill(self, fd: int, tenant_id: str, f: SealedFile) -> None:
        digest = hashlib.sha256()
        size = 0
        try:
            for segment in self._blobs.open(tenant_id, f.blob):
                digest.update(segment)
                size += len(segment)
                _write_all(fd, segment)
        except (IntegrityError, NotFound):
            raise IntegrityError(
                f"sealed model file {f.path!r} failed verification; the model was not loaded"
            ) from None
        if size != f.size or digest.hexdigest() != f.sha256:
            raise IntegrityError(f"sealed model file {f.path!r} does not match its manifest; the model was not loaded")
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)  # what was verified is what the loader reads
        os.lseek(fd, 0, os.SEEK_SET)

    def delete(self, tenant_id: str, source: str) -> int:
        """Delete a sealed model's blobs (the manifest last); returns how many went."""
        manifest_id = _manifest_id(source)
        try:
            ids = self.bundle(tenant_id, source).blob_ids
        except IntegrityError:
            ids = [manifest_id]  # unreadable manifest: its files are left for :meth:`sweep`
        return self._delete_blobs(tenant_id, [*ids[1:], ids[0]])

    def sweep(self, tenant_id: str, keep: set[str], *, older_than: timedelta = timedelta(hours=1)) -> int:
        """Delete model blobs that no kept source references and that are older than
        ``older_than`` (younger ones may belong to a seal still running elsewhere)."""
        blobs = [b for b in self._blobs.list(tenant_id) if b.kind in (FILE_KIND, MANIFEST_KIND)]
        referenced: set[str] = set()
        for source in keep & {SEALED_SCHEME + b.id for b in blobs if b.kind == MANIFEST_KIND}:
            try:
                referenced.update(self.bundle(tenant_id, source).blob_ids)
            except IntegrityError:
                return 0  # cannot tell which files that model needs: delete nothing
        cutoff = utcnow() - older_than
        stale = [b.id for b in blobs if b.id not in referenced and _aware(b.created_at) < cutoff]
        return self._delete_blobs(tenant_id, stale)

    def _delete_blobs(self, tenant_id: str, ids: list[str]) -> int:
        removed = 0
        for blob_id in ids:
            with contextlib.suppress(NotFound):
                self._blobs.delete(tenant_id, blob_id)
                removed += 1
        return removed


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=utcnow().tzinfo)
