"""The audit chain's rules, free of the database: canonical encoding, entry MACs, tombstones,
checkpoint signatures, and the verifier that walks a chain and names the first bad entry.

The live check (rows from the database) and the offline check (rows from an export file)
both run :class:`ChainVerifier`, so they judge a chain by exactly the same rules.

Shape of one entry's MAC (HMAC-SHA256 under the system "audit-mac" data key)::

    content = SHA-256(canon(actor, action, object, policy_version, outcome, latency_ms,
                            facts, payload_expires_at))
    mac     = HMAC(key, canon(id, created_at, tenant_id, mac_key_version, prev_mac, content))

``id`` is inside the MAC, so swapping two rows' contents breaks both; ``prev_mac`` links each
entry to the one before, so deleting or reordering breaks the link. The sealed payload bytes
are not in the MAC (they are deleted when their retention ends); the AEAD that seals them
binds them to their entry id instead, and ``payload_expires_at`` is in the MAC, so a payload
removed before its time is reported.

Retention deletes an entry's content by turning it into a *tombstone*: the content columns
are cleared and ``facts`` keeps only the content digest and a seal (an HMAC over id, time,
tenant and digest). The chain still verifies through it; a tombstone forged without the key
does not. A leading run of tombstones may then be deleted outright, behind a signed *anchor*
(a checkpoint signed under a separate label) that says where the chain now starts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from appliance.errors import ApplianceError

GENESIS = b"\x00" * 32
MAC_PURPOSE = "audit-mac"
TOMBSTONE_ACTION = "audit.purged"
TOMBSTONE_ACTOR = "retention"
TOMBSTONE_OUTCOME = "purged"

_CONTENT = "appliance-audit-content/1"
_ENTRY = "appliance-audit-entry/1"
_TOMBSTONE = "appliance-audit-tombstone/1"


class CheckpointKind(StrEnum):
    CHECKPOINT = "checkpoint"  # "the chain head was this entry, at this position"
    ANCHOR = "anchor"  # "everything up to this entry was purged by retention; the chain resumes after it"


class Problem(StrEnum):
    EDITED = "edited"
    DELETED_OR_REORDERED = "deleted-or-reordered"
    TRUNCATED = "truncated"
    CHECKPOINT_FORGED = "checkpoint-forged"
    CHECKPOINT_MISMATCH = "checkpoint-mismatch"
    PAYLOAD_REMOVED = "payload-removed-early"
    KEY_MISSING = "key-missing"


@dataclass(frozen=True)
class ChainEntry:
    """The chained fields of one entry, as stored or as exported (``facts`` is the exact text)."""

    id: int
    created_at: datetime
    tenant_id: str | None
    actor: str
    action: str
    object: str | None
    policy_version: int | None
    outcome: str
    latency_ms: float | None
    facts: str
    payload_present: bool
    payload_expires_at: datetime | None
    mac_key_version: int
    prev_mac: bytes
    mac: bytes


@dataclass(frozen=True)
class ChainCheckpoint:
    id: int
    created_at: datetime
    last_entry_id: int
    last_entry_mac: bytes
    entry_count: int  # position of ``last_entry_id`` in the chain since its very first entry
    mac_key_version: int
    signature: bytes


@dataclass(frozen=True)
class VerifyResult:
    """What a verification found. ``entry_id`` names the first bad entry; for truncation it is
    the entry a checkpoint vouches for that is missing (the trail ends at ``last_entry_id``)."""

    ok: bool
    entries_checked: int
    checkpoints_checked: int
    first_entry_id: int | None
    last_entry_id: int | None
    problem: Problem | None = None
    entry_id: int | None = None
    checkpoint_id: int | None = None
    detail: str = "the chain is intact"


def timestamp(value: datetime) -> str:
    """The one text form of a time inside MACs and exports: UTC, microseconds, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _canon(*parts: object) -> bytes:
    return json.dumps(list(parts), separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def content_digest(e: ChainEntry) -> bytes:
    expires = timestamp(e.payload_expires_at) if e.payload_expires_at is not None else None
    return hashlib.sha256(
        _canon(_CONTENT, e.actor, e.action, e.object, e.policy_version, e.outcome, e.latency_ms, e.facts, expires)
    ).digest()


def entry_mac(key: bytes, e: ChainEntry, digest: bytes) -> bytes:
    return _hmac(
        key,
        _canon(_ENTRY, e.id, timestamp(e.created_at), e.tenant_id, e.mac_key_version, e.prev_mac.hex(), digest.hex()),
    )


def tombstone_seal(key: bytes, e: ChainEntry, digest: bytes) -> bytes:
    return _hmac(key, _canon(_TOMBSTONE, e.id, timestamp(e.created_at), e.tenant_id, digest.hex()))


def tombstone_facts(key: bytes, e: ChainEntry) -> str:
    """The ``facts`` text that replaces an entry's content when retention purges it."""
    digest = content_digest(e)
    return json.dumps({"content_digest": digest.hex(), "seal": tombstone_seal(key, e, digest).hex()}, sort_keys=True)


def chained_digest(key: bytes, e: ChainEntry) -> bytes | None:
    """The content digest the entry's MAC covers, or None for a tombstone with a bad seal."""
    if e.action != TOMBSTONE_ACTION:
        return content_digest(e)
    try:
        facts = json.loads(e.facts)
        digest = bytes.fromhex(facts["content_digest"])
        seal = bytes.fromhex(facts["seal"])
    except (ValueError, KeyError, TypeError):
        return None
    if len(digest) != 32 or not hmac.compare_digest(tombstone_seal(key, e, digest), seal):
        return None
    return digest


def entry_is_valid(key: bytes, e: ChainEntry) -> bool:
    """The entry's own MAC holds (content, id, time, tenant and link are as written)."""
    digest = chained_digest(key, e)
    return digest is not None and hmac.compare_digest(entry_mac(key, e, digest), e.mac)


def checkpoint_signature(key: bytes, kind: CheckpointKind, cp: ChainCheckpoint) -> bytes:
    return _hmac(
        key,
        _canon(
            f"appliance-audit-{kind.value}/1",
            cp.last_entry_id,
            cp.last_entry_mac.hex(),
            cp.entry_count,
            cp.mac_key_version,
            timestamp(cp.created_at),
        ),
    )


def checkpoint_kind(key: bytes, cp: ChainCheckpoint) -> CheckpointKind | None:
    """Which label the signature was made under; None if it was made without the key."""
    for kind in CheckpointKind:
        if hmac.compare_digest(checkpoint_signature(key, kind, cp), cp.signature):
            return kind
    return None


class _Stop(Exception):
    def __init__(
        self, problem: Problem, detail: str, entry_id: int | None = None, checkpoint_id: int | None = None
    ) -> None:
        super().__init__(detail)
        self.problem, self.detail, self.entry_id, self.checkpoint_id = problem, detail, entry_id, checkpoint_id


class ChainVerifier:
    """Walks entries in id order and stops at the first problem.

    ``slice_mode`` is for exports of a time range: the first entry's link is taken as given
    (its predecessor is not in the file) and only checkpoints inside the range are checked.
    Otherwise the chain must start at the beginning or right after the latest signed anchor.
    """

    def __init__(
        self,
        key_for: Callable[[int], bytes],
        checkpoints: Sequence[ChainCheckpoint],
        *,
        now: datetime,
        slice_mode: bool = False,
    ) -> None:
        self._key_for = key_for
        self._keys: dict[int, bytes] = {}
        self._checkpoints = sorted(checkpoints, key=lambda c: (c.last_entry_id, c.id))
        self._now = now
        self._slice = slice_mode

    def _key(self, version: int, *, entry_id: int | None = None, checkpoint_id: int | None = None) -> bytes:
        if version not in self._keys:
            try:
                self._keys[version] = self._key_for(version)
            except (ApplianceError, KeyError):
                raise _Stop(
                    Problem.KEY_MISSING,
                    f"the audit MAC key version {version} is not available",
                    entry_id,
                    checkpoint_id,
                ) from None
        return self._keys[version]

    def verify(self, entries: Iterable[ChainEntry]) -> VerifyResult:
        state: dict[str, Any] = {"checked": 0, "first": None, "last": None}
        stream = iter(entries)
        try:
            self._walk(stream, state)
        except _Stop as stop:
            return VerifyResult(
                ok=False,
                entries_checked=state["checked"],
                checkpoints_checked=len(self._checkpoints),
                first_entry_id=state["first"],
                last_entry_id=state["last"],
                problem=stop.problem,
                entry_id=stop.entry_id,
                checkpoint_id=stop.checkpoint_id,
                detail=stop.detail,
            )
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # release the database cursor behind a generator at once
        return VerifyResult(
            ok=True,
            entries_checked=state["checked"],
            checkpoints_checked=len(self._checkpoints),
            first_entry_id=state["first"],
            last_entry_id=state["last"],
        )

    def _walk(self, entries: Iterable[ChainEntry], state: dict[str, Any]) -> None:
        anchor: ChainCheckpoint | None = None
        for cp in self._checkpoints:
            kind = checkpoint_kind(self._key(cp.mac_key_version, checkpoint_id=cp.id), cp)
            if kind is None:
                raise _Stop(Problem.CHECKPOINT_FORGED, f"checkpoint {cp.id} has an invalid signature", None, cp.id)
            if kind is CheckpointKind.ANCHOR:
                anchor = cp  # sorted: the last one seen is the latest
        floor = 0 if anchor is None else anchor.last_entry_id
        pending: dict[int, list[ChainCheckpoint]] = {}
        for cp in self._checkpoints:
            if cp.last_entry_id > floor:
                pending.setdefault(cp.last_entry_id, []).append(cp)
        expected: bytes | None
        seq: int | None
        if self._slice:
            expected, seq = None, None
        else:
            expected = GENESIS if anchor is None else anchor.last_entry_mac
            seq = 0 if anchor is None else anchor.entry_count

        for e in entries:
            if state["first"] is None:
                state["first"] = e.id
                if self._slice:
                    expected = e.prev_mac
                    pending = {i: cps for i, cps in pending.items() if i >= e.id}
            state["checked"] += 1
            if not entry_is_valid(self._key(e.mac_key_version, entry_id=e.id), e):
                raise _Stop(Problem.EDITED, f"entry {e.id} was edited or moved: its MAC does not match", e.id)
            if e.prev_mac != expected:
                if state["checked"] == 1:
                    detail = f"entry {e.id} is the first entry, but entries before it were removed without an anchor"
                else:
                    detail = (
                        f"entry {e.id} does not follow entry {state['last']}: entries between were deleted or reordered"
                    )
                raise _Stop(Problem.DELETED_OR_REORDERED, detail, e.id)
            if not e.payload_present and e.payload_expires_at is not None and e.payload_expires_at > self._now:
                raise _Stop(Problem.PAYLOAD_REMOVED, f"entry {e.id} lost its payload before its retention ended", e.id)
            if seq is not None:
                seq += 1
            for cp in pending.pop(e.id, []):
                if not hmac.compare_digest(cp.last_entry_mac, e.mac):
                    raise _Stop(
                        Problem.CHECKPOINT_MISMATCH,
                        f"entry {e.id} differs from what checkpoint {cp.id} recorded",
                        e.id,
                        cp.id,
                    )
                if seq is None:
                    seq = cp.entry_count
                elif seq != cp.entry_count:
                    raise _Stop(
                        Problem.CHECKPOINT_MISMATCH,
                        f"checkpoint {cp.id} counted {cp.entry_count} entries up to entry {e.id}, the trail has {seq}",
                        e.id,
                        cp.id,
                    )
            expected = e.mac
            state["last"] = e.id

        if pending:
            missing = min(pending)
            cp = pending[missing][0]
            last = state["last"]
            if last is None or missing > last:
                raise _Stop(
                    Problem.TRUNCATED,
                    f"checkpoint {cp.id} vouches for entry {missing}, but the trail ends at "
                    f"{'no entry' if last is None else f'entry {last}'}: its tail was removed",
                    missing,
                    cp.id,
                )
            raise _Stop(
                Problem.DELETED_OR_REORDERED,
                f"entry {missing}, recorded by checkpoint {cp.id}, is missing",
                missing,
                cp.id,
            )
