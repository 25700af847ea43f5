"""Group commit of audit entries: many requests' entries in one transaction, each caller
answered only after the commit that holds its entry, the chain as verifiable as ever."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError

from appliance.db.base import utcnow
from appliance.db.models import AuditCheckpoint, AuditEntry
from appliance.errors import AuditUnavailable
from appliance.services.audit import _PG_LOCK_KEY, AuditLog
from appliance.services.audit_writer import AuditWriter
from appliance.services.container import Services
from appliance.services.principal import Principal
from tests.support import renamed_audit_table

OPERATOR = "local-operator"


def _count(services: Services) -> int:
    with services.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def test_record_many_appends_in_order_in_one_chain(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys, checkpoint_every=5)
    before = _count(services)
    entries = [audit.prepare("embeddings", actor=OPERATOR, facts={"inputs": i}) for i in range(12)]
    ids = audit.record_many(entries)
    assert ids == sorted(ids) and len(set(ids)) == 12
    assert _count(services) == before + 12
    with services.sessions() as s:
        facts = s.scalars(select(AuditEntry.facts).where(AuditEntry.id.in_(ids)).order_by(AuditEntry.id)).all()
    assert facts == [f'{{"inputs":{i}}}' for i in range(12)]
    result = audit.verify()
    assert result.ok, result
    with services.sessions() as s:  # checkpoints still land inside a group
        assert s.scalar(select(func.count()).select_from(AuditCheckpoint)) >= 2


def test_prepare_refuses_free_text_before_anything_is_queued(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    with pytest.raises(ValueError, match="identifiers"):
        audit.prepare("embeddings", actor=OPERATOR, facts={"note": "Anna Berg called"})


@contextmanager
def chain_lock_held(services: Services) -> Iterator[None]:
    """What another API node in the middle of an append looks like: the chain lock taken."""
    if services.engine.dialect.name == "postgresql":
        with services.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
    else:
        db = sqlite3.connect(str(services.engine.url.database), isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()


def test_concurrent_records_share_commits_and_each_waits_for_its_own(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    writer = AuditWriter(audit)
    before = _count(services)

    async def go() -> list[int]:
        with chain_lock_held(services):
            first = asyncio.ensure_future(writer.record("embeddings", actor=OPERATOR, facts={"n": 0}))
            await asyncio.sleep(0.3)  # the writer has taken it and waits for the lock
            rest = [
                asyncio.ensure_future(writer.record("embeddings", actor=OPERATOR, facts={"n": i})) for i in range(1, 20)
            ]
            await asyncio.sleep(0.2)
            assert not first.done() and not any(f.done() for f in rest)  # no answer before the commit
        return list(await asyncio.gather(first, *rest))

    try:
        ids = asyncio.run(go())
    finally:
        writer.close()
    assert len(set(ids)) == 20 and ids == sorted(ids)
    assert _count(services) == before + 20
    assert writer.commits == 2  # the first alone, then the 19 that queued behind it together
    assert audit.verify().ok


def test_when_the_trail_cannot_be_written_every_caller_gets_503_and_nothing_is_stored(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    audit.record("setup", actor=OPERATOR)
    writer = AuditWriter(audit)
    before = _count(services)
    undo = renamed_audit_table(services)

    async def go() -> list[int | BaseException]:
        calls = [writer.record("embeddings", actor=OPERATOR) for _ in range(6)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    try:
        outcomes = asyncio.run(go())
    finally:
        undo()
        writer.close()
    assert all(isinstance(o, AuditUnavailable) and o.status == 503 for o in outcomes)
    assert _count(services) == before
    assert audit.verify().ok


def test_one_entry_that_cannot_be_written_does_not_fail_the_others(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    writer = AuditWriter(audit)
    operator = Principal.local_operator()
    gone = services.tenants.create(operator, "gone")
    services.tenants.delete(operator, "gone")
    before = _count(services)

    def entry(n: int) -> dict[str, Any]:
        return {"actor": OPERATOR, "facts": {"n": n}}

    # A request still in flight when its tenant was deleted: its entry (with a payload sealed
    # under the tenant's key) cannot be written.
    doomed = {"actor": OPERATOR, "tenant_id": gone.id, "payload": b"x", "payload_expires_at": utcnow() + timedelta(1)}
    with pytest.raises(AuditUnavailable):
        audit.record_many([audit.prepare("embeddings", **entry(0)), audit.prepare("embeddings", **doomed)])
    assert _count(services) == before  # one transaction: all or nothing

    async def go() -> list[int | BaseException]:
        with chain_lock_held(services):
            first = asyncio.ensure_future(writer.record("embeddings", **entry(0)))
            await asyncio.sleep(0.3)
            group = [
                asyncio.ensure_future(writer.record("embeddings", **fields))
                for fields in (entry(1), doomed, entry(2), entry(3))
            ]
            await asyncio.sleep(0.1)
        return list(await asyncio.gather(first, *group, return_exceptions=True))

    try:
        outcomes = asyncio.run(go())
    finally:
        writer.close()
    assert isinstance(outcomes[2], AuditUnavailable)
    assert all(isinstance(o, int) for i, o in enumerate(outcomes) if i != 2)
    assert _count(services) == before + 4
    assert audit.verify().ok


@contextmanager
def commit_reported_lost(services: Services, times: int = 1) -> Iterator[None]:
    """A COMMIT that reached the database but whose answer did not come back (a connection
    dropped at that moment): the transaction is committed, then the caller sees an error."""
    left = [times]

    def lost(session: Any) -> None:
        if left[0] > 0:
            left[0] -= 1
            raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection unexpectedly"))

    event.listen(services.sessions, "after_commit", lost)
    try:
        yield
    finally:
        event.remove(services.sessions, "after_commit", lost)


def test_a_commit_whose_answer_was_lost_is_not_written_twice(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    before = _count(services)
    entries = [audit.prepare("embeddings", actor=OPERATOR, facts={"inputs": i}) for i in range(3)]
    with commit_reported_lost(services):
        ids = audit.record_many(entries)
    assert len(ids) == 3
    assert _count(services) == before + 3
    assert audit.verify().ok


def test_the_writer_answers_callers_once_when_a_commit_answer_was_lost(services: Services) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    writer = AuditWriter(audit)
    before = _count(services)

    async def go() -> list[int]:
        return list(await asyncio.gather(*(writer.record("embeddings", actor=OPERATOR) for _ in range(4))))

    try:
        with commit_reported_lost(services):
            ids = asyncio.run(go())
    finally:
        writer.close()
    assert len(set(ids)) == 4
    assert _count(services) == before + 4
    assert audit.verify().ok


def test_when_the_outcome_of_a_commit_cannot_be_told_the_writer_fails_callers_rather_than_write_twice(
    services: Services,
) -> None:
    audit = AuditLog(services.sessions, services.data_keys)
    writer = AuditWriter(audit)
    with services.sessions() as s:
        before = int(s.scalar(select(func.max(AuditEntry.id))) or 0)
    unreachable = [0]

    def lost(session: Any) -> None:
        if unreachable[0] == 0:
            unreachable[0] = 1  # the next look at the table fails too: the outcome is unknown
            raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection unexpectedly"))

    def down(session: Any, transaction: Any, connection: Any) -> None:
        if unreachable[0] == 1:
            unreachable[0] = 2  # then the database is back, as it would be for a retry
            raise OperationalError("BEGIN", {}, ConnectionError("could not connect to server"))

    async def go() -> list[int | BaseException]:
        calls = (writer.record("embeddings", actor=OPERATOR, facts={"inputs": i}) for i in range(3))
        return list(await asyncio.gather(*calls, return_exceptions=True))

    event.listen(services.sessions, "after_commit", lost)
    event.listen(services.sessions, "after_begin", down)
    try:
        answers = asyncio.run(go())
    finally:
        event.remove(services.sessions, "after_commit", lost)
        event.remove(services.sessions, "after_begin", down)
        writer.close()
    assert any(isinstance(a, AuditUnavailable) for a in answers), answers  # the unconfirmed group: 503
    with services.sessions() as s:
        facts = s.scalars(select(AuditEntry.facts).where(AuditEntry.id > before)).all()
    assert len(facts) == len(set(facts)), facts  # each caller's entry at most once
    assert {f'{{"inputs":{i}}}' for i, a in enumerate(answers) if isinstance(a, int)} <= set(facts)
    assert audit.verify().ok
