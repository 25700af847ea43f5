"""Policy versions per tenant: apply (immutable versions), history, diff, rollback, and the
active policy every request runs under.

The active policy is remembered per tenant for ``cache_ttl_s`` seconds (default 5), so the
request path reads no database row per call. A change applied through this process takes
effect on its next request; on other API nodes sharing the database within
``cache_ttl_s`` (docs/security.md). The parsed policy is kept per (tenant, version).
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from appliance.crypto.records import TenantCipher
from appliance.db.base import utcnow
from appliance.db.engine import transaction
from appliance.db.models import PolicyVersion, TenantPolicy
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.policy.loader import load_policy_text, preset_text
from appliance.policy.schema import Policy
from appliance.roles import Role
from appliance.services.audit import AuditLog
from appliance.services.paging import DEFAULT_PAGE, Page, check_limit, decode_cursor, encode_cursor, integer_key
from appliance.services.principal import Principal
from appliance.services.tenants import find_tenant
from appliance.services.ttl_cache import DEFAULT_TTL_S, TtlCache

DEFAULT_PRESET = "default"
_DOC = "policy_versions.document"
_COMMENT = "policy_versions.comment"
_WRITERS = (Role.COMPLIANCE, Role.OPERATOR)
_READERS = (Role.COMPLIANCE, Role.OPERATOR, Role.TENANT_ADMIN)
_CURSOR_TAG = "p1"


@dataclass(frozen=True)
class ActivePolicy:
    version: int | None  # None: no policy applied yet, the default preset applies
    policy: Policy


@dataclass(frozen=True)
class VersionView:
    tenant: str
    version: int
    author: str
    comment: str
    content_hash: str
    created_at: datetime
    active: bool


@dataclass(frozen=True)
class VersionDocument:
    view: VersionView
    document: str


@dataclass(frozen=True)
class Change:
    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class PolicyDiff:
    tenant: str
    from_version: int
    to_version: int
    changes: list[Change]
    text_diff: str


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    return {prefix: value}


def structural_diff(old: Policy, new: Policy) -> list[Change]:
    a, b = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    return [Change(k, a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


class PolicyService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        cipher: TenantCipher,
        audit: AuditLog,
        *,
        cache_ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._cipher = cipher
        self._audit = audit
        self._active: TtlCache[str, ActivePolicy] = TtlCache(cache_ttl_s, clock=clock)
        self._cache: dict[tuple[str, int], Policy] = {}
        self._lock = threading.Lock()
        self._default = load_policy_text(preset_text(DEFAULT_PRESET))

    # -- the live path -------------------------------------------------------------------

    def effective(self, tenant_id: str) -> ActivePolicy:
        """The policy the tenant's next request runs under."""
        remembered = self._active.get(tenant_id)
        if remembered is not None:
            return remembered
        generation = self._active.generation
        active = self._load_active(tenant_id)
        self._active.put(tenant_id, active, generation)
        return active

    def remembered(self, tenant_id: str) -> ActivePolicy | None:
        """:meth:`effective` from memory alone (None: call ``effective``); safe on an event loop."""
        return self._active.get(tenant_id)

    def forget(self, tenant_id: str | None = None) -> None:
        """Re-read the tenant's (None: every tenant's) active policy on its next request."""
        if tenant_id is None:
            self._active.clear()
        else:
            self._active.discard(tenant_id)

    def _load_active(self, tenant_id: str) -> ActivePolicy:
        with self._sessions() as session:
            active = session.scalar(select(TenantPolicy.active_version).where(TenantPolicy.tenant_id == tenant_id))
            if active is None:
                return ActivePolicy(None, self._default)
            with self._lock:
                cached = self._cache.get((tenant_id, active))
            if cached is not None:
                return ActivePolicy(active, cached)
            row = self._row(session, tenant_id, active)
            policy = load_policy_text(self._cipher.open_text(tenant_id, _DOC, str(active), row.document_sealed))
        with self._lock:
            self._cache[(tenant_id, active)] = policy
        return ActivePolicy(active, policy)

    def retention_days(self, tenant_id: str | None) -> int | None:
        """How long a tenant's audit entries are kept (the audit purge asks this); entries
        about no tenant (operator actions) are kept until an operator purges them explicitly."""
        if tenant_id is None:
            return None
        return self.effective(tenant_id).policy.retention.audit_days

    # -- administration ------------------------------------------------------------------

    def apply(self, principal: Principal, tenant: str, document: str, comment: str) -> VersionView:
        """Validate and store a new immutable version, then make it active."""
        principal.require(*_WRITERS)
        load_policy_text(document)  # raises PolicyError listing every problem; nothing is stored
        return self._store(principal, tenant, document, comment, "policy.apply")

    def rollback(self, principal: Principal, tenant: str, version: int, comment: str = "") -> VersionView:
        """Re-apply an earlier version's document as a new version (history stays linear)."""
        principal.require(*_WRITERS)
        old = self.get(principal, tenant, version)
        load_policy_text(old.document)  # presets may have changed since; never activate a broken policy
        return self._store(
            principal, tenant, old.document, comment or f"rollback to version {version}", "policy.rollback"
        )

    def history(
        self, principal: Principal, tenant: str, *, cursor: str | None = None, limit: int = DEFAULT_PAGE
    ) -> Page[VersionView]:
        """The tenant's policy versions, oldest first, a page at a time."""
        principal.require(*_READERS)
        check_limit(limit)
        with self._sessions() as session:
            t = find_tenant(session, principal, tenant)
            active = session.scalar(select(TenantPolicy.active_version).where(TenantPolicy.tenant_id == t.id))
            query = select(PolicyVersion).where(PolicyVersion.tenant_id == t.id)
            if cursor is not None:
                query = query.where(PolicyVersion.version > decode_cursor(_CURSOR_TAG, cursor, integer_key))
            rows = list(session.scalars(query.order_by(PolicyVersion.version).limit(limit + 1)))
            items = [self._view(t.id, t.slug, r, active) for r in rows[:limit]]
        return Page(items, encode_cursor(_CURSOR_TAG, str(items[-1].version)) if len(rows) > limit else None)

    def get(self, principal: Principal, tenant: str, version: int) -> VersionDocument:
        principal.require(*_READERS)
        with self._sessions() as session:
            t = find_tenant(session, principal, tenant)
            active = session.scalar(select(TenantPolicy.active_version).where(TenantPolicy.tenant_id == t.id))
            row = self._row(session, t.id, version)
            doc = self._cipher.open_text(t.id, _DOC, str(version), row.document_sealed)
            return VersionDocument(self._view(t.id, t.slug, row, active), doc)

    def diff(self, principal: Principal, tenant: str, v1: int, v2: int) -> PolicyDiff:
        a, b = self.get(principal, tenant, v1), self.get(principal, tenant, v2)
        text = "".join(
            difflib.unified_diff(
                a.document.splitlines(keepends=True),
                b.document.splitlines(keepends=True),
                fromfile=f"version {v1}",
                tofile=f"version {v2}",
            )
        )
        changes = structural_diff(load_policy_text(a.document), load_policy_text(b.document))
        return PolicyDiff(a.view.tenant, v1, v2, changes, text)

    # -- internals -----------------------------------------------------------------------

    def _digest(self, tenant_id: str, document: str) -> str:
        """Keyed, so a database dump cannot confirm a guessed document; equal documents of one
        tenant still get equal digests."""
        key = self._cipher.derived_key(tenant_id, "policy-digest")
        return hmac.new(key, document.encode("utf-8"), hashlib.sha256).hexdigest()

    def _row(self, session: Session, tenant_id: str, version: int) -> PolicyVersion:
        row = session.scalar(
            select(PolicyVersion).where(PolicyVersion.tenant_id == tenant_id, PolicyVersion.version == version)
        )
        if row is None:
            raise NotFound(f"no policy version {version}")
        return row

    def _view(self, tenant_id: str, slug: str, row: PolicyVersion, active: int | None) -> VersionView:
        comment = self._cipher.open_text(tenant_id, _COMMENT, str(row.version), row.comment_sealed)
        return VersionView(
            slug, row.version, row.author, comment, row.content_hash, row.created_at, row.version == active
        )

    def _store(self, principal: Principal, tenant: str, document: str, comment: str, action: str) -> VersionView:
        if len(comment) > 2000:
            raise InvalidInput("comment must be at most 2000 characters")
        try:
            with transaction(self._sessions) as session:
                t = find_tenant(session, principal, tenant)
                version = (
                    session.scalar(select(func.max(PolicyVersion.version)).where(PolicyVersion.tenant_id == t.id)) or 0
                ) + 1
                row = PolicyVersion(
                    tenant_id=t.id,
                    version=version,
                    document_sealed=self._cipher.seal_text(t.id, _DOC, str(version), document),
                    comment_sealed=self._cipher.seal_text(t.id, _COMMENT, str(version), comment),
                    content_hash=self._digest(t.id, document),
                    author=principal.key_id or "local-operator",
                )
                session.add(row)
                pointer = session.get(TenantPolicy, t.id)
                if pointer is None:
                    session.add(TenantPolicy(tenant_id=t.id, active_version=version))
                else:
                    pointer.active_version = version
                    pointer.updated_at = utcnow()
                session.flush()
                policy = load_policy_text(document)
                self._audit.record(
                    action,
                    actor=principal,
                    tenant_id=t.id,
                    object=f"policy:{version}",
                    policy_version=version,
                    facts={
                        "anonymizes": policy.anonymizes_anything,
                        "acknowledged_no_anonymization": policy.acknowledge_no_anonymization,
                    },
                    session=session,
                )
                view = self._view(t.id, t.slug, row, version)
            self.forget(t.id)
            return view
        except DbIntegrityError:
            raise Conflict("another policy change was applied at the same time; retry") from None
