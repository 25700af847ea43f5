"""The chain rules without a database: canonical MACs, tombstones, checkpoints, slices."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from appliance.services.audit_chain import (
    GENESIS,
    ChainCheckpoint,
    ChainEntry,
    ChainVerifier,
    CheckpointKind,
    Problem,
    checkpoint_signature,
    content_digest,
    entry_mac,
    parse_timestamp,
    timestamp,
    tombstone_facts,
)

KEY = b"k" * 32
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _chain(n: int) -> list[ChainEntry]:
    out: list[ChainEntry] = []
    prev = GENESIS
    for i in range(1, n + 1):
        e = ChainEntry(
            i,
            T0 + timedelta(seconds=i),
            "t1",
            f"key{i}",
            "chat.completion",
            None,
            1,
            "ok",
            1.5,
            '{"n":1}',
            False,
            None,
            1,
            prev,
            b"",
        )
        e = replace(e, mac=entry_mac(KEY, e, content_digest(e)))
        out.append(e)
        prev = e.mac
    return out


def _cp(kind: CheckpointKind, e: ChainEntry, count: int, cp_id: int = 1) -> ChainCheckpoint:
    cp = ChainCheckpoint(cp_id, T0, e.id, e.mac, count, 1, b"")
    return replace(cp, signature=checkpoint_signature(KEY, kind, cp))


def _verify(entries: list[ChainEntry], cps: list[ChainCheckpoint] | None = None, **kw: bool):  # type: ignore[no-untyped-def]
    return ChainVerifier({1: KEY}.__getitem__, cps or [], now=T0 + timedelta(days=1), **kw).verify(entries)


def test_timestamps_round_trip_exactly() -> None:
    t = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert parse_timestamp(timestamp(t)) == t


def test_intact_chain_with_checkpoint_verifies() -> None:
    chain = _chain(5)
    result = _verify(chain, [_cp(CheckpointKind.CHECKPOINT, chain[4], 5)])
    assert result.ok and result.entries_checked == 5


@pytest.mark.parametrize("field", ["actor", "outcome", "facts", "tenant_id"])
def test_any_edited_field_is_caught(field: str) -> None:
    chain = _chain(4)
    chain[2] = replace(chain[2], **{field: "x"})
    result = _verify(chain)
    assert (result.problem, result.entry_id) == (Problem.EDITED, 3)


def test_sealed_tombstone_verifies_and_a_forged_one_does_not() -> None:
    chain = _chain(3)
    facts = tombstone_facts(KEY, chain[1])
    tomb = replace(
        chain[1],
        actor="retention",
        action="audit.purged",
        outcome="purged",
        object=None,
        policy_version=None,
        latency_ms=None,
        facts=facts,
    )
    assert _verify([chain[0], tomb, chain[2]]).ok
    forged = replace(tomb, facts=tombstone_facts(b"z" * 32, chain[1]))
    assert _verify([chain[0], forged, chain[2]]).problem is Problem.EDITED


def test_anchor_lets_the_chain_start_after_a_purged_prefix_and_a_plain_checkpoint_does_not() -> None:
    chain = _chain(5)
    assert _verify(chain[2:], [_cp(CheckpointKind.ANCHOR, chain[1], 2)]).ok
    result = _verify(chain[2:], [_cp(CheckpointKind.CHECKPOINT, chain[1], 2)])
    assert result.problem is Problem.DELETED_OR_REORDERED


def test_slice_mode_accepts_a_middle_slice_but_not_a_gap() -> None:
    chain = _chain(6)
    assert _verify(chain[2:5], slice_mode=True).ok
    assert _verify([chain[2], chain[4]], slice_mode=True).problem is Problem.DELETED_OR_REORDERED


def test_checkpoint_count_mismatch_is_reported() -> None:
    chain = _chain(3)
    result = _verify(chain, [_cp(CheckpointKind.CHECKPOINT, chain[2], 7)])
    assert result.problem is Problem.CHECKPOINT_MISMATCH


def test_unknown_key_version_is_reported_not_raised() -> None:
    chain = [replace(e, mac_key_version=9) for e in _chain(1)]
    assert _verify(chain).problem is Problem.KEY_MISSING
