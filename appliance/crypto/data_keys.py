"""Data keys (DEKs): created per tenant (or for the system) and purpose, versioned, stored
only wrapped by the master key, unwrapped on demand and cached in memory.

Random 96-bit GCM nonces are safe for about 2**32 messages per key; each process reserves
encryption counts in blocks and a new version is started well before that limit.

A reserved block is re-checked after ``budget_ttl_s`` seconds (a read: it takes no write
lock), so once a tenant rotation retires a version every process stops sealing with it
within that time; the rotation waits longer than that (its grace period) before it destroys
a retired version.

Reserving a block is a short write transaction on a connection of its own. On SQLite a
caller that seals inside its own write transaction must therefore warm the key first
(``active()`` before the first write), or the reservation waits on the caller's lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from appliance.crypto.aead import context
from appliance.crypto.keyring import MasterKeyring, new_key
from appliance.db.base import utcnow
from appliance.db.models import DataKey
from appliance.errors import KeyUnavailable

SYSTEM = "system"
GCM_MESSAGE_LIMIT = 2**31  # half the NIST SP 800-38D bound for random nonces
_RESERVE_BLOCK = 4096
_RESERVE_ATTEMPTS = 3
BUDGET_TTL_S = 30.0


@dataclass(frozen=True)
class ActiveKey:
    version: int
    key: bytes


def wrap_context(scope: str, purpose: str, version: int) -> bytes:
    """Associated data of a wrapped DEK: a wrapped key copied to another row fails to unwrap."""
    return context("data-key", scope, purpose, str(version))


_wrap_context = wrap_context


class DataKeyService:
    """Owns every DEK. Thread-safe; one instance per process."""

    def __init__(
        self, keyring: MasterKeyring, sessions: sessionmaker[Session], *, budget_ttl_s: float = BUDGET_TTL_S
    ) -> None:
        self._keyring = keyring
        self._sessions = sessions
        self._budget_ttl_s = budget_ttl_s
        self._cache: dict[tuple[str, str, int], bytes] = {}
        self._budget: dict[tuple[str, str], tuple[int, int, float]] = {}  # -> (version, left, expires)
        self._lock = threading.RLock()  # the dictionaries above; never held across database work
        self._reserving: dict[tuple[str, str], threading.Lock] = {}  # one reservation at a time per key

    @property
    def budget_ttl_s(self) -> float:
        """How long a process may keep sealing with a version after it was retired."""
        return self._budget_ttl_s

    @property
    def keyring(self) -> MasterKeyring:
        return self._keyring

    def create(self, session: Session, scope: str, purpose: str, tenant_id: str | None) -> int:
        """Start a new version for (scope, purpose) inside the caller's transaction."""
        latest = session.scalar(
            select(func.max(DataKey.version)).where(DataKey.scope == scope, DataKey.purpose == purpose)
        )
        version = (latest or 0) + 1
        session.execute(
            update(DataKey)
            .where(DataKey.scope == scope, DataKey.purpose == purpose, DataKey.retired_at.is_(None))
            .values(retired_at=utcnow())
        )
        kek_id, wrapped = self._keyring.wrap(new_key(), _wrap_context(scope, purpose, version))
        session.add(
            DataKey(scope=scope, tenant_id=tenant_id, purpose=purpose, version=version, kek_id=kek_id, wrapped=wrapped)
        )
        session.flush()
        with self._lock:
            self._budget.pop((scope, purpose), None)  # this process moves to the new version at once
        return version

    def key(self, scope: str, purpose: str, version: int) -> bytes:
        """The unwrapped key of one version; KeyUnavailable if it was destroyed."""
        ident = (scope, purpose, version)
        with self._lock:
            cached = self._cache.get(ident)
        if cached is not None:
            return cached
        with self._sessions() as session:
            row = session.scalar(
                select(DataKey).where(DataKey.scope == scope, DataKey.purpose == purpose, DataKey.version == version)
            )
            if row is None:
                raise KeyUnavailable("the data key for this record no longer exists")
            key = self._keyring.unwrap(row.kek_id, row.wrapped, _wrap_context(scope, purpose, version))
        with self._lock:
            self._cache[ident] = key
        return key

    def active(self, scope: str, purpose: str, *, tenant_id: str | None = None) -> ActiveKey:
        """The version new encryptions use, reserving nonce budget and rotating at the limit.

        The lock guards the in-memory budget only and is never held across database work: a
        thread that holds the database's write lock (an audit append) may need a key from this
        service meanwhile, and a reservation waiting for that write lock under this lock starved
        it (a soak stalled for two minutes on SQLite). Reservations for one key take turns on a
        lock of their own, which no key lookup takes."""
        version = self._take(scope, purpose)
        if version is None:
            version = self._still_active(scope, purpose)
        if version is None:
            with self._reservation(scope, purpose):
                version = self._take(scope, purpose)  # another thread may have just reserved
                if version is None:
                    version = self._reserve(scope, purpose, tenant_id)
                    with self._lock:
                        expires = time.monotonic() + self._budget_ttl_s
                        self._budget[(scope, purpose)] = (version, _RESERVE_BLOCK - 1, expires)
        return ActiveKey(version, self.key(scope, purpose, version))

    def _reservation(self, scope: str, purpose: str) -> threading.Lock:
        """The lock that lets one thread at a time reserve for (scope, purpose). Key lookups
        never take it, so a thread waiting in a reservation holds up no lookup."""
        with self._lock:
            return self._reserving.setdefault((scope, purpose), threading.Lock())

    def _take(self, scope: str, purpose: str) -> int | None:
        """One nonce of the reserved budget while it is fresh, else None."""
        with self._lock:
            version, left, expires = self._budget.get((scope, purpose), (0, 0, 0.0))
            if left > 0 and time.monotonic() < expires:
                self._budget[(scope, purpose)] = (version, left - 1, expires)
                return version
        return None

    def _still_active(self, scope: str, purpose: str) -> int | None:
        """Past the budget's TTL, a read (no write lock) confirms the version is still active."""
        with self._lock:
            version, left, _ = self._budget.get((scope, purpose), (0, 0, 0.0))
        if left <= 0 or self._active_version(scope, purpose) != version:
            return None
        with self._lock:
            current = self._budget.get((scope, purpose))
            if current is None or current[0] != version or current[1] <= 0:
                return None
            self._budget[(scope, purpose)] = (version, current[1] - 1, time.monotonic() + self._budget_ttl_s)
        return version

    def prepare(self, scope: str, purpose: str, n: int = 1, *, tenant_id: str | None = None) -> None:
        """Make sure the next ``n`` calls to :meth:`active` need no reservation (and, for a while,
        no database access at all). Call it before a SQLite write transaction that seals."""
        with self._lock:
            _, left, expires = self._budget.get((scope, purpose), (0, 0, 0.0))
            if left >= n and time.monotonic() < expires:
                return
        blocks = max(1, -(-n // _RESERVE_BLOCK))
        with self._reservation(scope, purpose):  # not under self._lock, as in active()
            with self._lock:
                _, left, expires = self._budget.get((scope, purpose), (0, 0, 0.0))
                if left >= n and time.monotonic() < expires:
                    return
            version = self._reserve(scope, purpose, tenant_id, blocks=blocks)
            with self._lock:
                expires = time.monotonic() + self._budget_ttl_s
                self._budget[(scope, purpose)] = (version, blocks * _RESERVE_BLOCK, expires)

    def _active_version(self, scope: str, purpose: str) -> int | None:
        with self._sessions() as session:
            return session.scalar(
                select(DataKey.version).where(
                    DataKey.scope == scope, DataKey.purpose == purpose, DataKey.retired_at.is_(None)
                )
            )

    def _reserve(self, scope: str, purpose: str, tenant_id: str | None, blocks: int = 1) -> int:
        """Count ``blocks`` nonce blocks against the active version (a new one at the limit).
        Another process creating the same first version at the same moment wins the unique
        constraint; the reservation then counts against the version it created."""
        for attempt in range(_RESERVE_ATTEMPTS):
            try:
                return self._reserve_once(scope, purpose, tenant_id, blocks)
            except DbIntegrityError:
                if attempt == _RESERVE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _reserve_once(self, scope: str, purpose: str, tenant_id: str | None, blocks: int) -> int:
        with self._sessions() as session, session.begin():
            row = session.scalar(
                select(DataKey)
                .where(DataKey.scope == scope, DataKey.purpose == purpose, DataKey.retired_at.is_(None))
                .with_for_update()
            )
            if row is None or row.encryptions + blocks * _RESERVE_BLOCK > GCM_MESSAGE_LIMIT:
                if scope != SYSTEM and tenant_id is None:
                    tenant_id = scope
                version = self.create(session, scope, purpose, tenant_id)
                row = session.scalar(
                    select(DataKey).where(
                        DataKey.scope == scope, DataKey.purpose == purpose, DataKey.version == version
                    )
                )
                assert row is not None
            row.encryptions += blocks * _RESERVE_BLOCK
            return row.version

    def rewrap(self, session: Session, row: DataKey, new_ring: MasterKeyring) -> bool:
        """Re-wrap one DEK under ``new_ring.current`` in the caller's transaction.

        ``new_ring`` must still hold the KEK that wrapped the row (as current or previous).
        Returns False when the row is already on the new KEK, so a re-run skips it.
        """
        if row.kek_id == new_ring.current_id:
            return False
        ctx = wrap_context(row.scope, row.purpose, row.version)
        dek = new_ring.unwrap(row.kek_id, row.wrapped, ctx)
        row.kek_id, row.wrapped = new_ring.wrap(dek, ctx)
        session.flush()
        return True

    def destroy_version(self, session: Session, scope: str, purpose: str, version: int) -> bool:
        """Destroy one retired version (never the active one); its ciphertexts become unreadable."""
        result = session.execute(
            delete(DataKey).where(
                DataKey.scope == scope,
                DataKey.purpose == purpose,
                DataKey.version == version,
                DataKey.retired_at.is_not(None),
            )
        )
        with self._lock:
            self._cache.pop((scope, purpose, version), None)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def destroy_scope(self, session: Session, scope: str) -> int:
        """Crypto-shred: delete every key of a scope; its ciphertexts become unreadable."""
        result = session.execute(delete(DataKey).where(DataKey.scope == scope))
        self.forget(scope)
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def forget(self, scope: str) -> None:
        with self._lock:
            for cached in [k for k in self._cache if k[0] == scope]:
                del self._cache[cached]
            for budget in [k for k in self._budget if k[0] == scope]:
                del self._budget[budget]
