"""The streaming blob format on its own (no database): round trips at every size around a
segment boundary, constant memory, and each kind of damage caught before plaintext escapes."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from appliance.crypto.blobs import (
    HEADER_BYTES,
    MIN_SEGMENT_SIZE,
    TAG_BYTES,
    BlobHeader,
    decrypt_stream,
    encrypt_stream,
)
from appliance.crypto.keyring import new_key
from appliance.errors import IntegrityError, KeyUnavailable

SEG = MIN_SEGMENT_SIZE
KEY = new_key()
IDENT = b"tenant-a/dataset/blob-1"


def _encrypt(data: bytes, ident: bytes = IDENT, key: bytes = KEY, version: int = 1) -> bytes:
    out = io.BytesIO()
    encrypt_stream(data, out, BlobHeader.new(version, SEG), key, ident)
    return out.getvalue()


def _decrypt(raw: bytes, ident: bytes = IDENT, key: bytes = KEY) -> bytes:
    return b"".join(decrypt_stream(io.BytesIO(raw), lambda _v: key, ident))


@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 17])
def test_round_trip_at_every_size_around_segment_boundaries(size: int) -> None:
    data = os.urandom(size)
    raw = _encrypt(data)
    segments = max(1, -(-size // SEG))
    assert len(raw) == HEADER_BYTES + size + segments * TAG_BYTES
    assert _decrypt(raw) == data


@pytest.mark.parametrize("chunk", [1, 7, SEG - 3, SEG, SEG * 2 + 5])
def test_chunking_of_the_input_does_not_change_the_plaintext(chunk: int) -> None:
    data = os.urandom(3 * SEG + 100)
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    out = io.BytesIO()
    assert encrypt_stream(iter(pieces), out, BlobHeader.new(1, SEG), KEY, IDENT) == len(data)
    assert _decrypt(out.getvalue()) == data
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, BlobHeader.new(1, SEG), KEY, IDENT)
    assert _decrypt(out.getvalue()) == data


def _segments_of(raw: bytes) -> list[bytes]:
    body = raw[HEADER_BYTES:]
    step = SEG + TAG_BYTES
    return [body[i : i + step] for i in range(0, len(body), step)]


def _tampered(raw: bytes, how: str) -> bytes:
    head, segs = raw[:HEADER_BYTES], _segments_of(raw)
    if how == "bit-flip-body":
        b = bytearray(raw)
        b[HEADER_BYTES + SEG + 5] ^= 0x01
        return bytes(b)
    if how == "bit-flip-header":
        b = bytearray(raw)
        b[10] ^= 0x80  # segment size / salt area
        return bytes(b)
    if how == "bit-flip-tag":
        b = bytearray(raw)
        b[-1] ^= 0x01
        return bytes(b)
    if how == "truncated-at-segment-boundary":
        return head + b"".join(segs[:-1])
    if how == "truncated-mid-segment":
        return raw[:-7]
    if how == "header-only":
        return head
    if how == "reordered":
        return head + segs[1] + segs[0] + b"".join(segs[2:])
    if how == "segment-duplicated":
        return head + segs[0] + segs[0] + b"".join(segs[1:])
    if how == "appended-garbage":
        return raw + os.urandom(TAG_BYTES + 3)
    if how == "appended-copy-of-last":
        return raw + segs[-1]
    if how == "segment-dropped":
        return head + b"".join(segs[1:])
    raise AssertionError(how)


DAMAGE = [
    "bit-flip-body",
    "bit-flip-header",
    "bit-flip-tag",
    "truncated-at-segment-boundary",
    "truncated-mid-segment",
    "header-only",
    "reordered",
    "segment-duplicated",
    "appended-garbage",
    "appended-copy-of-last",
    "segment-dropped",
]


@pytest.mark.parametrize("how", DAMAGE)
def test_when_blob_file_is_damaged_then_reading_fails_with_integrity_error(how: str) -> None:
    data = os.urandom(3 * SEG + 11)
    with pytest.raises(IntegrityError):
        _decrypt(_tampered(_encrypt(data), how))


def test_damaged_segment_releases_no_plaintext_of_itself() -> None:
    data = bytes(range(256)) * (3 * SEG // 256)
    raw = bytearray(_encrypt(data))
    raw[HEADER_BYTES + (SEG + TAG_BYTES) + 3] ^= 0x01  # inside the second segment
    got: list[bytes] = []
    with pytest.raises(IntegrityError):
        got.extend(decrypt_stream(io.BytesIO(bytes(raw)), lambda _v: KEY, IDENT))
    assert got == [data[:SEG]]  # the first, verified segment only


@pytest.mark.parametrize("other", [b"tenant-b/dataset/blob-1", b"tenant-a/dataset/blob-2", b"tenant-a/model/blob-1"])
def test_when_file_is_moved_to_another_blob_or_tenant_then_it_fails(other: bytes) -> None:
    with pytest.raises(IntegrityError):
        _decrypt(_encrypt(b"x" * 100), ident=other)


def test_wrong_key_fails_and_missing_key_propagates() -> None:
    raw = _encrypt(b"payload")
    with pytest.raises(IntegrityError):
        _decrypt(raw, key=new_key())

    def gone(_v: int) -> bytes:
        raise KeyUnavailable("shredded")

    with pytest.raises(KeyUnavailable):
        b"".join(decrypt_stream(io.BytesIO(raw), gone, IDENT))


def test_huge_segment_size_in_a_forged_header_is_refused_before_allocating() -> None:
    raw = bytearray(_encrypt(b"abc"))
    raw[8:12] = (1 << 30).to_bytes(4, "big")
    with pytest.raises(IntegrityError):
        _decrypt(bytes(raw))


def test_writer_streams_without_holding_the_input() -> None:
    produced = 0

    def source() -> Iterator[bytes]:
        nonlocal produced
        for _ in range(64):
            produced += SEG
            yield b"\0" * SEG

    class CountingSink(io.RawIOBase):
        def __init__(self) -> None:
            self.written = 0

        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            n = len(memoryview(b))  # type: ignore[arg-type]
            self.written += n
            return n

    sink = CountingSink()
    assert encrypt_stream(source(), sink, BlobHeader.new(1, SEG), KEY, IDENT) == 64 * SEG  # type: ignore[arg-type]
    assert sink.written == HEADER_BYTES + 64 * (SEG + TAG_BYTES)
