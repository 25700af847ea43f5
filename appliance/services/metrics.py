"""Prometheus metrics for the privacy path, models, jobs, keys, the audit trail and process memory.

All live in prometheus_client's default registry, which ``/metrics`` serves (next to the
HTTP metrics Litestar's plugin adds under the same ``appliance_`` prefix). Labels carry
types, names and states only: never tenant content, PII, key ids or key material. Tenant ids
are deliberately not labels either (unbounded cardinality, and a per-tenant traffic profile
is itself sensitive); per-tenant questions are answered from the audit trail.

Callers import the objects and call ``.labels(...).inc()`` / ``.observe()``; see
``docs/audit.md`` for the list.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from appliance.db.base import utcnow
from appliance.db.models import DataKey

# The privacy path -------------------------------------------------------------------------
ENTITIES_DETECTED = Counter(
    "appliance_privacy_entities_detected_total",
    "PII entities detected in requests and responses, by entity type.",
    ["entity_type", "direction"],  # direction: ingress | egress
)
TRANSFORMS_APPLIED = Counter(
    "appliance_privacy_transforms_total",
    "Policy actions applied to detected entities.",
    ["entity_type", "action"],  # action: redact | mask | replace | hash | pseudonymize | block
)
BLOCKED_REQUESTS = Counter(
    "appliance_privacy_blocked_requests_total",
    "Requests refused because the policy blocks an entity type they contained.",
    ["endpoint"],
)
PSEUDONYMS_RESTORED = Counter(
    "appliance_privacy_pseudonyms_restored_total",
    "Pseudonym tokens in model output restored to their original values for the caller.",
)

# Models ------------------------------------------------------------------------------------
MODEL_LATENCY = Histogram(
    "appliance_model_latency_seconds",
    "Wall time of one model call (queueing included).",
    ["model", "kind"],  # kind: chat | embedding | classifier | upstream
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
MODEL_TOKENS = Counter(
    "appliance_model_tokens_total",
    "Tokens processed by models.",
    ["model", "direction"],  # direction: prompt | completion
)

# Fine-tuning jobs -----------------------------------------------------------------------------
JOB_TRANSITIONS = Counter(
    "appliance_job_transitions_total",
    "Fine-tuning job state changes, by the state entered.",
    ["state"],  # queued | running | succeeded | failed | cancelled
)
JOBS = Gauge(
    "appliance_jobs",
    "Fine-tuning jobs currently in each state (set by the worker from the job table).",
    ["state"],
)

# Audit trail -------------------------------------------------------------------------------------
AUDIT_ENTRIES = Counter("appliance_audit_entries_total", "Audit entries written.")
AUDIT_WRITE_FAILURES = Counter(
    "appliance_audit_write_failures_total",
    "Audit entries that could not be written (the action they described failed with 503).",
)
AUDIT_VERIFY_FAILURES = Counter(
    "appliance_audit_verify_failures_total", "Audit verifications that found a broken chain."
)

# Batching across concurrent requests -----------------------------------------------------------
BATCH_SIZE = Histogram(
    "appliance_batch_size",
    "Requests served by one pass of a batching stage (privacy: one detection pass; audit: one commit).",
    ["stage"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


class KeyAgeCollector(Collector):
    """Reads ``data_keys.created_at`` at scrape time: the age of the oldest active (not retired)
    key per scope kind and purpose, and how many keys are active. No key material is read."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def describe(self) -> Iterator[Metric]:
        return iter(())  # values depend on the database; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "appliance_data_key_age_seconds",
            "Age of the oldest active data key, by scope kind (system or tenant) and purpose.",
            labels=["scope", "purpose"],
        )
        count = GaugeMetricFamily(
            "appliance_data_keys_active", "Active data keys, by scope kind and purpose.", labels=["scope", "purpose"]
        )
        try:
            with self._sessions() as session:
                rows = session.execute(
                    select(DataKey.scope, DataKey.purpose, DataKey.created_at).where(DataKey.retired_at.is_(None))
                ).all()
        except SQLAlchemyError:
            return  # a scrape never fails because the database is away; other metrics still show
        now = utcnow()
        oldest: dict[tuple[str, str], datetime] = {}
        counts: dict[tuple[str, str], int] = {}
        for scope, purpose, created_at in rows:
            ident = ("system" if scope == "system" else "tenant", purpose)
            counts[ident] = counts.get(ident, 0) + 1
            if ident not in oldest or created_at < oldest[ident]:
                oldest[ident] = created_at
        for ident, created_at in sorted(oldest.items()):
            age.add_metric(list(ident), max(0.0, (now - created_at).total_seconds()))
            count.add_metric(list(ident), float(counts[ident]))
        yield age
        yield count


_collector_lock = threading.Lock()
_installed: list[KeyAgeCollector] = []


def install_key_age_collector(sessions: sessionmaker[Session]) -> KeyAgeCollector:
    """Register the key-age collector for this process's database, replacing an earlier one
    (a process serves one database; tests build several in turn)."""
    collector = KeyAgeCollector(sessions)
    with _collector_lock:
        while _installed:
            REGISTRY.unregister(_installed.pop())
        REGISTRY.register(collector)
        _installed.append(collector)
    return collector


# Process memory by owner ---------------------------------------------------------------------
# RSS alone cannot tell a leak from caches that fill up to a bound or from free memory that
# malloc keeps. These gauges split it: SQLite's own heap (its page caches, schema and
# statements: bounded per connection), glibc malloc's memory in use and free-but-held (the
# latter is fragmentation, not a leak), and by difference what lies outside malloc.


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33 and later): ten ``size_t`` fields."""

    _FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS.split()]


@dataclass(frozen=True)
class SqliteMemory:
    used: int
    highwater: int


@dataclass(frozen=True)
class MallocMemory:
    in_use: int
    free: int
    arena: int


def stdlib_sqlite_library() -> str | None:
    """The file of the stdlib's ``_sqlite3`` extension module. Loading it through ctypes and
    looking up ``sqlite3_*`` there finds the SQLite that module really uses: the symbol search
    of a dlopen handle covers the module and the libraries it is linked against (Debian's
    ``libsqlite3.so.0``), and reopening a loaded library returns the loaded instance, so the
    counters read are the live ones. A copy of SQLite linked into the module with its symbols
    hidden is not found (then there are no SQLite samples); ``find_library("sqlite3")`` is
    deliberately not tried, as it could load a second, idle SQLite and report its zeros."""
    spec = importlib.util.find_spec("_sqlite3")
    return spec.origin if spec is not None and spec.origin else None


def sqlite_memory_reader(library: str | None) -> Callable[[], SqliteMemory] | None:
    """A reader of ``sqlite3_memory_used()`` and ``sqlite3_memory_highwater(0)`` in ``library``
    (a path), or None when it is None, does not load or lacks the functions. Both count every
    connection in the process (SQLite's memory statistics are global). They read 0 when SQLite
    was built with ``SQLITE_DEFAULT_MEMSTATUS=0``; Debian's is not."""
    if library is None:
        return None
    try:
        lib = ctypes.CDLL(library)
        used, highwater = lib.sqlite3_memory_used, lib.sqlite3_memory_highwater
    except (OSError, AttributeError):
        return None
    used.restype, used.argtypes = ctypes.c_int64, []
    highwater.restype, highwater.argtypes = ctypes.c_int64, [ctypes.c_int]

    def read() -> SqliteMemory:
        return SqliteMemory(used=int(used()), highwater=int(highwater(0)))

    return read


def malloc_memory_reader(library: str | None = None) -> Callable[[], MallocMemory] | None:
    """A reader of glibc's ``mallinfo2()``, looked up in ``library`` (a path; None: the
    process's own symbols, where the running C library is), or None where it is missing (musl,
    glibc before 2.33, another C library).

    ``mallinfo2`` sums over all of malloc's arenas, the threads' arenas too (the man page's
    note that only the main arena is counted is out of date: on glibc 2.36 a thread that
    allocated 20 MiB raised ``uordblks`` by 20 MiB), and ``hblkhd`` counts the blocks served by
    their own mmap. Reported: in use (``uordblks + hblkhd``), free but held by malloc
    (``fordblks``: free chunks, fast bins and the arenas' unused tops; an upper bound on the
    resident part, since pages never touched or given back with ``MADV_DONTNEED`` are not in
    RSS), and everything malloc took from the system (``arena + hblkhd``, the sum of the two).
    Memory not from malloc is in none of them: Python's small objects (pymalloc maps its own
    arenas), thread stacks, memory-mapped model files, allocators that map memory themselves.
    The call takes each arena's lock briefly."""
    try:
        mallinfo2 = ctypes.CDLL(library).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype, mallinfo2.argtypes = _MallInfo2, []

    def read() -> MallocMemory:
        info = mallinfo2()
        return MallocMemory(in_use=info.uordblks + info.hblkhd, free=info.fordblks, arena=info.arena + info.hblkhd)

    return read


class ProcessMemoryCollector(Collector):
    """Process memory by owner, read at scrape time: SQLite's heap (part of malloc's in-use
    memory: SQLite allocates with malloc) and glibc malloc's in-use, free and total memory.
    A reader that is None (the library or function is missing) gives no samples; the others
    still show."""

    def __init__(
        self,
        sqlite: Callable[[], SqliteMemory] | None,
        malloc: Callable[[], MallocMemory] | None,
    ) -> None:
        self._sqlite = sqlite
        self._malloc = malloc

    @classmethod
    def for_this_process(cls) -> ProcessMemoryCollector:
        return cls(sqlite_memory_reader(stdlib_sqlite_library()), malloc_memory_reader(None))

    def describe(self) -> Iterator[Metric]:
        return iter(())  # which families exist depends on the libraries found

    def collect(self) -> Iterator[Metric]:
        if self._sqlite is not None:
            sqlite = self._sqlite()
            yield GaugeMetricFamily(
                "appliance_sqlite_heap_bytes",
                "Memory SQLite holds in this process (page caches, schemas, statements; all connections).",
                value=float(sqlite.used),
            )
            yield GaugeMetricFamily(
                "appliance_sqlite_heap_highwater_bytes",
                "The most memory SQLite has held at once in this process since it started.",
                value=float(sqlite.highwater),
            )
        if self._malloc is not None:
            malloc = self._malloc()
            yield GaugeMetricFamily(
                "appliance_malloc_in_use_bytes",
                "Memory allocated through glibc malloc and not yet freed (all arenas and mmapped blocks).",
                value=float(malloc.in_use),
            )
            yield GaugeMetricFamily(
                "appliance_malloc_free_bytes",
                "Memory glibc malloc holds but has free (fragmentation and retained free space, all arenas).",
                value=float(malloc.free),
            )
            yield GaugeMetricFamily(
                "appliance_malloc_arena_bytes",
                "Memory glibc malloc has taken from the system: in use plus free.",
                value=float(malloc.arena),
            )


PROCESS_MEMORY = ProcessMemoryCollector.for_this_process()
REGISTRY.register(PROCESS_MEMORY)
