"""Engines and sessions for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from appliance.db import tenancy
from appliance.errors import StorageFull


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left in free pages
        cur.close()

    return on_connect


SQLITE_POOL = (16, 112)
"""Connections kept, and more allowed under load. SQLite connections are file handles: cheap.
Enough for every worker thread (anyio's 40, the batchers, the audit writer) to hold one and
open a second for a key lookup, so a thread that holds the write lock never waits for a
connection (which stalled every other writer past its busy timeout under a 20-client soak)."""


def make_engine(url: str, *, echo: bool = False, lock_timeout_s: float = 10.0, pool_timeout_s: float = 30.0) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"check_same_thread": False},
            pool_size=SQLITE_POOL[0],
            max_overflow=SQLITE_POOL[1],
            pool_timeout=pool_timeout_s,
        )
        event.listen(engine, "connect", _sqlite_pragmas(round(lock_timeout_s * 1000)))
        return engine
    engine = create_engine(
        url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20, pool_timeout=pool_timeout_s
    )
    tenancy.install(engine)  # each transaction declares its tenant, for row-level security
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


_SQLITE_FULL = 13
_SQLITE_IOERR_WRITE = 778
_PG_DISK_FULL = "53100"


def is_storage_full(exc: BaseException) -> bool:
    """The database refused a write for lack of room: SQLite's SQLITE_FULL (or a write I/O
    error, which is how a file-size limit shows), PostgreSQL's ``disk_full``."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlite_errorcode", None) in (_SQLITE_FULL, _SQLITE_IOERR_WRITE):
        return True
    return getattr(orig, "sqlstate", None) == _PG_DISK_FULL


_BUSY = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED", "55P03", "40P01", "40001"})


def is_busy(exc: BaseException) -> bool:
    """Other writers held the lock past the timeout (SQLite busy or locked, PostgreSQL lock
    timeout, deadlock, serialization failure): nothing was written; a retry may succeed."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlite_errorname", None) or getattr(orig, "sqlstate", None)
    return code in _BUSY


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception. A commit the disk
    has no room for is StorageFull (507); the transaction is rolled back, nothing half-written."""
    try:
        with factory() as session, session.begin():
            yield session
    except OperationalError as exc:
        if is_storage_full(exc):
            raise StorageFull("the database has no room for this write; nothing was stored") from None
        raise
