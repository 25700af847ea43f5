"""The pseudonym vault: ``<PERSON_1>`` <-> the original value, per tenant and scope.

What a row holds, and why nothing in it is readable without the tenant's keys:
- ``scope_digest`` and ``value_digest`` are HMAC-SHA256 under the tenant's ``pii-vault``
  key, so lookups work by equality without storing the scope name or the value;
- ``value_sealed`` is the original, sealed by :class:`TenantCipher` (kind
  ``pseudonyms.value``, row ``<scope_digest hex>:<token>``), so a sealed value moved to
  another row, scope or tenant fails to open;
- ``token`` and ``entity_type`` are metadata ("PERSON", "<PERSON_3>").

Values are matched after folding case and whitespace ("Anna Berg" and "anna  berg" get
one token); the first spelling seen is the one restored.

Numbering is per scope and type and safe under concurrency on SQLite and PostgreSQL: a
writer picks the next free number, the unique constraints reject a clash, and the loser
rolls back and retries, then finds the winner's row. Rows expire ``ttl`` after their last
use (each use extends them); expired rows are ignored at once and removed by
:meth:`PseudonymVault.purge_expired`.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from appliance.crypto.data_keys import DataKeyService
from appliance.crypto.records import TenantCipher
from appliance.db.base import utcnow
from appliance.db.models import Pseudonym
from appliance.errors import Conflict

VAULT_PURPOSE = "pii-vault"
SEALED_KIND = "pseudonyms.value"
TOKEN_RE = re.compile(r"<([A-Z][A-Z0-9_]{0,63})_([1-9][0-9]{0,8})>")
_RETRIES = 20


class _Stale(Exception):
    """A row read outside the write transaction changed before the write."""


def token(entity_type: str, n: int) -> str:
    return f"<{entity_type}_{n}>"


def _fold(value: str) -> str:
    return " ".join(value.casefold().split())


class PseudonymVault:
    """Thread-safe; one per process. ``clock`` is a seam for expiry tests."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        data_keys: DataKeyService,
        cipher: TenantCipher,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._keys = data_keys
        self._cipher = cipher
        self._clock = clock

    # -- digests --------------------------------------------------------------------------

    def _key(self, tenant_id: str) -> bytes:
        # The current version. Rotating it ends every open scope (old digests no longer
        # match), like expiry would; scopes live hours and rotations are rare.
        return self._keys.active(tenant_id, VAULT_PURPOSE, tenant_id=tenant_id).key

    @staticmethod
    def _mac(key: bytes, *parts: str) -> bytes:
        return hmac.new(key, "\x00".join(parts).encode("utf-8"), hashlib.sha256).digest()

    def scope_digest(self, tenant_id: str, scope: str) -> bytes:
        return self._mac(self._key(tenant_id), "scope", scope)

    # -- writing ----------------------------------------------------------------------------

    def tokens(
        self, tenant_id: str, scope: str, items: Sequence[tuple[str, str]], ttl: timedelta
    ) -> dict[tuple[str, str], str]:
        """The token for each (entity_type, value), allocating new ones as needed, in one
        transaction. Retries on a unique-constraint clash with a concurrent writer."""
        key = self._key(tenant_id)
        scope_d = self._mac(key, "scope", scope)
        digests = {(t, v): self._mac(key, "value", t, _fold(v)) for t, v in items}
        for attempt in range(_RETRIES):
            try:
                return self._allocate(tenant_id, scope_d, digests, ttl)
            except (DbIntegrityError, _Stale):
                continue  # someone else took a number or stored the same value: read again
            except OperationalError:
                # SQLite refuses to upgrade a reader to a writer while another writes
                # ("database is locked"); back off briefly and start over.
                time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))  # noqa: S311 (jitter, not crypto)
        raise Conflict("could not allocate pseudonyms under concurrent load; retry the request")

    def _allocate(
        self, tenant_id: str, scope_d: bytes, digests: Mapping[tuple[str, str], bytes], ttl: timedelta
    ) -> dict[tuple[str, str], str]:
        """Optimistic: read the scope, choose numbers and seal outside any transaction
        (sealing may itself touch the key table, which on SQLite must not wait on our own
        write lock), then write in one short transaction the unique constraints guard."""
        now = self._clock()
        expires = now + ttl
        with self._sessions() as session:
            rows = session.execute(
                select(Pseudonym.entity_type, Pseudonym.token, Pseudonym.value_digest).where(
                    Pseudonym.tenant_id == tenant_id,
                    Pseudonym.scope_digest == scope_d,
                    Pseudonym.expires_at > now,
                )
            ).all()
        by_digest = {r.value_digest: r.token for r in rows}
        used: dict[str, int] = {}
        for r in rows:
            m = TOKEN_RE.fullmatch(r.token)
            if m:
                used[r.entity_type] = max(used.get(r.entity_type, 0), int(m.group(2)))
        out: dict[tuple[str, str], str] = {}
        seen: set[bytes] = set()
        new: list[Pseudonym] = []
        for (etype, value), digest in sorted(digests.items()):
            existing = by_digest.get(digest)
            if existing is not None:
                out[(etype, value)] = existing
                seen.add(digest)
                continue
            n = used.get(etype, 0) + 1
            used[etype] = n
            tok = token(etype, n)
            by_digest[digest] = tok
            out[(etype, value)] = tok
            new.append(
                Pseudonym(
                    tenant_id=tenant_id,
                    scope_digest=scope_d,
                    value_digest=digest,
                    entity_type=etype,
                    token=tok,
                    value_sealed=self._cipher.seal_text(tenant_id, SEALED_KIND, f"{scope_d.hex()}:{tok}", value),
                    created_at=now,
                    expires_at=expires,
                )
            )
        with self._sessions() as session, session.begin():
            if new:
                session.execute(
                    delete(Pseudonym).where(
                        Pseudonym.tenant_id == tenant_id,
                        Pseudonym.scope_digest == scope_d,
                        Pseudonym.expires_at <= now,
                    )
                )
                session.add_all(new)
            if seen:  # sliding expiry: a scope in use stays restorable
                result = session.execute(
                    update(Pseudonym)
                    .where(
                        Pseudonym.tenant_id == tenant_id,
                        Pseudonym.scope_digest == scope_d,
                        Pseudonym.value_digest.in_(seen),
                        Pseudonym.expires_at > now,
                    )
                    .values(expires_at=expires)
                )
                if int(result.rowcount or 0) != len(seen):  # type: ignore[attr-defined]
                    raise _Stale  # expired or purged since we read: start over
            session.flush()
        return out

    # -- reading ----------------------------------------------------------------------------

    def originals(self, tenant_id: str, scope: str, tokens: Iterable[str]) -> dict[str, str]:
        """Original values of the given tokens that exist and have not expired in this
        scope; anything else (unknown, expired, forged, another scope's) is absent."""
        wanted = sorted({t for t in tokens if TOKEN_RE.fullmatch(t)})
        if not wanted:
            return {}
        key = self._key(tenant_id)
        scope_d = self._mac(key, "scope", scope)
        with self._sessions() as session:
            rows = session.execute(
                select(Pseudonym.token, Pseudonym.value_sealed).where(
                    Pseudonym.tenant_id == tenant_id,
                    Pseudonym.scope_digest == scope_d,
                    Pseudonym.token.in_(wanted),
                    Pseudonym.expires_at > self._clock(),
                )
            ).all()
        return {
            r.token: self._cipher.open_text(tenant_id, SEALED_KIND, f"{scope_d.hex()}:{r.token}", r.value_sealed)
            for r in rows
        }

    # -- housekeeping -------------------------------------------------------------------------

    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete every expired row of every tenant; returns how many. Run periodically."""
        with self._sessions() as session, session.begin():
            result = session.execute(delete(Pseudonym).where(Pseudonym.expires_at <= (now or self._clock())))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def forget_scope(self, tenant_id: str, scope: str) -> int:
        """End a conversation early: its pseudonyms can no longer be restored."""
        scope_d = self.scope_digest(tenant_id, scope)
        with self._sessions() as session, session.begin():
            result = session.execute(
                delete(Pseudonym).where(Pseudonym.tenant_id == tenant_id, Pseudonym.scope_digest == scope_d)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
