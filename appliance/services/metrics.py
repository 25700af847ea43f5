"""Prometheus metrics for the privacy path, models, jobs, keys and the audit trail.

All live in prometheus_client's default registry, which ``/metrics`` serves (next to the
HTTP metrics Litestar's plugin adds under the same ``appliance_`` prefix). Labels carry
types, names and states only: never tenant content, PII, key ids or key material. Tenant ids
are deliberately not labels either (unbounded cardinality, and a per-tenant traffic profile
is itself sensitive); per-tenant questions are answered from the audit trail.

Callers import the objects and call ``.labels(...).inc()`` / ``.observe()``; see
``docs/audit.md`` for the list.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
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
