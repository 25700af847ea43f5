"""The audit trail: append-only, HMAC-chained, retention-aware, queryable per principal.

Every entry records who (an API key id, ``local-operator`` or a system actor), which tenant,
what action on which object, under which policy version, with what outcome and latency,
and privacy *facts*: types, counts and identifiers only, never values (:func:`check_facts`
refuses free text). A request/response payload is kept only when the caller passes one (the
tenant policy decides) and then sealed with the tenant's key; it is deleted at its expiry.

Writing:
    ``record(...)`` appends one entry in its own transaction, or in the caller's when given
    ``session=``: then the entry and the action it describes commit or fail together, which
    is how "audit must succeed" holds. Any failure to write raises :class:`AuditUnavailable`
    (HTTP 503) and counts ``appliance_audit_write_failures_total``.

Ordering:
    Appends are serialized so the chain never forks: on PostgreSQL by a transaction-scoped
    advisory lock (every API node shares it), on SQLite by taking the database write lock
    before the chain head is read. The lock is held until the caller's transaction ends,
    so keep audited transactions short.

The chain rules (MACs, tombstones, checkpoints, anchors) live in ``audit_chain``.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack

from sqlalchemy import Select, Table, bindparam, delete, func, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, defer, sessionmaker

from appliance.crypto.data_keys import SYSTEM, DataKeyService, wrap_context
from appliance.crypto.records import DATA_PURPOSE, TenantCipher
from appliance.db.base import utcnow
from appliance.db.engine import is_busy, transaction
from appliance.db.models import AuditCheckpoint, AuditEntry, DataKey, Tenant
from appliance.db.tenancy import as_global
from appliance.errors import (
    ApplianceError,
    AuditBusy,
    AuditOutcomeUnknown,
    AuditUnavailable,
    IntegrityError,
    NotFound,
)
from appliance.roles import Role
from appliance.services import metrics, paging
from appliance.services.audit_chain import (
    GENESIS,
    MAC_PURPOSE,
    TOMBSTONE_ACTION,
    TOMBSTONE_ACTOR,
    TOMBSTONE_OUTCOME,
    ChainCheckpoint,
    ChainEntry,
    ChainVerifier,
    CheckpointKind,
    VerifyResult,
    checkpoint_kind,
    checkpoint_signature,
    content_digest,
    entry_is_valid,
    entry_mac,
    tombstone_facts,
)
from appliance.services.paging import Page, check_limit
from appliance.services.principal import Principal

log = logging.getLogger(__name__)

PAYLOAD_KIND = "audit_entries.payload"
LOCAL_OPERATOR = "local-operator"
SYSTEM_ACTOR = "system"
DEFAULT_CHECKPOINT_EVERY = 100
# pg_advisory_xact_lock key: the first 8 bytes of SHA-256("appliance.audit-chain"), signed.
_PG_LOCK_KEY = 0x3A7C5E1D2B4F6081
_CURSOR_TAG = "a1"
_ACTION = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_OUTCOME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_FACT_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_FACT_TEXT = re.compile(r"^[A-Za-z0-9_.:/-]{0,64}$")

RetentionDays = Callable[[str | None], int | None]
"""tenant id (None: entries of no tenant) -> days to keep entries, or None to keep them."""


def actor_of(actor: Principal | str) -> str:
    """The actor string stored for a principal: its API key id, or ``local-operator``."""
    if isinstance(actor, Principal):
        return actor.key_id or LOCAL_OPERATOR
    return actor


def check_facts(value: Any, depth: int = 0) -> None:
    """Facts are counts, flags, types and identifiers. Free text (spaces, ``@``, long strings)
    is refused, so a value such as an e-mail address or a sentence cannot land here."""
    if depth > 3:
        raise ValueError("audit facts nest at most 3 levels")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("audit facts must be finite numbers")
        return
    if isinstance(value, str):
        if not _FACT_TEXT.fullmatch(value):
            raise ValueError("audit fact strings are identifiers (letters, digits, _.:/-, at most 64)")
        return
    if isinstance(value, list | tuple):
        if len(value) > 100:
            raise ValueError("audit fact lists hold at most 100 items")
        for item in value:
            check_facts(item, depth + 1)
        return
    if isinstance(value, Mapping):
        if len(value) > 100:
            raise ValueError("audit fact maps hold at most 100 keys")
        for k, v in value.items():
            if not isinstance(k, str) or not _FACT_KEY.fullmatch(k):
                raise ValueError("audit fact keys are identifiers")
            check_facts(v, depth + 1)
        return
    raise ValueError(f"audit facts may not hold {type(value).__name__}")


class EntryFields(TypedDict, total=False):
    """The optional parts of an entry, as :meth:`AuditLog.prepare` takes them."""

    outcome: str
    tenant_id: str | None
    object: str | None
    policy_version: int | None
    latency_ms: float | None
    facts: Mapping[str, Any] | None
    payload: bytes | None
    payload_expires_at: datetime | None


@dataclass(frozen=True)
class PreparedEntry:
    """An entry checked by :meth:`AuditLog.prepare`, not yet written."""

    fields: dict[str, Any]
    payload: bytes | None


@dataclass(frozen=True)
class _Appended:
    """What one transaction appended, to recognise it in the table if its COMMIT's answer is lost."""

    ids: list[int]
    last_mac: bytes


@dataclass(frozen=True)
class AuditView:
    id: int
    created_at: datetime
    tenant_id: str | None
    actor: str
    action: str
    object: str | None
    policy_version: int | None
    outcome: str
    latency_ms: float | None
    facts: dict[str, Any]
    has_payload: bool
    payload_expires_at: datetime | None


@dataclass(frozen=True)
class AuditFilter:
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    tenant: str | None = None  # tenant id or slug
    actor: str | None = None
    action: str | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class CheckpointView:
    id: int
    created_at: datetime
    kind: str
    last_entry_id: int
    last_entry_mac: str
    entry_count: int
    mac_key_version: int


@dataclass(frozen=True)
class PurgeReport:
    payloads_deleted: int
    entries_purged: int  # content removed (tombstoned)
    entries_removed: int  # rows deleted behind a retention anchor
    anchor_entry_id: int | None
    purge_entry_id: int


@dataclass(frozen=True)
class ExportSlice:
    """A contiguous part of the chain, ready to write; ``entries`` streams from the database."""

    exported_at: datetime
    since: datetime | None
    until: datetime | None
    count: int
    checkpoints: list[ChainCheckpoint]
    entries: Iterator[ChainEntry]


def encode_cursor(entry_id: int) -> str:
    return paging.encode_cursor(_CURSOR_TAG, str(entry_id))


def decode_cursor(cursor: str) -> int:
    return paging.decode_cursor(_CURSOR_TAG, cursor, paging.integer_key)


def _chain_entry(row: AuditEntry) -> ChainEntry:
    return ChainEntry(
        id=row.id,
        created_at=row.created_at,
        tenant_id=row.tenant_id,
        actor=row.actor,
        action=row.action,
        object=row.object,
        policy_version=row.policy_version,
        outcome=row.outcome,
        latency_ms=row.latency_ms,
        facts=row.facts,
        payload_present=row.payload_sealed is not None,
        payload_expires_at=row.payload_expires_at,
        mac_key_version=row.mac_key_version,
        prev_mac=row.prev_mac,
        mac=row.mac,
    )


def _chain_checkpoint(row: AuditCheckpoint) -> ChainCheckpoint:
    return ChainCheckpoint(
        row.id,
        row.created_at,
        row.last_entry_id,
        row.last_entry_mac,
        row.entry_count,
        row.mac_key_version,
        row.signature,
    )


_ENTRY_COLUMNS = (
    AuditEntry.id,
    AuditEntry.created_at,
    AuditEntry.tenant_id,
    AuditEntry.actor,
    AuditEntry.action,
    AuditEntry.object,
    AuditEntry.policy_version,
    AuditEntry.outcome,
    AuditEntry.latency_ms,
    AuditEntry.facts,
    AuditEntry.payload_sealed.is_not(None),
    AuditEntry.payload_expires_at,
    AuditEntry.mac_key_version,
    AuditEntry.prev_mac,
    AuditEntry.mac,
)


_ENTRIES: Table = AuditEntry.__table__  # type: ignore[assignment]
_INSERT = _ENTRIES.insert().returning(_ENTRIES.c.id)
_FINISH = (
    _ENTRIES.update()
    .where(_ENTRIES.c.id == bindparam("entry_id"))
    .values(mac=bindparam("entry_mac"), payload_sealed=bindparam("entry_sealed"))
)


def _stream_entries(session: Session, *where: Any) -> Iterator[ChainEntry]:
    """Chain entries in id order without loading payload bytes, a batch at a time."""
    query = select(*_ENTRY_COLUMNS).where(*where).order_by(AuditEntry.id).execution_options(yield_per=1000)
    result = session.execute(query)
    try:
        for r in result:
            values: tuple[Any, ...] = tuple(r)
            yield ChainEntry(*values)
    finally:
        result.close()  # a verifier that stops early must not leave a server-side cursor open


class AuditLog:
    """One per process. ``retention`` gives entry retention per tenant (policies plug in here);
    ``clock`` is a seam for tests of retention; ``checkpoint_every`` bounds how many entries can
    vanish from the tail before a signed checkpoint notices."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        data_keys: DataKeyService,
        *,
        retention: RetentionDays | None = None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self._sessions = sessions
        self._keys = data_keys
        self._cipher = TenantCipher(data_keys)
        self._retention: RetentionDays = retention or (lambda _tenant: None)
        self._every = checkpoint_every
        self._clock = clock

    # -- writing -------------------------------------------------------------------------------

    def record(
        self, action: str, *, actor: Principal | str, session: Session | None = None, **fields: Unpack[EntryFields]
    ) -> int:
        """Append one entry and return its id; raises AuditUnavailable if it cannot be written.

        With ``session=`` the entry joins the caller's transaction (commit both or neither). On
        SQLite with a ``payload``, call this before the transaction's first write or pass no
        session: sealing may need to reserve key budget on a connection of its own.
        """
        entry = self.prepare(action, actor=actor, **fields)
        if session is None:
            return self.record_many([entry])[0]

        def write() -> list[int]:
            self._reserve([entry])
            return self._append_all(session, [entry]).ids

        return self._write(write, [entry])[0]

    def prepare(
        self,
        action: str,
        *,
        actor: Principal | str,
        outcome: str = "ok",
        tenant_id: str | None = None,
        object: str | None = None,
        policy_version: int | None = None,
        latency_ms: float | None = None,
        facts: Mapping[str, Any] | None = None,
        payload: bytes | None = None,
        payload_expires_at: datetime | None = None,
    ) -> PreparedEntry:
        """Check one entry without writing it (ValueError for a programming mistake, such as
        free text in facts); :meth:`record_many` writes prepared entries."""
        actor_text = actor_of(actor)
        if not _ACTION.fullmatch(action) or action == TOMBSTONE_ACTION:
            raise ValueError("audit action must be a lowercase dotted name and not a reserved one")
        if not _OUTCOME.fullmatch(outcome):
            raise ValueError("audit outcome must be a short lowercase word")
        if not actor_text or len(actor_text) > 64:
            raise ValueError("audit actor must be 1-64 characters")
        if object is not None and len(object) > 200:
            raise ValueError("audit object must be at most 200 characters")
        if latency_ms is not None and not math.isfinite(latency_ms):
            raise ValueError("latency_ms must be finite")
        check_facts(dict(facts or {}))
        if payload is not None and (tenant_id is None or payload_expires_at is None):
            raise ValueError("a payload needs a tenant (its key seals it) and an expiry")
        fields = {
            "tenant_id": tenant_id or None,
            "actor": actor_text,
            "action": action,
            "object": object or None,
            "policy_version": policy_version,
            "outcome": outcome,
            "latency_ms": None if latency_ms is None else round(float(latency_ms), 3),
            "facts": json.dumps(dict(facts or {}), sort_keys=True, separators=(",", ":")),
            "payload_expires_at": payload_expires_at if payload is not None else None,
        }
        return PreparedEntry(fields, payload)

    def record_many(self, entries: Sequence[PreparedEntry]) -> list[int]:
        """Append prepared entries in order in one transaction, and return their ids.

        Group commit: many requests' entries share one chain lock and one commit. All are
        written or none; any failure raises AuditUnavailable."""
        if not entries:
            return []

        def write() -> list[int]:
            self._reserve(entries)
            appended: _Appended | None = None
            try:
                with transaction(self._sessions) as own:
                    appended = self._append_all(own, entries)
                return appended.ids
            except SQLAlchemyError:
                # An error after COMMIT was sent (a connection dropped then) does not say
                # the transaction failed: if the last entry is there as chained, it did
                # not, and writing the group again would put every entry in twice.
                if appended is None:
                    raise  # failed before COMMIT: rolled back
                committed = self._is_committed(appended)
                if committed is None:
                    raise AuditOutcomeUnknown(
                        "the audit trail could not confirm its write, so the action was not carried out"
                    ) from None
                if committed:
                    return appended.ids
                raise

        return self._write(write, entries)

    def _is_committed(self, appended: _Appended) -> bool | None:
        """Whether a transaction whose COMMIT answer was lost went through; None if the
        database cannot say. The chain lock waits out that transaction if it is still
        finishing on the server, so the answer is final."""
        try:
            with transaction(self._sessions) as s, as_global(s.connection()):
                if s.get_bind().dialect.name == "postgresql":
                    s.execute(text("SET LOCAL lock_timeout = '10s'"))
                self._lock(s)
                mac = s.scalar(select(AuditEntry.mac).where(AuditEntry.id == appended.ids[-1]))
        except SQLAlchemyError:
            return None
        return mac is not None and bytes(mac) == appended.last_mac

    def _reserve(self, entries: Sequence[PreparedEntry]) -> None:
        """Sealing a payload may reserve key budget on a connection of its own: do it before the lock."""
        sealed = collections.Counter(e.fields["tenant_id"] for e in entries if e.payload is not None)
        for tenant_id, n in sealed.items():
            self._keys.prepare(tenant_id, DATA_PURPOSE, n, tenant_id=tenant_id)

    def _write(self, write: Callable[[], list[int]], entries: Sequence[PreparedEntry]) -> list[int]:
        try:
            return write()
        except (SQLAlchemyError, OSError, ApplianceError) as exc:
            metrics.AUDIT_WRITE_FAILURES.inc(len(entries))
            for action in sorted({e.fields["action"] for e in entries}):
                log.error("audit write failed", extra={"audit_action": action, "error": type(exc).__name__})
            if isinstance(exc, AuditOutcomeUnknown):
                raise
            if is_busy(exc):
                raise AuditBusy("the database was busy, so the action was not carried out; retry it") from exc
            raise AuditUnavailable("the audit trail could not be written, so the action was not carried out") from exc

    def _append_all(self, s: Session, entries: Sequence[PreparedEntry]) -> _Appended:
        """Insert each entry (its id comes back), chain the MACs in memory, then write every
        MAC (and sealed payload) in one bulk update: Core statements, not one ORM flush per row.
        Returns the ids and the last MAC, which recognise the group if its COMMIT answer is lost.

        The chain is one across tenants: behind row-level security the append steps out of a
        tenant's scope to read the head, and back in after."""
        with as_global(s.connection()):
            return self._append_chained(s, entries)

    def _append_chained(self, s: Session, entries: Sequence[PreparedEntry]) -> _Appended:
        self._lock(s)
        version, key = self._mac_key(s)
        prev_mac, prev_time = self._head(s)
        last_cp = self._latest_checkpoint(s)
        last_cp_id = last_cp.last_entry_id if last_cp else 0
        ids: list[int] = []
        finals: list[dict[str, Any]] = []
        conn = s.connection()
        for entry in entries:
            now = self._clock()
            created = max(now, prev_time) if prev_time is not None else now  # time order == chain order
            values = {**entry.fields, "created_at": created, "mac_key_version": version, "prev_mac": prev_mac}
            # The MAC covers the id, known after the insert: a placeholder until the update below.
            inserted = conn.execute(_INSERT, {**values, "mac": GENESIS})
            entry_id = int(inserted.scalar_one())
            sealed = None
            if entry.payload is not None:
                sealed = self._cipher.seal(values["tenant_id"], PAYLOAD_KIND, str(entry_id), entry.payload)
            chained = ChainEntry(
                id=entry_id,
                created_at=created,
                tenant_id=values["tenant_id"],
                actor=values["actor"],
                action=values["action"],
                object=values["object"],
                policy_version=values["policy_version"],
                outcome=values["outcome"],
                latency_ms=values["latency_ms"],
                facts=values["facts"],
                payload_present=sealed is not None,
                payload_expires_at=values["payload_expires_at"],
                mac_key_version=version,
                prev_mac=prev_mac,
                mac=GENESIS,
            )
            mac = entry_mac(key, chained, content_digest(chained))
            finals.append({"entry_id": entry_id, "entry_mac": mac, "entry_sealed": sealed})
            if entry_id - last_cp_id >= self._every:
                self._finish(s, finals)
                finals = []
                self._write_checkpoint(s, CheckpointKind.CHECKPOINT, entry_id, mac, (version, key))
                last_cp_id = entry_id
            prev_mac, prev_time = mac, created
            ids.append(entry_id)
        self._finish(s, finals)
        metrics.AUDIT_ENTRIES.inc(len(ids))
        return _Appended(ids, prev_mac)

    @staticmethod
    def _finish(s: Session, finals: list[dict[str, Any]]) -> None:
        if finals:
            s.connection().execute(_FINISH, finals)  # one executemany

    def _lock(self, s: Session) -> None:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        else:
            # A write statement makes SQLite take its single write lock now, before we read the head.
            s.execute(text("UPDATE audit_checkpoints SET id = id WHERE id < 0"))

    def _mac_key(self, s: Session) -> tuple[int, bytes]:
        """The active MAC key, created on first use inside this (locked) transaction.

        A key created here is not yet visible to other connections, so it is unwrapped from the
        row in hand rather than through ``DataKeyService.key``."""
        row = s.scalar(
            select(DataKey)
            .where(DataKey.scope == SYSTEM, DataKey.purpose == MAC_PURPOSE, DataKey.retired_at.is_(None))
            .order_by(DataKey.version.desc())
            .limit(1)
        )
        if row is not None:
            return row.version, self._keys.key(SYSTEM, MAC_PURPOSE, row.version)
        version = self._keys.create(s, SYSTEM, MAC_PURPOSE, None)
        row = s.scalar(
            select(DataKey).where(DataKey.scope == SYSTEM, DataKey.purpose == MAC_PURPOSE, DataKey.version == version)
        )
        assert row is not None
        key = self._keys.keyring.unwrap(row.kek_id, row.wrapped, wrap_context(SYSTEM, MAC_PURPOSE, version))
        return version, key

    def _head(self, s: Session) -> tuple[bytes, datetime | None]:
        last = s.execute(select(AuditEntry.mac, AuditEntry.created_at).order_by(AuditEntry.id.desc()).limit(1)).first()
        if last is not None:
            return last[0], last[1]
        cp = self._latest_checkpoint(s)  # everything was purged: continue after the anchor
        return (cp.last_entry_mac, None) if cp is not None else (GENESIS, None)

    @staticmethod
    def _latest_checkpoint(s: Session, at_most: int | None = None) -> AuditCheckpoint | None:
        q = select(AuditCheckpoint).order_by(AuditCheckpoint.last_entry_id.desc(), AuditCheckpoint.id.desc()).limit(1)
        if at_most is not None:
            q = q.where(AuditCheckpoint.last_entry_id <= at_most)
        return s.scalar(q)

    def _position(self, s: Session, entry_id: int) -> int:
        """How many entries the chain held up to and including ``entry_id`` since its start."""
        cp = self._latest_checkpoint(s, at_most=entry_id)
        base, after = (cp.entry_count, cp.last_entry_id) if cp is not None else (0, 0)
        between = s.scalar(select(func.count()).where(AuditEntry.id > after, AuditEntry.id <= entry_id))
        return base + int(between or 0)

    def _write_checkpoint(
        self, s: Session, kind: CheckpointKind, entry_id: int, mac: bytes, mac_key: tuple[int, bytes] | None = None
    ) -> AuditCheckpoint:
        """``mac_key``: the key in hand when this transaction may have just created it."""
        version, key = mac_key or self._mac_key(s)
        cp = ChainCheckpoint(0, self._clock(), entry_id, mac, self._position(s, entry_id), version, b"")
        row = AuditCheckpoint(
            created_at=cp.created_at,
            last_entry_id=entry_id,
            last_entry_mac=mac,
            entry_count=cp.entry_count,
            mac_key_version=version,
            signature=checkpoint_signature(key, kind, cp),
        )
        s.add(row)
        s.flush()
        return row

    def checkpoint(self) -> CheckpointView:
        """Sign the current head now (or return the latest checkpoint if the head has not moved).
        Run it from a timer: entries after the latest checkpoint can vanish unnoticed."""
        try:
            with transaction(self._sessions) as s:
                self._lock(s)
                last = s.execute(select(AuditEntry.id, AuditEntry.mac).order_by(AuditEntry.id.desc()).limit(1)).first()
                latest = self._latest_checkpoint(s)
                if last is None and latest is None:
                    raise NotFound("the audit trail is empty; there is nothing to checkpoint")
                if last is not None and (latest is None or latest.last_entry_id != last[0]):
                    latest = self._write_checkpoint(s, CheckpointKind.CHECKPOINT, last[0], last[1])
                assert latest is not None
                return self._checkpoint_view(latest)
        except SQLAlchemyError as exc:
            if is_busy(exc):
                raise AuditBusy("the database was busy, so no checkpoint was written; retry it") from exc
            raise AuditUnavailable("the audit trail could not be written") from exc

    def _checkpoint_view(self, row: AuditCheckpoint) -> CheckpointView:
        cp = _chain_checkpoint(row)
        kind = checkpoint_kind(self._keys.key(SYSTEM, MAC_PURPOSE, cp.mac_key_version), cp)
        return CheckpointView(
            row.id,
            row.created_at,
            kind.value if kind else "invalid",
            row.last_entry_id,
            row.last_entry_mac.hex(),
            row.entry_count,
            row.mac_key_version,
        )

    def rotate_mac_key(self) -> int:
        """Start a new MAC key version; older entries keep verifying under theirs."""
        with transaction(self._sessions) as s:
            self._lock(s)
            return self._keys.create(s, SYSTEM, MAC_PURPOSE, None)

    # -- verifying -------------------------------------------------------------------------------

    def _key_for(self, version: int) -> bytes:
        return self._keys.key(SYSTEM, MAC_PURPOSE, version)

    def _verify_in(self, s: Session, now: datetime) -> VerifyResult:
        checkpoints = [_chain_checkpoint(r) for r in s.scalars(select(AuditCheckpoint))]
        return ChainVerifier(self._key_for, checkpoints, now=now).verify(_stream_entries(s))

    def verify(self, principal: Principal | None = None, *, now: datetime | None = None) -> VerifyResult:
        """Walk the whole chain; the result names the first edited, reordered or deleted entry,
        or the truncation a checkpoint reveals."""
        if principal is not None:
            principal.require(Role.OPERATOR, Role.COMPLIANCE)
        with self._sessions() as s:
            result = self._verify_in(s, now or self._clock())
        if not result.ok:
            metrics.AUDIT_VERIFY_FAILURES.inc()
            log.warning("audit chain verification failed", extra={"problem": str(result.problem)})
        return result

    # -- retention --------------------------------------------------------------------------------

    def purge(
        self,
        *,
        actor: Principal | str = SYSTEM_ACTOR,
        now: datetime | None = None,
        retention: RetentionDays | None = None,
    ) -> PurgeReport:
        """Delete expired payloads, purge entries past their tenant's retention, audit the purge.

        Refuses (IntegrityError) when the chain does not verify: a purge must not destroy the
        evidence of tampering. Purged entries become sealed tombstones; the leading run of
        tombstones is then deleted behind a signed anchor, so the chain still verifies.
        """
        if isinstance(actor, Principal):
            actor.require(Role.OPERATOR, Role.COMPLIANCE)
        now = now or self._clock()
        keep_days = retention or self._retention
        with transaction(self._sessions) as s:
            self._lock(s)
            if not self._verify_in(s, now).ok:
                raise IntegrityError(
                    "the audit chain failed verification; purge refused (run `appliance audit verify`)"
                )
            payloads = s.execute(
                update(AuditEntry)
                .where(AuditEntry.payload_sealed.is_not(None), AuditEntry.payload_expires_at <= now)
                .values(payload_sealed=None)
            ).rowcount  # type: ignore[attr-defined]
            purged = 0
            tenants = s.scalars(select(AuditEntry.tenant_id).where(AuditEntry.action != TOMBSTONE_ACTION).distinct())
            for tenant in list(tenants):
                days = keep_days(tenant)
                if days is None:
                    continue
                same_tenant = AuditEntry.tenant_id.is_(None) if tenant is None else AuditEntry.tenant_id == tenant
                expired = s.scalars(
                    select(AuditEntry)
                    .where(same_tenant, AuditEntry.created_at < now - timedelta(days=days))
                    .where(AuditEntry.action != TOMBSTONE_ACTION)
                    .order_by(AuditEntry.id)
                ).all()
                for row in expired:
                    self._tombstone(row)
                    purged += 1
            s.flush()
            removed, anchor_id = self._remove_leading_tombstones(s)
            facts = {"payloads_deleted": int(payloads or 0), "entries_purged": purged, "entries_removed": removed}
            entry_id = self.record("audit.purge", actor=actor, facts=facts, session=s)
            last = s.execute(select(AuditEntry.mac).where(AuditEntry.id == entry_id)).scalar_one()
            self._write_checkpoint(s, CheckpointKind.CHECKPOINT, entry_id, last)
        return PurgeReport(int(payloads or 0), purged, removed, anchor_id, entry_id)

    def _tombstone(self, row: AuditEntry) -> None:
        entry = _chain_entry(row)
        key = self._keys.key(SYSTEM, MAC_PURPOSE, row.mac_key_version)
        if not entry_is_valid(key, entry):  # verified moments ago under the same lock; belt and braces
            raise IntegrityError("an audit entry failed verification; purge refused")
        row.facts = tombstone_facts(key, entry)
        row.actor, row.action, row.outcome = TOMBSTONE_ACTOR, TOMBSTONE_ACTION, TOMBSTONE_OUTCOME
        row.object = row.policy_version = row.latency_ms = None
        row.payload_sealed = row.payload_expires_at = None

    def _remove_leading_tombstones(self, s: Session) -> tuple[int, int | None]:
        first_live = s.scalar(select(func.min(AuditEntry.id)).where(AuditEntry.action != TOMBSTONE_ACTION))
        q = select(AuditEntry.id, AuditEntry.mac).where(AuditEntry.action == TOMBSTONE_ACTION)
        if first_live is not None:
            q = q.where(AuditEntry.id < first_live)
        cut = s.execute(q.order_by(AuditEntry.id.desc()).limit(1)).first()
        if cut is None:
            return 0, None
        self._write_checkpoint(s, CheckpointKind.ANCHOR, cut[0], cut[1])
        removed = s.execute(delete(AuditEntry).where(AuditEntry.id <= cut[0])).rowcount  # type: ignore[attr-defined]
        return int(removed or 0), int(cut[0])

    # -- reading ----------------------------------------------------------------------------------

    def _visible(self, principal: Principal) -> list[Any]:
        principal.require(Role.OPERATOR, Role.COMPLIANCE, Role.TENANT_ADMIN)
        where: list[Any] = [AuditEntry.action != TOMBSTONE_ACTION]
        if not principal.role.is_global:
            where.append(AuditEntry.tenant_id == principal.tenant_id)
        return where

    @staticmethod
    def _view(row: AuditEntry, has_payload: bool) -> AuditView:
        return AuditView(
            row.id,
            row.created_at,
            row.tenant_id,
            row.actor,
            row.action,
            row.object,
            row.policy_version,
            row.outcome,
            row.latency_ms,
            json.loads(row.facts),
            has_payload,
            row.payload_expires_at,
        )

    def _select(self, where: list[Any]) -> Select[AuditEntry, bool]:
        return (
            select(AuditEntry, AuditEntry.payload_sealed.is_not(None))
            .options(defer(AuditEntry.payload_sealed))
            .where(*where)
        )

    def query(
        self,
        principal: Principal,
        filters: AuditFilter | None = None,
        *,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[AuditView]:
        """Newest first. A tenant admin sees only its tenant's entries whatever it filters on."""
        f = filters or AuditFilter()
        where = self._visible(principal)
        check_limit(limit)
        with self._sessions() as s:
            if f.tenant is not None:
                tenant_id = s.scalar(select(Tenant.id).where(or_(Tenant.slug == f.tenant, Tenant.id == f.tenant)))
                where.append(AuditEntry.tenant_id == (tenant_id or f.tenant))  # deleted tenants: by id
            if f.since is not None:
                where.append(AuditEntry.created_at >= f.since)
            if f.until is not None:
                where.append(AuditEntry.created_at < f.until)
            for column, value in (
                (AuditEntry.actor, f.actor),
                (AuditEntry.action, f.action),
                (AuditEntry.outcome, f.outcome),
            ):
                if value is not None:
                    where.append(column == value)
            if cursor is not None:
                where.append(AuditEntry.id < decode_cursor(cursor))
            rows = s.execute(self._select(where).order_by(AuditEntry.id.desc()).limit(limit + 1)).all()
        items = [self._view(row, bool(has)) for row, has in rows[:limit]]
        next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
        return Page(items, next_cursor)

    def get(self, principal: Principal, entry_id: int) -> AuditView:
        where = [*self._visible(principal), AuditEntry.id == entry_id]
        with self._sessions() as s:
            found = s.execute(self._select(where)).first()
        if found is None:
            raise NotFound("no such audit entry")
        return self._view(found[0], bool(found[1]))

    def payload(self, principal: Principal, entry_id: int) -> bytes:
        """The kept payload of an entry: for compliance, or the entry's own tenant admin."""
        principal.require(Role.COMPLIANCE, Role.TENANT_ADMIN)
        where = [*self._visible(principal), AuditEntry.id == entry_id, AuditEntry.payload_sealed.is_not(None)]
        with self._sessions() as s:
            row = s.execute(select(AuditEntry.tenant_id, AuditEntry.payload_sealed).where(*where)).first()
        if row is None or row[0] is None or row[1] is None:
            raise NotFound("no such audit payload")
        return self._cipher.open(row[0], PAYLOAD_KIND, str(entry_id), row[1])

    # -- export -----------------------------------------------------------------------------------

    def export(
        self, principal: Principal, *, since: datetime | None = None, until: datetime | None = None
    ) -> ExportSlice:
        """A contiguous slice of the chain from the first entry at/after ``since`` to the last
        before ``until``. Without ``until`` the head is checkpointed first and the export ends
        at that signed checkpoint, so a file cut short is detected offline."""
        principal.require(Role.OPERATOR, Role.COMPLIANCE)
        exported_at = self._clock()
        head_cp = None
        if until is None:
            try:
                head_cp = self.checkpoint()
            except NotFound:
                head_cp = None
        with self._sessions() as s:
            lo_q = select(func.min(AuditEntry.id))
            if since is not None:
                lo_q = lo_q.where(AuditEntry.created_at >= since)
            hi_q = select(func.max(AuditEntry.id))
            if until is not None:
                hi_q = hi_q.where(AuditEntry.created_at < until)
            lo = s.scalar(lo_q)
            hi = head_cp.last_entry_id if head_cp is not None else s.scalar(hi_q)
            if lo is None or hi is None or lo > hi:
                return ExportSlice(exported_at, since, until, 0, [], iter(()))
            count = int(s.scalar(select(func.count()).where(AuditEntry.id >= lo, AuditEntry.id <= hi)) or 0)
            checkpoints = [
                _chain_checkpoint(r)
                for r in s.scalars(
                    select(AuditCheckpoint)
                    .where(AuditCheckpoint.last_entry_id >= lo, AuditCheckpoint.last_entry_id <= hi)
                    .order_by(AuditCheckpoint.id)
                )
            ]
        return ExportSlice(exported_at, since, until, count, checkpoints, self._export_rows(lo, hi))

    def _export_rows(self, lo: int, hi: int) -> Iterator[ChainEntry]:
        with self._sessions() as s:
            yield from _stream_entries(s, AuditEntry.id >= lo, AuditEntry.id <= hi)

    def mac_keys(self, principal: Principal) -> dict[int, bytes]:
        """Every MAC key version, for offline verification of exports. Operator only; the
        caller writes them to a protected file and never logs them."""
        principal.require(Role.OPERATOR)
        with self._sessions() as s:
            versions = s.scalars(
                select(DataKey.version)
                .where(DataKey.scope == SYSTEM, DataKey.purpose == MAC_PURPOSE)
                .order_by(DataKey.version)
            ).all()
        return {v: self._keys.key(SYSTEM, MAC_PURPOSE, v) for v in versions}


def audit_log_of(services: Any) -> AuditLog:
    """``services.audit`` once the container wires it; until then one built from its parts."""
    existing = getattr(services, "audit", None)
    if isinstance(existing, AuditLog):
        return existing
    return AuditLog(services.sessions, services.data_keys)
