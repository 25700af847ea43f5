"""The plaintext inside a backup archive: a tar stream, sealed as a whole by
:mod:`appliance.crypto.archive`. Backend-neutral, so a SQLite backup restores into PostgreSQL.

Members, in this order::

    backup.json                          header: format, versions, schema revision, tables
    tables/<NN>-<table>/<NNNNNN>.jsonl   rows, a chunk at a time, tables in foreign-key order
    blobs/<tenant id>/<blob id>          blob files exactly as stored (sealed with tenant keys)
    manifest.json                        SHA-256 of every member before it, row and blob counts

A reader checks every member against the manifest and that none is missing or extra. Rows are
JSON arrays in the header's column order; bytes are ``{"b": base64}``, timestamps
``{"t": ISO 8601}``. Nothing here is plaintext tenant content: sealed columns and blob files
stay sealed with the tenant keys, and data keys stay wrapped by the master key.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, BinaryIO

from sqlalchemy import Table

from appliance.errors import IntegrityError

FORMAT = 1
HEADER = "backup.json"
MANIFEST = "manifest.json"
ROWS_PER_CHUNK = 2000
_COPY = 1 << 20
_ID = r"[A-Za-z0-9][A-Za-z0-9-]{0,63}"
_TABLE_MEMBER = re.compile(r"^tables/(\d{2,4})-([a-z_][a-z0-9_]{0,62})/(\d{6})\.jsonl$")
_BLOB_MEMBER = re.compile(rf"^blobs/({_ID})/({_ID})$")


def encode_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return value


def decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        if "b" in value:
            return base64.b64decode(value["b"], validate=True)
        if "t" in value:
            return datetime.fromisoformat(value["t"])
        raise IntegrityError("backup holds a value of an unknown type")
    return value


def table_member(index: int, table: str, chunk: int) -> str:
    return f"tables/{index:02d}-{table}/{chunk:06d}.jsonl"


def blob_member(tenant_id: str, blob_id: str) -> str:
    name = f"blobs/{tenant_id}/{blob_id}"
    if not _BLOB_MEMBER.fullmatch(name):
        raise IntegrityError("a blob row has an id the blob store never writes")
    return name


def encode_rows(rows: Sequence[Sequence[Any]]) -> bytes:
    return b"".join(json.dumps([encode_value(v) for v in row], separators=(",", ":")).encode() + b"\n" for row in rows)


def decode_rows(data: bytes, width: int) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for line in data.splitlines():
        row = json.loads(line)
        if not isinstance(row, list) or len(row) != width:
            raise IntegrityError("backup rows do not match their table's columns")
        rows.append([decode_value(v) for v in row])
    return rows


def describe_tables(tables: Sequence[Table]) -> list[dict[str, Any]]:
    return [{"name": t.name, "columns": [c.name for c in t.columns]} for t in tables]


@dataclass
class Manifest:
    """What the writer wrote; the reader rebuilds one and compares."""

    members: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    blobs: int = 0
    blob_bytes: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"members": self.members, "rows": self.rows, "blobs": self.blobs, "blob_bytes": self.blob_bytes}


class ArchiveWriter:
    """Appends members to a tar stream and keeps the manifest of what it wrote."""

    def __init__(self, out: IO[bytes]) -> None:
        self._tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closed in close()
        self.manifest = Manifest()

    def _info(self, name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o600
        return info

    def add_bytes(self, name: str, data: bytes) -> None:
        self._tar.addfile(self._info(name, len(data)), io.BytesIO(data))
        self.manifest.members[name] = hashlib.sha256(data).hexdigest()

    def add_json(self, name: str, value: Any) -> None:
        self.add_bytes(name, json.dumps(value, indent=1, sort_keys=True).encode())

    def add_rows(self, name: str, table: str, rows: Sequence[Sequence[Any]]) -> None:
        self.add_bytes(name, encode_rows(rows))
        self.manifest.rows[table] = self.manifest.rows.get(table, 0) + len(rows)

    def add_file(self, name: str, fh: BinaryIO, size: int) -> None:
        """Copy exactly ``size`` bytes of an open file (its size when it was opened)."""
        source = _HashingReader(fh)
        self._tar.addfile(self._info(name, size), source)
        self.manifest.members[name] = source.hexdigest()
        self.manifest.blobs += 1
        self.manifest.blob_bytes += size

    def close(self) -> None:
        self.add_json(MANIFEST, self.manifest.as_json())
        self._tar.close()


@dataclass(frozen=True)
class TableChunk:
    index: int
    table: str
    rows: list[list[Any]]


@dataclass(frozen=True)
class BlobMember:
    tenant_id: str
    blob_id: str
    size: int
    stream: IO[bytes]


Member = dict[str, Any] | TableChunk | BlobMember


def read_members(plain: BinaryIO) -> Iterator[Member]:
    """Yield the header (a dict), table chunks and blob members in archive order, checking each
    against the manifest at the end. A blob member's stream must be consumed before the next
    member is asked for. Raises IntegrityError on anything unexpected."""
    seen = Manifest()
    columns: dict[str, int] = {}
    header: dict[str, Any] | None = None
    try:
        with tarfile.open(fileobj=plain, mode="r|") as tar:
            for info in tar:
                if not info.isfile():
                    raise IntegrityError("backup holds an entry that is not a file")
                fh = tar.extractfile(info)
                assert fh is not None
                name = info.name
                if name == MANIFEST:
                    written = json.loads(fh.read())
                    _compare(written, seen)
                    if header is None:
                        raise IntegrityError("backup has no header")
                    # Read to the end: the sealed stream's last segment is authenticated only then.
                    while plain.read(_COPY):
                        pass
                    return
                if header is None:
                    if name != HEADER:
                        raise IntegrityError("backup does not start with its header")
                    data = fh.read()
                    seen.members[name] = hashlib.sha256(data).hexdigest()
                    header = json.loads(data)
                    if not isinstance(header, dict) or header.get("format") != FORMAT:
                        raise IntegrityError("backup format is not one this version reads")
                    columns = {t["name"]: len(t["columns"]) for t in header["tables"]}
                    yield header
                    continue
                if m := _TABLE_MEMBER.fullmatch(name):
                    table = m.group(2)
                    if table not in columns:
                        raise IntegrityError("backup holds rows of a table its header does not list")
                    data = fh.read()
                    seen.members[name] = hashlib.sha256(data).hexdigest()
                    rows = decode_rows(data, columns[table])
                    seen.rows[table] = seen.rows.get(table, 0) + len(rows)
                    yield TableChunk(int(m.group(1)), table, rows)
                elif m := _BLOB_MEMBER.fullmatch(name):
                    hashing = _HashingReader(fh)
                    yield BlobMember(m.group(1), m.group(2), info.size, hashing)  # type: ignore[arg-type]
                    while hashing.read(_COPY):  # whatever the consumer left unread
                        pass
                    seen.members[name] = hashing.hexdigest()
                    seen.blobs += 1
                    seen.blob_bytes += info.size
                else:
                    raise IntegrityError("backup holds an unexpected entry")
    except tarfile.TarError:
        raise IntegrityError("backup archive is damaged") from None
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("backup archive is damaged") from None
    raise IntegrityError("backup archive is incomplete (no manifest)")


def _compare(written: Any, seen: Manifest) -> None:
    if not isinstance(written, dict):
        raise IntegrityError("backup manifest is damaged")
    if written.get("members") != seen.members:
        raise IntegrityError("backup members do not match its manifest")
    if written.get("rows") != seen.rows or written.get("blobs") != seen.blobs:
        raise IntegrityError("backup counts do not match its manifest")


class _HashingReader(io.RawIOBase):
    def __init__(self, fh: IO[bytes]) -> None:
        super().__init__()
        self._fh = fh
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._fh.read(len(buffer))
        self._digest.update(data)
        buffer[: len(data)] = data
        return len(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
