"""Admin console sessions: an API key exchanged for a short-lived, sealed session cookie.

The cookie is the whole session (nothing is stored server-side), so any API node that shares
the database accepts it: it is the session's id, key id, CSRF token and times, sealed with
AES-256-GCM under a system data key (purpose ``console-session``). Editing it, or moving it to
an appliance with another master key, fails authentication.

Lifetime:
    A session ends ``idle_timeout_s`` after its last request and ``max_age_s`` after sign-in,
    whichever comes first. Requests re-seal the cookie with a new "last seen" time at most once
    a minute (:attr:`Resumed.cookie`). Each request re-checks the API key by id, so revoking
    the key, its expiry or deleting its tenant ends the session (on other nodes within the key
    cache's ``cache_ttl_s``).

Sign-out:
    The browser's cookie is cleared and this process refuses the session id until it would
    have expired anyway. Another API node learns of the sign-out only if the cookie is replayed
    to it, which needs the cookie (HttpOnly, SameSite=Strict): revoke the API key to end every
    session it opened, everywhere.

CSRF:
    Each session carries a random token, handed to the console page by the session endpoint
    and sent back in a header on every state change (synchronizer token: another origin can
    neither read the sealed cookie nor the session response).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from appliance.config import ConsoleSettings
from appliance.crypto import SYSTEM, DataKeyService, context, open_sealed, seal
from appliance.errors import ApplianceError, AuthenticationFailed, PermissionDenied
from appliance.roles import Role
from appliance.services.api_keys import ApiKeyService
from appliance.services.audit import AuditLog
from appliance.services.principal import Principal
from appliance.services.ttl_cache import TtlCache

__all__ = ["CONSOLE_ROLES", "COOKIE_NAME", "CSRF_HEADER", "ConsoleSession", "ConsoleSessions", "Resumed"]

COOKIE_NAME = "appliance_console"
CSRF_HEADER = "x-csrf-token"
CONSOLE_ROLES = (Role.COMPLIANCE, Role.OPERATOR, Role.TENANT_ADMIN)
SESSION_PURPOSE = "console-session"
_AAD = context("console-session", "v1")
_REFRESH_EVERY_S = 60
_MAX_COOKIE_CHARS = 1024  # a sealed session is about 250; anything longer is not ours


@dataclass(frozen=True)
class ConsoleSession:
    session_id: str
    principal: Principal
    csrf_token: str
    issued_at: float
    last_seen: float
    idle_expires_at: float
    expires_at: float


@dataclass(frozen=True)
class Resumed:
    session: ConsoleSession
    cookie: str | None
    """A re-sealed cookie to send back (the last-seen time moved on), or None when unchanged."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ConsoleSessions:
    def __init__(
        self,
        data_keys: DataKeyService,
        api_keys: ApiKeyService,
        audit: AuditLog,
        settings: ConsoleSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = data_keys
        self._api_keys = api_keys
        self._audit = audit
        self._idle = settings.idle_timeout_s
        self._max_age = settings.max_age_s
        self._clock = clock
        self._signed_out: TtlCache[str, bool] = TtlCache(settings.max_age_s, max_entries=100_000, clock=clock)

    @property
    def idle_timeout_s(self) -> int:
        return self._idle

    @property
    def max_age_s(self) -> int:
        return self._max_age

    def sign_in(self, api_key: str) -> tuple[ConsoleSession, str]:
        """Check the key (failures are audited by the key service) and open a session.
        Only compliance, operator and tenant admin keys may sign in; app keys are refused."""
        principal = self._api_keys.authenticate(api_key)
        if principal.role not in CONSOLE_ROLES:
            raise PermissionDenied("only compliance, operator and tenant_admin keys may sign in to the console")
        now = self._clock()
        session = self._session(secrets.token_hex(16), principal, secrets.token_urlsafe(32), now, now)
        self._audit.record(
            "console.sign_in",
            actor=principal,
            tenant_id=principal.tenant_id,
            object=f"session:{session.session_id}",
            facts={"role": principal.role.value},
        )
        return session, self._seal(session)

    def resume(self, cookie: str) -> Resumed:
        """The session a cookie carries, or AuthenticationFailed (tampered, expired, idle,
        signed out, or its key no longer valid)."""
        fields = self._open(cookie)
        try:
            sid, key_id, csrf = str(fields["sid"]), str(fields["kid"]), str(fields["csrf"])
            issued, seen = float(fields["iat"]), float(fields["seen"])
        except (KeyError, TypeError, ValueError):
            raise AuthenticationFailed("the console session is not valid; sign in again") from None
        now = self._clock()
        if now >= issued + self._max_age or now >= seen + self._idle:
            raise AuthenticationFailed("the console session has expired; sign in again")
        if self._signed_out.get(sid):
            raise AuthenticationFailed("the console session was signed out; sign in again")
        principal = self._api_keys.principal_of(key_id)
        if principal.role not in CONSOLE_ROLES:  # cannot happen for keys we let in; never trust it
            raise AuthenticationFailed("the console session is not valid; sign in again")
        session = self._session(sid, principal, csrf, issued, seen)
        if now - seen < min(_REFRESH_EVERY_S, self._idle / 4):
            return Resumed(session, None)
        moved = replace(session, last_seen=now, idle_expires_at=min(now + self._idle, session.expires_at))
        return Resumed(moved, self._seal(moved))

    def check_csrf(self, session: ConsoleSession, token: str | None) -> None:
        if not token or not hmac.compare_digest(token.encode(), session.csrf_token.encode()):
            raise PermissionDenied(
                f"a console request that changes state needs the session's CSRF token in the {CSRF_HEADER} header"
            )

    def sign_out(self, session: ConsoleSession) -> None:
        self._signed_out.put(session.session_id, True)
        self._audit.record(
            "console.sign_out",
            actor=session.principal,
            tenant_id=session.principal.tenant_id,
            object=f"session:{session.session_id}",
        )

    # -- internals -------------------------------------------------------------------------------

    def _session(self, sid: str, principal: Principal, csrf: str, issued: float, seen: float) -> ConsoleSession:
        expires = issued + self._max_age
        return ConsoleSession(sid, principal, csrf, issued, seen, min(seen + self._idle, expires), expires)

    def _seal(self, session: ConsoleSession) -> str:
        assert session.principal.key_id is not None  # sign-in always has a key
        body = {
            "sid": session.session_id,
            "kid": session.principal.key_id,
            "csrf": session.csrf_token,
            "iat": round(session.issued_at, 3),
            "seen": round(session.last_seen, 3),
        }
        active = self._keys.active(SYSTEM, SESSION_PURPOSE)
        raw = json.dumps(body, separators=(",", ":")).encode()
        return _b64(seal(active.key, active.version, raw, _AAD))

    def _open(self, cookie: str) -> dict[str, Any]:
        if not cookie or len(cookie) > _MAX_COOKIE_CHARS:
            raise AuthenticationFailed("the console session is not valid; sign in again")
        try:
            raw = open_sealed(lambda v: self._keys.key(SYSTEM, SESSION_PURPOSE, v), _unb64(cookie), _AAD)
            fields = json.loads(raw)
        except (ApplianceError, binascii.Error, ValueError):
            raise AuthenticationFailed("the console session is not valid; sign in again") from None
        if not isinstance(fields, dict):
            raise AuthenticationFailed("the console session is not valid; sign in again")
        return fields
