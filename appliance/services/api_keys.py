"""API keys: random 256-bit secrets shown once, stored as an HMAC under a system data key,
checked in constant time, revocable and optionally expiring.

Token shape: ``apl_<key id>_<secret>``; the key id is public (it names the key in lists
and logs), the secret never leaves the response that created it.

A successful check is remembered for ``cache_ttl_s`` seconds (default 5), keyed by the
SHA-256 of the token, so a busy client costs no database read per request. Revoking a key
or deleting a tenant in this process forgets it at once; a revocation made on another API
node takes effect here within ``cache_ttl_s``. Failures are never cached (each is audited).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session, sessionmaker

from appliance.crypto.data_keys import SYSTEM, DataKeyService
from appliance.db.base import utcnow
from appliance.db.engine import transaction
from appliance.db.models import ApiKey, Tenant
from appliance.errors import AuthenticationFailed, InvalidInput, NotFound, PermissionDenied
from appliance.roles import Role
from appliance.services.audit import AuditLog
from appliance.services.paging import DEFAULT_PAGE, Page, page_by_creation
from appliance.services.principal import Principal
from appliance.services.tenants import find_tenant
from appliance.services.ttl_cache import DEFAULT_TTL_S, TtlCache

PREFIX = "apl"
HASH_PURPOSE = "api-key-hash"
_LAST_USED_RESOLUTION = timedelta(minutes=1)
_TENANT_ROLES = (Role.TENANT_ADMIN, Role.APP)
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")  # the id part of a token we issued
_CURSOR_TAG = "k1"


@dataclass(frozen=True)
class KeyView:
    id: str
    tenant: str | None
    role: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedKey:
    key: KeyView
    api_key: str  # the only time the secret exists outside the caller's hands


def _view(k: ApiKey, slug: str | None) -> KeyView:
    return KeyView(k.id, slug, k.role, k.name, k.created_at, k.expires_at, k.last_used_at, k.revoked_at)


def _parse(token: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or len(parts[2]) != 43:
        return None
    return parts[1], parts[2]


@dataclass(frozen=True)
class _Checked:
    principal: Principal
    expires_at: datetime | None


class ApiKeyService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        data_keys: DataKeyService,
        audit: AuditLog,
        *,
        cache_ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._keys = data_keys
        self._audit = audit
        self._checked: TtlCache[bytes, _Checked] = TtlCache(cache_ttl_s, clock=clock)

    def _digest(self, token: str, version: int) -> bytes:
        key = self._keys.key(SYSTEM, HASH_PURPOSE, version)
        return hmac.new(key, token.encode(), hashlib.sha256).digest()

    def create(
        self,
        principal: Principal,
        *,
        role: Role,
        name: str,
        tenant: str | None = None,
        expires_at: datetime | None = None,
    ) -> IssuedKey:
        principal.require(Role.OPERATOR, Role.TENANT_ADMIN)
        if principal.role is Role.TENANT_ADMIN and role not in _TENANT_ROLES:
            raise PermissionDenied("a tenant admin may only create tenant_admin or app keys")
        if role.is_global and tenant is not None:
            raise InvalidInput(f"role {role.value!r} is global; do not name a tenant")
        if not role.is_global and tenant is None:
            raise InvalidInput(f"role {role.value!r} needs a tenant")
        if expires_at is not None and expires_at <= utcnow():
            raise InvalidInput("expires_at must be in the future")
        if not name.strip() or len(name) > 200:
            raise InvalidInput("name must be 1-200 characters")
        with transaction(self._sessions) as session:
            slug = None
            tenant_id = None
            if tenant is not None:
                t = find_tenant(session, principal, tenant)
                slug, tenant_id = t.slug, t.id
            version = self._keys.active(SYSTEM, HASH_PURPOSE).version
            key_id = secrets.token_hex(8)
            token = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
            row = ApiKey(
                id=key_id,
                tenant_id=tenant_id,
                role=role.value,
                name=name.strip(),
                secret_hash=self._digest(token, version),
                hash_key_version=version,
                created_by=principal.key_id,
                expires_at=expires_at,
            )
            session.add(row)
            session.flush()
            self._audit.record(
                "key.create",
                actor=principal,
                tenant_id=tenant_id,
                object=key_id,
                facts={"role": role.value},
                session=session,
            )
            return IssuedKey(_view(row, slug), token)

    def list(
        self,
        principal: Principal,
        tenant: str | None = None,
        *,
        include_revoked: bool = False,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> Page[KeyView]:
        """Keys of one tenant, or (operator only, tenant=None) the global keys; oldest first.

        Revoked keys stay in the table (the audit trail names them), so a tenant that rotates
        keys often would make an unpaged listing grow for ever: they are left out unless asked
        for, and every listing is paged.
        """
        with self._sessions() as session:
            where: list[ColumnElement[bool]]
            if tenant is None:
                principal.require(Role.OPERATOR)
                where = [ApiKey.tenant_id.is_(None)]
                slug = None
            else:
                principal.require(Role.OPERATOR, Role.TENANT_ADMIN, Role.COMPLIANCE)
                t = find_tenant(session, principal, tenant)
                where, slug = [ApiKey.tenant_id == t.id], t.slug
            if not include_revoked:
                where.append(ApiKey.revoked_at.is_(None))
            rows, next_cursor = page_by_creation(
                session,
                select(ApiKey).where(*where),
                ApiKey.created_at,
                ApiKey.id,
                tag=_CURSOR_TAG,
                cursor=cursor,
                limit=limit,
                ident_pattern=_KEY_ID,
            )
        return Page([_view(k, slug) for k in rows], next_cursor)

    def has_global_key(self, principal: Principal, role: Role) -> bool:
        """Whether a global key of ``role`` was ever issued, revoked ones included."""
        principal.require(Role.OPERATOR)
        with self._sessions() as session:
            found = session.scalar(
                select(ApiKey.id).where(ApiKey.tenant_id.is_(None), ApiKey.role == role.value).limit(1)
            )
        return found is not None

    def revoke(self, principal: Principal, key_id: str, tenant: str | None = None) -> KeyView:
        principal.require(Role.OPERATOR, Role.TENANT_ADMIN)
        with transaction(self._sessions) as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise NotFound("no such key")
            slug = None
            if row.tenant_id is None:
                if principal.role is not Role.OPERATOR or tenant is not None:
                    raise NotFound("no such key")
            else:
                t = session.get(Tenant, row.tenant_id)
                assert t is not None
                if tenant is not None and tenant not in (t.slug, t.id):
                    raise NotFound("no such key")
                try:
                    principal.require_tenant_access(t.id)
                except NotFound:
                    raise NotFound("no such key") from None
                slug = t.slug
            already = row.revoked_at is not None
            if not already:
                row.revoked_at = utcnow()
            self._audit.record(
                "key.revoke",
                actor=principal,
                tenant_id=row.tenant_id,
                object=row.id,
                facts={"already_revoked": already},
                session=session,
            )
            view = _view(row, slug)
        self.forget(key_id=view.id)
        return view

    def forget(self, *, key_id: str | None = None, tenant_id: str | None = None) -> None:
        """Drop remembered checks of one key or of every key of a tenant (both None: all)."""
        if key_id is None and tenant_id is None:
            self._checked.clear()
            return
        self._checked.discard_where(
            lambda _, c: c.principal.key_id == key_id or (tenant_id is not None and c.principal.tenant_id == tenant_id)
        )

    def authenticate(self, token: str) -> Principal:
        """Bearer token -> principal; every failure is the same AuthenticationFailed, and audited."""
        remembered = self.remembered(token)
        if remembered is not None:
            return remembered
        fingerprint = hashlib.sha256(token.encode()).digest()
        parsed = _parse(token)
        generation = self._checked.generation
        outcome = self._check(token, parsed)
        if isinstance(outcome, _Checked):
            self._checked.put(fingerprint, outcome, generation)
            return outcome.principal
        key_id = parsed[0] if parsed and _KEY_ID.fullmatch(parsed[0]) else None
        self._audit.record(
            "auth.failure",
            actor=key_id or "unparseable-key",
            outcome="denied",
            object=key_id,
            facts={"reason": outcome},
        )
        raise AuthenticationFailed("invalid, revoked or expired API key")

    def remembered(self, token: str) -> Principal | None:
        """The principal when this token passed a check within the cache window, else None
        (then call :meth:`authenticate`). Reads memory only, so it may run on an event loop."""
        remembered = self._checked.get(hashlib.sha256(token.encode()).digest())
        if remembered is not None and (remembered.expires_at is None or utcnow() < remembered.expires_at):
            return remembered.principal
        return None

    def principal_of(self, key_id: str) -> Principal:
        """The principal of a key that is still valid (not revoked, not expired, its tenant alive),
        else AuthenticationFailed. For console sessions, which were opened with the key's secret and
        carry only its id: revoking the key ends them too (on other API nodes within ``cache_ttl_s``)."""
        ident = b"id:" + key_id.encode()  # never equal to a 32-byte token fingerprint
        remembered = self._checked.get(ident)
        if remembered is not None and (remembered.expires_at is None or utcnow() < remembered.expires_at):
            return remembered.principal
        generation = self._checked.generation
        with self._sessions() as session:
            row = session.get(ApiKey, key_id) if _KEY_ID.fullmatch(key_id) else None
            if row is None or row.revoked_at is not None:
                raise AuthenticationFailed("the API key of this session was revoked")
            if row.expires_at is not None and row.expires_at <= utcnow():
                raise AuthenticationFailed("the API key of this session has expired")
            slug = None
            if row.tenant_id is not None:
                slug = session.scalar(select(Tenant.slug).where(Tenant.id == row.tenant_id))
                if slug is None:
                    raise AuthenticationFailed("the tenant of this session no longer exists")
            checked = _Checked(
                Principal(key_id=row.id, role=Role(row.role), tenant_id=row.tenant_id, tenant_slug=slug),
                row.expires_at,
            )
        self._checked.put(ident, checked, generation)
        return checked.principal

    def _check(self, token: str, parsed: tuple[str, str] | None) -> _Checked | str:
        """The principal, or why not (a fixed word: malformed, unknown-key, revoked, expired, tenant-gone)."""
        if parsed is None:
            return "malformed"
        with self._sessions() as session:
            row = session.get(ApiKey, parsed[0])
            version = row.hash_key_version if row else self._keys.active(SYSTEM, HASH_PURPOSE).version
            digest = self._digest(token, version)  # computed either way: no timing oracle on ids
            if row is None or not hmac.compare_digest(digest, row.secret_hash):
                return "unknown-key"
            now = utcnow()
            if row.revoked_at is not None:
                return "revoked"
            if row.expires_at is not None and row.expires_at <= now:
                return "expired"
            slug = None
            if row.tenant_id is not None:
                slug = session.scalar(select(Tenant.slug).where(Tenant.id == row.tenant_id))
                if slug is None:
                    return "tenant-gone"
            if row.last_used_at is None or now - row.last_used_at > _LAST_USED_RESOLUTION:
                session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
                session.commit()
            principal = Principal(key_id=row.id, role=Role(row.role), tenant_id=row.tenant_id, tenant_slug=slug)
            return _Checked(principal, row.expires_at)
