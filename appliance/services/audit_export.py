"""Audit export files (JSONL or CSV) and their offline verification.

An export carries everything the chain needs (ids, times, content fields, ``prev_mac``,
``mac``, key versions, the signed checkpoints inside the range) but never payloads. Verifying
it offline takes the MAC keys, which an operator exports separately into a 0600 file
(``appliance audit export-key``).

Trade-off, stated plainly: the chain is an HMAC, a symmetric MAC. Whoever holds the MAC key
can check the chain *and* could forge a new, consistent one. So the key file proves
integrity to the people the operator trusts with it (auditors), not to the public; hand it
over like the master key, out of band, and never next to the export it verifies. An export
proves what it contains is unaltered and contiguous; that nothing was cut off its end is
proven by the signed head checkpoint it ends with (exports without ``--until``) or by a
checkpoint you recorded elsewhere (``appliance audit checkpoint --json``).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from appliance.errors import InvalidInput
from appliance.services.audit import ExportSlice
from appliance.services.audit_chain import (
    ChainCheckpoint,
    ChainEntry,
    ChainVerifier,
    Problem,
    VerifyResult,
    parse_timestamp,
    timestamp,
)

FORMAT = "appliance-audit-export/1"
KEY_FORMAT = "appliance-audit-mac-keys/1"
ExportFormat = Literal["jsonl", "csv"]

CSV_COLUMNS = (
    "record",
    "id",
    "created_at",
    "tenant_id",
    "actor",
    "action",
    "object",
    "policy_version",
    "outcome",
    "latency_ms",
    "facts",
    "payload_present",
    "payload_expires_at",
    "mac_key_version",
    "prev_mac",
    "mac",
    "last_entry_id",
    "last_entry_mac",
    "entry_count",
    "signature",
    "since",
    "until",
    "format",
)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else timestamp(value)


def _header(ex: ExportSlice) -> dict[str, Any]:
    return {
        "record": "header",
        "format": FORMAT,
        "created_at": timestamp(ex.exported_at),
        "since": _ts(ex.since),
        "until": _ts(ex.until),
        "entry_count": ex.count,
    }


def _checkpoint(cp: ChainCheckpoint) -> dict[str, Any]:
    return {
        "record": "checkpoint",
        "id": cp.id,
        "created_at": timestamp(cp.created_at),
        "last_entry_id": cp.last_entry_id,
        "last_entry_mac": cp.last_entry_mac.hex(),
        "entry_count": cp.entry_count,
        "mac_key_version": cp.mac_key_version,
        "signature": cp.signature.hex(),
    }


def _entry(e: ChainEntry) -> dict[str, Any]:
    return {
        "record": "entry",
        "id": e.id,
        "created_at": timestamp(e.created_at),
        "tenant_id": e.tenant_id,
        "actor": e.actor,
        "action": e.action,
        "object": e.object,
        "policy_version": e.policy_version,
        "outcome": e.outcome,
        "latency_ms": e.latency_ms,
        "facts": e.facts,
        "payload_present": e.payload_present,
        "payload_expires_at": _ts(e.payload_expires_at),
        "mac_key_version": e.mac_key_version,
        "prev_mac": e.prev_mac.hex(),
        "mac": e.mac.hex(),
    }


def _records(ex: ExportSlice) -> Iterator[dict[str, Any]]:
    yield _header(ex)
    for cp in ex.checkpoints:
        yield _checkpoint(cp)
    for e in ex.entries:
        yield _entry(e)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_export(ex: ExportSlice, out: TextIO, fmt: ExportFormat) -> Iterator[int]:
    """Write the export; yields after each entry so a caller can drive a progress bar."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for record in _records(ex):
        if writer is not None:
            writer.writerow({k: _csv_cell(record.get(k)) for k in CSV_COLUMNS})
        else:
            out.write(json.dumps(record, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n")
        if record["record"] == "entry":
            yield int(record["id"])


def export_text(ex: ExportSlice, fmt: ExportFormat, max_entries: int) -> str:
    """The whole export as one string, for an HTTP download; a slice of more than
    ``max_entries`` entries is refused (narrow the time range, or use the CLI, which streams)."""
    if ex.count > max_entries:
        raise InvalidInput(
            f"the export would hold {ex.count} entries, more than {max_entries}; "
            "narrow the time range or run `appliance audit export` on the appliance"
        )
    out = io.StringIO()
    for _ in write_export(ex, out, fmt):
        pass
    return out.getvalue()


# -- reading ----------------------------------------------------------------------------------------


def _read_records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8", newline="") as fh:
        first = fh.readline()
        fh.seek(0)
        if first.startswith("{"):
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        raise InvalidInput(f"line {n} of the export is not JSON") from None
        else:
            for row in csv.DictReader(fh):
                yield {k: (None if v == "" else v) for k, v in row.items()}


def _int(v: Any) -> int:
    return int(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _bool(v: Any) -> bool:
    return v if isinstance(v, bool) else str(v).lower() == "true"


def _opt_time(v: Any) -> datetime | None:
    return None if v is None else parse_timestamp(str(v))


def _parse_entry(r: Mapping[str, Any]) -> ChainEntry:
    return ChainEntry(
        id=_int(r["id"]),
        created_at=parse_timestamp(str(r["created_at"])),
        tenant_id=r.get("tenant_id"),
        actor=str(r["actor"]),
        action=str(r["action"]),
        object=r.get("object"),
        policy_version=_opt_int(r.get("policy_version")),
        outcome=str(r["outcome"]),
        latency_ms=_opt_float(r.get("latency_ms")),
        facts=str(r["facts"]),
        payload_present=_bool(r.get("payload_present")),
        payload_expires_at=_opt_time(r.get("payload_expires_at")),
        mac_key_version=_int(r["mac_key_version"]),
        prev_mac=bytes.fromhex(str(r["prev_mac"])),
        mac=bytes.fromhex(str(r["mac"])),
    )


def _parse_checkpoint(r: Mapping[str, Any]) -> ChainCheckpoint:
    return ChainCheckpoint(
        id=_int(r["id"]),
        created_at=parse_timestamp(str(r["created_at"])),
        last_entry_id=_int(r["last_entry_id"]),
        last_entry_mac=bytes.fromhex(str(r["last_entry_mac"])),
        entry_count=_int(r["entry_count"]),
        mac_key_version=_int(r["mac_key_version"]),
        signature=bytes.fromhex(str(r["signature"])),
    )


@dataclass(frozen=True)
class _Scan:
    exported_at: datetime
    announced: int
    checkpoints: list[ChainCheckpoint]


def _scan(path: Path) -> _Scan:
    header: Mapping[str, Any] | None = None
    checkpoints: list[ChainCheckpoint] = []
    try:
        for r in _read_records(path):
            if r.get("record") == "header":
                header = r
            elif r.get("record") == "checkpoint":
                checkpoints.append(_parse_checkpoint(r))
        if header is None or header.get("format") != FORMAT:
            raise InvalidInput(f"not an audit export ({FORMAT})")
        return _Scan(parse_timestamp(str(header["created_at"])), _int(header["entry_count"]), checkpoints)
    except (KeyError, ValueError, TypeError):
        raise InvalidInput("the audit export is malformed") from None


def _entries(path: Path) -> Iterator[ChainEntry]:
    for r in _read_records(path):
        if r.get("record") == "entry":
            try:
                yield _parse_entry(r)
            except (KeyError, ValueError, TypeError):
                raise InvalidInput("an entry of the audit export is malformed") from None


def verify_export(path: Path, keys: Mapping[int, bytes]) -> VerifyResult:
    """Check an export file offline: every entry's MAC, every link, every checkpoint inside it,
    and that it holds as many entries as its header announces."""
    scan = _scan(path)
    result = ChainVerifier(keys.__getitem__, scan.checkpoints, now=scan.exported_at, slice_mode=True).verify(
        _entries(path)
    )
    if result.ok and result.entries_checked != scan.announced:
        return VerifyResult(
            ok=False,
            entries_checked=result.entries_checked,
            checkpoints_checked=result.checkpoints_checked,
            first_entry_id=result.first_entry_id,
            last_entry_id=result.last_entry_id,
            problem=Problem.TRUNCATED,
            detail=f"the export holds {result.entries_checked} entries but was written with {scan.announced}",
        )
    return result


# -- the MAC key file -------------------------------------------------------------------------------


def write_key_file(path: Path, keys: Mapping[int, bytes]) -> None:
    """Create ``path`` (0600, never overwriting) holding the MAC keys for offline verification."""
    body = json.dumps(
        {"format": KEY_FORMAT, "keys": {str(v): base64.b64encode(k).decode() for v, k in sorted(keys.items())}},
        indent=2,
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(body + "\n")


def read_key_file(path: Path) -> dict[int, bytes]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != KEY_FORMAT:
            raise ValueError(path)
        return {int(v): base64.b64decode(k, validate=True) for v, k in data["keys"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise InvalidInput(f"{path} is not an audit MAC key file ({KEY_FORMAT})") from None
