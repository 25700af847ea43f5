"""Someone with write access to the database (but not the master key) edits, deletes, reorders
or truncates audit entries directly: verify names the first bad entry every time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, text

from appliance.roles import Role
from appliance.services.audit import AuditLog
from appliance.services.audit_chain import Problem
from appliance.services.container import Services
from appliance.services.principal import Principal

OPERATOR = Principal.local_operator()
COLUMNS = (
    "created_at, tenant_id, actor, action, object, policy_version, outcome, latency_ms, facts, "
    "payload_sealed, payload_expires_at, mac_key_version, prev_mac, mac"
)


def _trail(services: Services, n: int = 8) -> tuple[AuditLog, list[int]]:
    audit = AuditLog(services.sessions, services.data_keys, checkpoint_every=1000)
    ids = [
        audit.record(
            "chat.completion",
            actor=f"key{i}",
            outcome="denied" if i == 3 else "ok",
            facts={"entities": {"EMAIL_ADDRESS": i}},
            latency_ms=10.0 + i,
        )
        for i in range(n)
    ]
    assert audit.verify().ok
    return audit, ids


def _sql(services: Services, statement: str, **params: object) -> None:
    with services.engine.begin() as conn:
        conn.execute(text(statement), params)


def _swap_contents(conn: Connection, a: int, b: int) -> None:
    rows = {
        r[0]: r[1:]
        for r in conn.execute(text(f"SELECT id, {COLUMNS} FROM audit_entries WHERE id IN (:a, :b)"), {"a": a, "b": b})
    }
    names = [c.strip() for c in COLUMNS.split(",")]
    assignments = ", ".join(f"{c} = :{c}" for c in names)
    for target, source in ((a, b), (b, a)):
        conn.execute(
            text(f"UPDATE audit_entries SET {assignments} WHERE id = :id"),
            {"id": target, **dict(zip(names, rows[source], strict=True))},
        )


Tamper = Callable[[Services, list[int]], None]


def _edit_outcome(s: Services, ids: list[int]) -> None:
    _sql(s, "UPDATE audit_entries SET outcome = 'ok' WHERE id = :i", i=ids[3])


def _edit_facts(s: Services, ids: list[int]) -> None:
    _sql(s, "UPDATE audit_entries SET facts = :f WHERE id = :i", i=ids[3], f='{"entities":{"EMAIL_ADDRESS":0}}')


def _edit_actor(s: Services, ids: list[int]) -> None:
    _sql(s, "UPDATE audit_entries SET actor = 'someone-else' WHERE id = :i", i=ids[3])


def _edit_time(s: Services, ids: list[int]) -> None:
    _sql(s, "UPDATE audit_entries SET created_at = :t WHERE id = :i", i=ids[3], t=datetime(2001, 1, 1, tzinfo=UTC))


def _forge_mac(s: Services, ids: list[int]) -> None:
    _sql(s, "UPDATE audit_entries SET outcome = 'ok', mac = :m WHERE id = :i", i=ids[3], m=b"\x11" * 32)


def _forge_tombstone(s: Services, ids: list[int]) -> None:
    _sql(
        s,
        "UPDATE audit_entries SET action = 'audit.purged', facts = :f WHERE id = :i",
        i=ids[3],
        f='{"content_digest": "' + "00" * 32 + '", "seal": "' + "00" * 32 + '"}',
    )


def _delete_middle(s: Services, ids: list[int]) -> None:
    _sql(s, "DELETE FROM audit_entries WHERE id = :i", i=ids[3])


def _delete_first(s: Services, ids: list[int]) -> None:
    _sql(s, "DELETE FROM audit_entries WHERE id = :i", i=ids[0])


def _swap(s: Services, ids: list[int]) -> None:
    with s.engine.begin() as conn:
        _swap_contents(conn, ids[3], ids[5])


CASES: list[tuple[str, Tamper, Problem, int]] = [
    ("edited outcome", _edit_outcome, Problem.EDITED, 3),
    ("edited facts", _edit_facts, Problem.EDITED, 3),
    ("edited actor", _edit_actor, Problem.EDITED, 3),
    ("edited time", _edit_time, Problem.EDITED, 3),
    ("edited with a made-up mac", _forge_mac, Problem.EDITED, 3),
    ("forged retention tombstone", _forge_tombstone, Problem.EDITED, 3),
    ("deleted entry", _delete_middle, Problem.DELETED_OR_REORDERED, 4),
    ("deleted first entry", _delete_first, Problem.DELETED_OR_REORDERED, 1),
    ("two rows' contents swapped", _swap, Problem.EDITED, 3),
]


@pytest.mark.parametrize(("tamper", "problem", "bad_index"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_when_entries_are_tampered_in_the_database_then_verify_names_the_first_bad_one(
    services: Services, tamper: Tamper, problem: Problem, bad_index: int
) -> None:
    audit, ids = _trail(services)
    tamper(services, ids)
    result = audit.verify()
    assert not result.ok
    assert result.problem is problem
    assert result.entry_id == ids[bad_index]
    assert str(ids[bad_index]) in result.detail


def test_when_tail_is_truncated_then_the_last_checkpoint_reveals_it(services: Services) -> None:
    audit, ids = _trail(services)
    cp = audit.checkpoint()
    assert cp.last_entry_id == ids[-1]
    _sql(services, "DELETE FROM audit_entries WHERE id >= :i", i=ids[5])
    result = audit.verify()
    assert not result.ok
    assert result.problem is Problem.TRUNCATED
    assert result.entry_id == ids[-1]
    assert result.last_entry_id == ids[4]


def test_when_tail_is_truncated_and_appended_to_then_the_checkpoint_still_reveals_it(services: Services) -> None:
    audit, ids = _trail(services)
    audit.checkpoint()
    _sql(services, "DELETE FROM audit_entries WHERE id >= :i", i=ids[6])
    audit.record("later", actor=OPERATOR)
    result = audit.verify()
    assert not result.ok
    assert result.problem in (Problem.TRUNCATED, Problem.DELETED_OR_REORDERED)
    assert result.entry_id == ids[-1]


def test_when_everything_is_deleted_but_a_checkpoint_remains_then_verify_fails(services: Services) -> None:
    audit, _ids = _trail(services)
    audit.checkpoint()
    _sql(services, "DELETE FROM audit_entries")
    result = audit.verify()
    assert not result.ok
    assert result.problem is Problem.TRUNCATED


def test_when_a_checkpoint_is_forged_then_verify_says_so(services: Services) -> None:
    audit, ids = _trail(services)
    cp = audit.checkpoint()
    _sql(services, "UPDATE audit_checkpoints SET last_entry_id = :e WHERE id = :c", e=ids[4], c=cp.id)
    result = audit.verify()
    assert not result.ok
    assert result.problem is Problem.CHECKPOINT_FORGED
    assert result.checkpoint_id == cp.id


def test_when_prefix_is_deleted_without_a_retention_anchor_then_verify_fails(services: Services) -> None:
    audit, ids = _trail(services)
    _sql(services, "DELETE FROM audit_entries WHERE id <= :i", i=ids[2])
    result = audit.verify()
    assert result.problem is Problem.DELETED_OR_REORDERED
    assert result.entry_id == ids[3]


def test_when_entries_beyond_a_retention_anchor_are_deleted_then_verify_fails(services: Services) -> None:
    clock_now = [datetime(2030, 1, 1, tzinfo=UTC)]
    audit = AuditLog(services.sessions, services.data_keys, clock=lambda: clock_now[0])
    ids = []
    for _ in range(6):
        ids.append(audit.record("chat.completion", actor="k"))
        clock_now[0] += timedelta(days=1)
    audit.purge(retention=lambda _t: 4)  # entries of days 0 and 1 go, behind an anchor
    assert audit.verify().ok
    _sql(services, "DELETE FROM audit_entries WHERE id = :i", i=ids[2])
    result = audit.verify()
    assert result.problem is Problem.DELETED_OR_REORDERED
    assert result.entry_id == ids[3]


def test_when_a_payload_is_removed_before_its_retention_ends_then_verify_fails(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    tenant = services.tenants.create(OPERATOR, "payload-t")
    admin = Principal(key_id="adm", role=Role.TENANT_ADMIN, tenant_id=tenant.id)
    entry = audit.record(
        "chat.completion",
        actor=admin,
        tenant_id=tenant.id,
        payload=b"kept",
        payload_expires_at=datetime.now(UTC) + timedelta(days=3),
    )
    _sql(services, "UPDATE audit_entries SET payload_sealed = NULL WHERE id = :i", i=entry)
    result = audit.verify()
    assert result.problem is Problem.PAYLOAD_REMOVED
    assert result.entry_id == entry


def test_when_a_payload_is_moved_to_another_entry_then_it_does_not_open(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    tenant = services.tenants.create(OPERATOR, "moved-t")
    admin = Principal(key_id="adm", role=Role.TENANT_ADMIN, tenant_id=tenant.id)
    expires = datetime.now(UTC) + timedelta(days=3)
    a = audit.record("x.a", actor=admin, tenant_id=tenant.id, payload=b"one", payload_expires_at=expires)
    b = audit.record("x.b", actor=admin, tenant_id=tenant.id, payload=b"two", payload_expires_at=expires)
    with services.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE audit_entries SET payload_sealed = (SELECT payload_sealed FROM audit_entries WHERE id = :a) WHERE id = :b"
            ),
            {"a": a, "b": b},
        )
    from appliance.errors import IntegrityError

    with pytest.raises(IntegrityError):
        audit.payload(admin, b)
