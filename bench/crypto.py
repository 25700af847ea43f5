"""Encryption-at-rest throughput: blob store write/read against the raw AES-GCM ceiling, and
the cost of sealing one database record.

    .venv/bin/python bench/crypto.py [--size-mib 1024] [--dir PATH]

The stream is generated (one random segment repeated), never held in memory. Write time
includes fsync and the atomic rename; read time includes verification of every segment.
``--dir`` should sit on the disk that will hold the blob directory (default: a temp dir).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.config import Settings
from appliance.crypto.blobs import (
    DEFAULT_SEGMENT_SIZE,
    TAG_BYTES,
    BlobHeader,
    BlobStore,
    encrypt_stream,
)
from appliance.crypto.keyring import MasterKeyring, new_key
from appliance.crypto.records import TenantCipher
from appliance.db import migrate
from appliance.services.container import build_services
from appliance.services.principal import Principal

MIB = 1 << 20


def _stream(total: int, segment: bytes) -> Iterator[bytes]:
    left = total
    while left > 0:
        piece = segment if left >= len(segment) else segment[:left]
        left -= len(piece)
        yield piece


def _ceilings(size: int, segment: int) -> tuple[float, float]:
    """The AESGCM calls the blob store makes (encrypt_into on write, decrypt on read), in a tight
    loop over the same segment size: (encrypt MB/s, decrypt MB/s)."""
    from appliance.crypto.blobs import AESGCM  # the crypto package is the one place that imports it

    aead = AESGCM(new_key())
    data = os.urandom(segment)
    out = bytearray(segment + TAG_BYTES)
    nonce = os.urandom(12)
    n = size // segment
    start = time.perf_counter()
    for _ in range(n):
        aead.encrypt_into(nonce, data, b"aad", out)
    enc = n * segment / (time.perf_counter() - start) / 1e6
    sealed = memoryview(out)
    start = time.perf_counter()
    for _ in range(n):
        aead.decrypt(nonce, sealed, b"aad")
    dec = n * segment / (time.perf_counter() - start) / 1e6
    return enc, dec


def _disk_ceiling(root: Path, size: int, segment: bytes) -> float:
    """Plain (unencrypted) write + fsync of the same bytes to the same disk, MB/s."""
    path = root / "plain.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    start = time.perf_counter()
    with os.fdopen(fd, "wb", buffering=0) as fh:
        for piece in _stream(size, segment):
            fh.write(piece)
        os.fsync(fh.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return size / elapsed / 1e6


def _pipeline(size: int, segment: bytes) -> float:
    """The blob store's encrypting writer into /dev/null: its CPU cost without the disk, MB/s."""
    header = BlobHeader.new(1, len(segment))
    start = time.perf_counter()
    with open(os.devnull, "wb", buffering=0) as sink:
        encrypt_stream(_stream(size, segment), sink, header, new_key(), b"bench")
    return size / (time.perf_counter() - start) / 1e6


def _openssl() -> str | None:
    exe = shutil.which("openssl")
    if not exe:
        return None
    try:
        proc = subprocess.run(
            [exe, "speed", "-evp", "aes-256-gcm", "-bytes", "1048576", "-seconds", "2"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    line = next((ln for ln in proc.stdout.splitlines() if ln.lower().startswith("aes-256-gcm")), None)
    if not line:
        return None
    match = re.search(r"([\d.]+)k\s*$", line)
    return f"{float(match.group(1)) * 1000 / 1e6:.0f} MB/s" if match else line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    size = args.size_mib * MIB

    root = Path(tempfile.mkdtemp(prefix="appliance-bench-", dir=args.dir))
    try:
        key = new_key()
        settings = Settings(
            data_dir=root,
            dev_mode=True,
            keys={"dev_master_key": base64.b64encode(key).decode()},  # type: ignore[arg-type]
        )
        services = build_services(settings, keyring=MasterKeyring(key))
        migrate.upgrade(services.engine)
        tenant = services.tenants.create(Principal.local_operator(), "bench").id
        store = BlobStore(settings.blob_dir, services.data_keys, services.sessions)
        segment = os.urandom(DEFAULT_SEGMENT_SIZE)

        start = time.perf_counter()
        info = store.put(tenant, "bench", _stream(size, segment))
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        read = sum(len(chunk) for chunk in store.open(tenant, info.id))
        read_s = time.perf_counter() - start
        assert read == size == info.size

        enc_ceiling, dec_ceiling = _ceilings(min(size, 512 * MIB), DEFAULT_SEGMENT_SIZE)
        pipeline = _pipeline(min(size, 512 * MIB), segment)
        disk = _disk_ceiling(root, size, segment)
        write_mbs, read_mbs = size / write_s / 1e6, size / read_s / 1e6

        cipher = TenantCipher(services.data_keys)
        text = b"Jane Doe, +44 20 7946 0958, jane@example.com"
        cipher.seal(tenant, "bench.record", "0", text)  # warm the key cache and nonce budget
        start = time.perf_counter()
        for i in range(args.records):
            row = str(i)
            cipher.open(tenant, "bench.record", row, cipher.seal(tenant, "bench.record", row, text))
        record_us = (time.perf_counter() - start) / args.records * 1e6
        services.close()

        print(f"blob stream          {args.size_mib} MiB, {DEFAULT_SEGMENT_SIZE // MIB} MiB segments, dir {root}")
        print(f"blob write           {write_mbs:7.0f} MB/s  ({write_s:.2f} s, incl. fsync + atomic rename)")
        print(f"blob read            {read_mbs:7.0f} MB/s  ({read_s:.2f} s, every segment verified)")
        print(f"blob encrypt path    {pipeline:7.0f} MB/s  (same writer into /dev/null: CPU cost without disk)")
        print(f"AESGCM ceiling enc   {enc_ceiling:7.0f} MB/s  (encrypt_into, same segment size, tight loop)")
        print(f"AESGCM ceiling dec   {dec_ceiling:7.0f} MB/s  (decrypt, same segment size, tight loop)")
        ssl = _openssl()
        print(f"openssl speed        {ssl or 'n/a'}  (aes-256-gcm, 1 MiB blocks, one core)")
        print(f"plain disk write     {disk:7.0f} MB/s  (same bytes unencrypted, write + fsync)")
        print(f"read / dec ceiling   {read_mbs / dec_ceiling:7.0%}   (target >= 70%)")
        print(f"encrypt / enc ceil.  {pipeline / enc_ceiling:7.0%}   (target >= 70%)")
        print(f"write / plain disk   {write_mbs / disk:7.0%}   (end to end the disk, not the cipher, is the limit)")
        print(f"record seal+open     {record_us:7.1f} us per record ({len(text)} B, TenantCipher, n={args.records})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
