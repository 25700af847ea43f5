"""Sealed archive files (backups): one stream in the blob format of :mod:`appliance.crypto.blobs`
(segmented AES-256-GCM, truncation and reordering detected) under a key of its own.

File layout::

    prefix = b"APLBAK1\\n" | kek_id (16 ASCII hex) | archive_id (16 random bytes)
    stream = blob header | segments          (see appliance.crypto.blobs)

The archive key is HKDF-SHA256 of the master key named by ``kek_id`` with the archive id as
salt, so an archive opens with the master key that was current when it was written, whether
that key is current or only listed among the previous keys now. The whole prefix is the
associated data of every segment: an archive id or key id edited in place fails to open.
Every failure is the same :class:`IntegrityError`; a missing master key is KeyUnavailable.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from appliance.crypto.aead import context
from appliance.crypto.blobs import DEFAULT_SEGMENT_SIZE, TAG_BYTES, BlobHeader, _Cipher, decrypt_stream
from appliance.crypto.keyring import MasterKeyring
from appliance.errors import IntegrityError

MAGIC = b"APLBAK1\n"
_KEK_ID = 16
_ARCHIVE_ID = 16
PREFIX_BYTES = len(MAGIC) + _KEK_ID + _ARCHIVE_ID
_KEY_VERSION = 1  # the archive key is not versioned; the header still names one


@dataclass(frozen=True)
class ArchivePrefix:
    kek_id: str
    archive_id: bytes

    @property
    def raw(self) -> bytes:
        return MAGIC + self.kek_id.encode("ascii") + self.archive_id

    @classmethod
    def parse(cls, raw: bytes) -> ArchivePrefix:
        if len(raw) != PREFIX_BYTES or not raw.startswith(MAGIC):
            raise IntegrityError("not an appliance backup, or its header is damaged")
        kek = raw[len(MAGIC) : len(MAGIC) + _KEK_ID]
        try:
            kek_id = kek.decode("ascii")
            int(kek_id, 16)
        except ValueError:
            raise IntegrityError("not an appliance backup, or its header is damaged") from None
        return cls(kek_id, raw[len(MAGIC) + _KEK_ID :])


def _archive_key(keyring: MasterKeyring, prefix: ArchivePrefix) -> bytes:
    kek = keyring.kek(prefix.kek_id)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=prefix.archive_id, info=b"appliance/backup/v1")
    return hkdf.derive(kek)


def _identity(prefix: ArchivePrefix) -> bytes:
    return context("backup", prefix.raw.hex())


def read_prefix(fh: BinaryIO) -> ArchivePrefix:
    """The unencrypted prefix: which master key the archive needs (readable without any key)."""
    return ArchivePrefix.parse(fh.read(PREFIX_BYTES))


class SealedWriter(io.RawIOBase):
    """A write-only file object that seals what is written into ``out``; ``close()`` writes
    the last segment (an archive not closed is truncated and fails to open)."""

    def __init__(self, out: BinaryIO, keyring: MasterKeyring, *, segment_size: int = DEFAULT_SEGMENT_SIZE) -> None:
        super().__init__()
        self._out = out
        prefix = ArchivePrefix(keyring.current_id, secrets.token_bytes(_ARCHIVE_ID))
        header = BlobHeader.new(_KEY_VERSION, segment_size)
        self._cipher = _Cipher(_archive_key(keyring, prefix), header, _identity(prefix))
        self._size = segment_size
        self._buf = bytearray()
        self._index = 0
        self.prefix = prefix
        out.write(prefix.raw)
        out.write(header.raw)

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed archive")
        self._buf += data
        # Keep at least one byte back: only close() knows which segment is the last.
        while len(self._buf) > self._size:
            self._emit(bytes(self._buf[: self._size]), last=False)
            del self._buf[: self._size]
        return len(data)

    def _emit(self, plaintext: bytes, *, last: bool) -> None:
        nonce = self._cipher.nonce(self._index, last)
        self._out.write(self._cipher.aead.encrypt(nonce, plaintext, self._cipher.aad))
        self._index += 1

    def close(self) -> None:
        if not self.closed:
            self._emit(bytes(self._buf), last=True)
            self._buf.clear()
        super().close()


class _SegmentReader(io.RawIOBase):
    def __init__(self, segments: Iterator[bytes]) -> None:
        super().__init__()
        self._segments = segments
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            segment = next(self._segments, None)
            if segment is None:
                return 0
            self._pending = memoryview(segment)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def open_archive(fh: BinaryIO, keyring: MasterKeyring) -> tuple[ArchivePrefix, BinaryIO]:
    """A readable file object of the verified plaintext. Reading raises IntegrityError at the
    first damaged or missing segment, after earlier verified bytes: consumers stage what they
    read and act only once the stream ended cleanly."""
    prefix = read_prefix(fh)
    key = _archive_key(keyring, prefix)
    segments = decrypt_stream(fh, lambda _version: key, _identity(prefix))
    return prefix, io.BufferedReader(_SegmentReader(segments), buffer_size=1 << 20)


__all__ = ["PREFIX_BYTES", "TAG_BYTES", "ArchivePrefix", "SealedWriter", "open_archive", "read_prefix"]
