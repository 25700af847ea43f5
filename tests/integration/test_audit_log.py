"""The audit trail against real SQLite and PostgreSQL: writing in the action's transaction,
serialized appends, query scoping, retention, export and offline verification."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from appliance.db.engine import transaction
from appliance.db.models import AuditCheckpoint, AuditEntry, Tenant
from appliance.errors import AuditUnavailable, InvalidInput, NotFound, PermissionDenied
from appliance.roles import Role
from appliance.services.audit import AuditFilter, AuditLog, AuditView
from appliance.services.audit_chain import Problem
from appliance.services.audit_export import read_key_file, verify_export, write_export, write_key_file
from appliance.services.container import Services
from appliance.services.principal import Principal
from tests.support import renamed_audit_table

OPERATOR = Principal.local_operator()
COMPLIANCE = Principal(key_id="compliance1", role=Role.COMPLIANCE)


class Clock:
    """A settable clock: retention tests need entries written 'days ago'."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def _tenant(services: Services, name: str) -> Principal:
    view = services.tenants.create(OPERATOR, name)
    return Principal(key_id=f"adm-{name}", role=Role.TENANT_ADMIN, tenant_id=view.id, tenant_slug=name)


def _setup_entries(audit: AuditLog) -> list[AuditView]:
    """What the wired services audited during a test's setup (creating tenants), oldest first."""
    return sorted(audit.query(COMPLIANCE, limit=500).items, key=lambda e: e.id)


def test_entries_chain_and_verify_with_facts_but_no_values(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    acme = _tenant(services, "acme")
    setup = _setup_entries(audit)
    assert [(e.action, e.tenant_id) for e in setup] == [("tenant.create", acme.tenant_id)]
    first = audit.record(
        "chat.completion",
        actor=acme,
        tenant_id=acme.tenant_id,
        object="smollm2",
        policy_version=3,
        latency_ms=12.3456,
        facts={"entities": {"EMAIL_ADDRESS": 2, "PERSON": 1}, "actions": ["redact", "pseudonymize"]},
    )
    second = audit.record("tenant.delete", actor=OPERATOR, object="acme", facts={"crypto_shredded": True})
    assert second > first
    result = audit.verify()
    assert result.ok, result
    assert result.entries_checked == len(setup) + 2
    entry = audit.get(COMPLIANCE, first)
    assert entry.facts == {"entities": {"EMAIL_ADDRESS": 2, "PERSON": 1}, "actions": ["redact", "pseudonymize"]}
    assert entry.latency_ms == 12.346
    assert audit.get(COMPLIANCE, second).actor == "local-operator"


@pytest.mark.parametrize(
    "facts",
    [{"value": "alice@example.com"}, {"note": "a sentence with spaces"}, {"x": b"raw"}, {"n": float("nan")}],
)
def test_when_facts_hold_free_text_or_values_then_record_refuses(services: Services, facts: dict[str, object]) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    with pytest.raises(ValueError, match=r"audit facts|fact strings|finite"):
        audit.record("chat.completion", actor=OPERATOR, facts=facts)


def test_when_audit_write_fails_then_action_in_same_transaction_is_not_stored(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    audit.record("setup", actor=OPERATOR)
    undo = renamed_audit_table(services)
    try:

        def create_tenant_and_audit_it() -> None:
            with transaction(services.sessions) as s:
                s.add(Tenant(slug="ghost", display_name="ghost"))
                s.flush()
                audit.record("tenant.create", actor=OPERATOR, object="ghost", session=s)

        with pytest.raises(AuditUnavailable) as caught:
            create_tenant_and_audit_it()
        assert caught.value.status == 503
    finally:
        undo()
    with services.sessions() as s:
        assert s.scalar(select(Tenant).where(Tenant.slug == "ghost")) is None
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == 1
    assert audit.verify().ok


def test_first_entry_ever_can_join_a_transaction_that_already_wrote(services: Services) -> None:
    """The MAC key is created inside the caller's transaction (no second writer on SQLite)."""
    audit = AuditLog(services.sessions, services.data_keys)
    with transaction(services.sessions) as s:
        s.add(Tenant(slug="first", display_name="first"))
        s.flush()
        audit.record("tenant.create", actor=OPERATOR, object="first", session=s)
    assert audit.verify().ok
    assert audit.query(COMPLIANCE).items[0].action == "tenant.create"


def test_concurrent_appends_from_threads_never_fork_the_chain(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys, checkpoint_every=7)
    audit.record("warmup", actor=OPERATOR)
    errors: list[Exception] = []

    def worker(n: int) -> None:
        try:
            for i in range(12):
                audit.record("chat.completion", actor=f"key{n}", facts={"i": i})
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    with services.sessions() as s:
        prevs = s.scalars(select(AuditEntry.prev_mac)).all()
        assert len(prevs) == 73
        assert len(set(prevs)) == 73  # no two entries claim the same predecessor: no fork
    result = audit.verify()
    assert result.ok, result
    assert result.entries_checked == 73
    assert result.checkpoints_checked >= 10


def test_tenant_admin_reads_only_its_own_tenants_entries(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    a, b = _tenant(services, "ta"), _tenant(services, "tb")
    setup = _setup_entries(audit)
    a_setup = [e.id for e in setup if e.tenant_id == a.tenant_id]
    b_setup = [e.id for e in setup if e.tenant_id == b.tenant_id]
    assert a_setup and b_setup  # each tenant's creation is audited under that tenant
    assert len(a_setup) + len(b_setup) == len(setup)
    a_entry = audit.record("key.create", actor=a, tenant_id=a.tenant_id, object="k1")
    b_entry = audit.record("key.create", actor=b, tenant_id=b.tenant_id, object="k2")
    audit.record("tenant.create", actor=OPERATOR, object="tc")
    assert [e.id for e in audit.query(a).items] == [a_entry, *a_setup[::-1]]
    assert audit.query(a, AuditFilter(tenant="tb")).items == []
    assert audit.query(a, AuditFilter(tenant=b.tenant_id)).items == []
    for hidden in [b_entry, *b_setup]:
        with pytest.raises(NotFound):
            audit.get(a, hidden)
    assert audit.get(a, a_entry).object == "k1"
    assert {e.id for e in audit.query(COMPLIANCE, AuditFilter(tenant="tb")).items} == {b_entry, *b_setup}
    assert len(audit.query(COMPLIANCE).items) == len(setup) + 3
    with pytest.raises(PermissionDenied):
        audit.query(Principal(key_id="app", role=Role.APP, tenant_id=a.tenant_id))


def test_query_filters_and_cursor_pagination(services: Services) -> None:
    clock = Clock(datetime(2030, 1, 1, tzinfo=UTC))
    audit = AuditLog(services.sessions, services.data_keys, clock=clock)
    ids = []
    for i in range(7):
        clock.advance(hours=1)
        ids.append(audit.record("chat.completion", actor=f"k{i % 2}", outcome="ok" if i % 3 else "denied"))
    page1 = audit.query(COMPLIANCE, limit=3)
    assert [e.id for e in page1.items] == ids[::-1][:3]
    assert page1.next_cursor is not None
    page2 = audit.query(COMPLIANCE, limit=3, cursor=page1.next_cursor)
    page3 = audit.query(COMPLIANCE, limit=3, cursor=page2.next_cursor)
    assert [e.id for e in page2.items + page3.items] == ids[::-1][3:]
    assert page3.next_cursor is None
    assert {e.id for e in audit.query(COMPLIANCE, AuditFilter(outcome="denied")).items} == {ids[0], ids[3], ids[6]}
    assert {e.id for e in audit.query(COMPLIANCE, AuditFilter(actor="k1")).items} == {ids[1], ids[3], ids[5]}
    window = AuditFilter(since=datetime(2030, 1, 1, 2, tzinfo=UTC), until=datetime(2030, 1, 1, 4, tzinfo=UTC))
    assert [e.id for e in audit.query(COMPLIANCE, window).items] == [ids[2], ids[1]]
    with pytest.raises(InvalidInput):
        audit.query(COMPLIANCE, cursor="not-a-cursor")


def test_payload_is_sealed_with_the_tenant_key_and_readable_by_its_admin(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    a, b = _tenant(services, "pa"), _tenant(services, "pb")
    expires = datetime.now(UTC) + timedelta(days=1)
    entry = audit.record(
        "chat.completion", actor=a, tenant_id=a.tenant_id, payload=b"canary-payload-7731", payload_expires_at=expires
    )
    with services.sessions() as s:
        sealed = s.scalar(select(AuditEntry.payload_sealed).where(AuditEntry.id == entry))
    assert sealed is not None and b"canary-payload-7731" not in sealed
    assert audit.payload(a, entry) == b"canary-payload-7731"
    assert audit.payload(COMPLIANCE, entry) == b"canary-payload-7731"
    with pytest.raises(NotFound):
        audit.payload(b, entry)
    assert audit.get(a, entry).has_payload


def test_retention_purge_removes_exactly_what_policy_says_and_chain_still_verifies(services: Services) -> None:
    clock = Clock(datetime(2030, 1, 1, tzinfo=UTC))
    audit = AuditLog(services.sessions, services.data_keys, clock=clock, checkpoint_every=3)
    short, long = _tenant(services, "short"), _tenant(services, "long")
    # Creating the tenants was audited by the services (under each tenant, on the real clock);
    # the purge applies the same policy to those entries, so the expectations include them.
    setup = _setup_entries(audit)
    assert sorted((e.action, e.tenant_id) for e in setup) == sorted(
        [("tenant.create", short.tenant_id), ("tenant.create", long.tenant_id)]
    )
    written: dict[str, list[int]] = {"short": [], "long": [], "system": []}
    for _day in range(10):
        written["short"].append(audit.record("chat.completion", actor=short, tenant_id=short.tenant_id))
        written["long"].append(
            audit.record(
                "chat.completion",
                actor=long,
                tenant_id=long.tenant_id,
                payload=b"kept for two days",
                payload_expires_at=clock.now + timedelta(days=2),
            )
        )
        written["system"].append(audit.record("tenant.create", actor=OPERATOR))
        clock.advance(days=1)
    days = {short.tenant_id: 3, long.tenant_id: 30, None: 5}
    setup_purged = {e.id for e in setup if e.created_at < clock.now - timedelta(days=days[e.tenant_id])}
    report = audit.purge(now=clock.now, retention=lambda tenant: days[tenant])
    # now = day 10: short keeps days 7-9, system keeps days 5-9, long keeps all; payloads of days 0-8 expired.
    purged = setup_purged | set(written["short"][:7] + written["system"][:5])
    assert report.entries_purged == len(purged) == len(setup_purged) + 7 + 5
    assert report.payloads_deleted == 9
    # only the leading run of purged entries goes: the purged setup entries (when all of them
    # are, as when the real clock is well before 2030) and then day 0's "short" entry
    in_order = sorted(e.id for e in setup) + [i for day in zip(*written.values(), strict=True) for i in day]
    leading = next((n for n, i in enumerate(in_order) if i not in purged), len(in_order))
    assert report.entries_removed == leading
    if setup_purged == {e.id for e in setup}:
        assert leading == len(setup) + 1
    kept_setup = {e.id for e in setup} - setup_purged
    visible = {e.id for e in audit.query(COMPLIANCE, limit=500).items if e.action != "audit.purge"}
    assert visible == kept_setup | set(written["short"][7:] + written["long"] + written["system"][5:])
    purge_entry = audit.query(COMPLIANCE, AuditFilter(action="audit.purge")).items[0]
    assert purge_entry.facts == {
        "entries_purged": len(purged),
        "entries_removed": leading,
        "payloads_deleted": 9,
    }
    assert [audit.get(COMPLIANCE, i).has_payload for i in written["long"]] == [False] * 9 + [True]
    result = audit.verify(now=clock.now)
    assert result.ok, result
    # a second purge later removes the rest and still leaves a verifiable chain
    clock.advance(days=40)
    audit.purge(now=clock.now, retention=lambda tenant: 1)
    with services.sessions() as s:
        assert (s.scalar(select(func.count()).select_from(AuditCheckpoint)) or 0) > 0
    result = audit.verify(now=clock.now)
    assert result.ok, result
    audit.record("after.purge", actor=OPERATOR)
    assert audit.verify(now=clock.now).ok


def test_when_chain_is_broken_then_purge_refuses(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    target = audit.record("chat.completion", actor=OPERATOR)
    audit.record("chat.completion", actor=OPERATOR)
    with services.engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET outcome = 'error' WHERE id = :i"), {"i": target})
    with pytest.raises(Exception, match="purge refused"):
        audit.purge(retention=lambda _t: 0)
    assert audit.verify().entry_id == target  # the evidence is still there


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_then_offline_verify_round_trips_and_catches_edits(services: Services, tmp_path: Path, fmt: str) -> None:
    clock = Clock(datetime(2030, 1, 1, tzinfo=UTC))
    audit = AuditLog(services.sessions, services.data_keys, clock=clock, checkpoint_every=4)
    acme = _tenant(services, "exp")
    setup = _setup_entries(audit)
    assert [(e.action, e.tenant_id) for e in setup] == [("tenant.create", acme.tenant_id)]
    for i in range(10):
        clock.advance(minutes=10)
        audit.record(
            "chat.completion",
            actor=acme,
            tenant_id=acme.tenant_id,
            latency_ms=0.1 * i,
            object=None if i % 2 else "m",
            facts={"entities": {"PERSON": i}},
        )
    audit.rotate_mac_key()
    audit.record("after.rotation", actor=OPERATOR)
    key_file = tmp_path / "audit-keys.json"
    write_key_file(key_file, audit.mac_keys(OPERATOR))
    assert key_file.stat().st_mode & 0o777 == 0o600
    keys = read_key_file(key_file)
    assert sorted(keys) == [1, 2]

    whole = tmp_path / f"all.{fmt}"
    ex = audit.export(COMPLIANCE)
    with whole.open("w", encoding="utf-8", newline="") as out:
        assert len(list(write_export(ex, out, fmt))) == len(setup) + 11  # type: ignore[arg-type]
    result = verify_export(whole, keys)
    assert result.ok, result
    assert result.entries_checked == len(setup) + 11

    part = tmp_path / f"part.{fmt}"
    since, until = datetime(2030, 1, 1, 0, 25, tzinfo=UTC), datetime(2030, 1, 1, 1, 5, tzinfo=UTC)
    ex = audit.export(COMPLIANCE, since=since, until=until)
    with part.open("w", encoding="utf-8", newline="") as out:
        list(write_export(ex, out, fmt))  # type: ignore[arg-type]
    result = verify_export(part, keys)
    assert result.ok, result
    assert result.entries_checked == 4

    lines = whole.read_text(encoding="utf-8").splitlines()
    edited = [line.replace('PERSON\\":3', 'PERSON\\":0').replace('PERSON"":3', 'PERSON"":0') for line in lines]
    assert edited != lines
    (tmp_path / "edited").write_text("\n".join(edited) + "\n", encoding="utf-8")
    bad = verify_export(tmp_path / "edited", keys)
    assert not bad.ok and bad.problem is Problem.EDITED
    (tmp_path / "cut").write_text("\n".join(lines[:-2]) + "\n", encoding="utf-8")
    cut = verify_export(tmp_path / "cut", keys)
    assert not cut.ok and cut.problem is Problem.TRUNCATED
    wrong_key = verify_export(whole, {1: b"\x01" * 32, 2: b"\x02" * 32})
    assert not wrong_key.ok


def test_exported_entries_hold_no_payload(services: Services, tmp_path: Path) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    acme = _tenant(services, "nopay")
    with_payload = audit.record(
        "chat.completion",
        actor=acme,
        tenant_id=acme.tenant_id,
        payload=b"secret-canary-991",
        payload_expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    out = tmp_path / "x.jsonl"
    with out.open("w", encoding="utf-8") as fh:
        list(write_export(audit.export(COMPLIANCE), fh, "jsonl"))
    body = out.read_text(encoding="utf-8")
    assert "secret-canary-991" not in body
    entries = {e["id"]: e for e in map(json.loads, body.splitlines()) if e.get("record") == "entry"}
    assert with_payload in entries
    assert entries[with_payload]["payload_present"] is True
    assert all(not e["payload_present"] for i, e in entries.items() if i != with_payload)
