"""The privacy-budget ledger's storage: one ``privacy_charges`` row per started job, read
together with the jobs not finished yet, composed by :mod:`appliance.training.budget`.

A job is checked against the budget twice: when it is created (its plan, next to every
other job's charge or plan) and again when a worker starts it (the policy or the other
jobs may have changed meanwhile). Starting opens the job's charge; the worker raises it as
steps run (so a crash still leaves the steps charged) and settles it when the job ends,
also when it was cancelled or failed. Opening and settling are audit entries
(``privacy_budget.charge``). Checks and charges of one tenant are serialized by a lock on
its tenant row, so two jobs created at once cannot both take the last of a budget.

The per-dataset budget is kept by the dataset's content hash, which each charge copies when
it opens (``privacy_charges.dataset_hash``): the same rows uploaded again, under another name
or after the first upload was deleted, find what was spent on them already.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from appliance.db.base import utcnow
from appliance.db.engine import transaction
from appliance.db.models import Dataset, FinetuneJob, PrivacyCharge, Tenant
from appliance.roles import Role
from appliance.services.audit import SYSTEM_ACTOR, AuditLog
from appliance.services.policies import ActivePolicy
from appliance.services.principal import Principal
from appliance.services.tenants import find_tenant
from appliance.training.accounting import epsilon_of
from appliance.training.budget import Caps, Charge, Ledger, Plan
from appliance.training.spec import HistoryEntry

UNFINISHED = ("queued", "running", "cancelling")
READERS = (Role.OPERATOR, Role.COMPLIANCE, Role.TENANT_ADMIN)
AUDIT_ACTION = "privacy_budget.charge"


@dataclass(frozen=True)
class DatasetBudget:
    """One dataset's budget, kept by its content: every upload of the same rows shares it."""

    dataset_id: str
    """The newest upload with this content (or, when all were deleted, the first charged)."""
    name: str | None
    """That upload's name; None once every upload of this content was deleted (what they
    spent stays spent, and counts against a later upload of the same content)."""
    content_hash: str | None
    """The content hash the budget is kept by (None: a charge older than content hashes)."""
    dataset_ids: list[str]
    """Every upload with this content: charged, or stored now."""
    jobs: int
    epsilon_spent: float
    epsilon_reserved: float
    epsilon_summed: float
    limit: float
    remaining: float


@dataclass(frozen=True)
class ChargeView:
    job_id: str
    dataset_id: str
    content_hash: str | None
    state: str
    steps: int
    noise_multiplier: float | None
    sample_rate: float | None
    delta: float
    epsilon: float
    settled: bool
    charged_at: datetime


@dataclass(frozen=True)
class BudgetReport:
    tenant: str
    accountant: str
    delta: float
    period_days: int
    period_start: datetime
    total_limit: float
    total_spent: float
    total_reserved: float
    total_remaining: float
    delta_spent: float
    per_dataset_limit: float
    datasets: list[DatasetBudget]
    charges: list[ChargeView]


def history_of(raw: str) -> tuple[HistoryEntry, ...]:
    return tuple((float(s), float(q), int(n)) for s, q, n in json.loads(raw))


def history_json(history: Sequence[HistoryEntry]) -> str:
    return json.dumps([[float(s), float(q), int(n)] for s, q, n in history])


def _scaled(history: Sequence[HistoryEntry], steps: int) -> tuple[HistoryEntry, ...]:
    """The plan's first entry run for ``steps`` steps (what a job ran so far, by its plan)."""
    if not history or steps <= 0:
        return ()
    sigma, q, _ = history[0]
    return ((sigma, q, steps),)


def lock_tenant(session: Session, tenant_id: str) -> None:
    """Serialize budget checks and charges of one tenant until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    else:  # SQLite has one write lock: take it now, before the ledger is read
        session.execute(text("UPDATE tenants SET id = id WHERE id = :t"), {"t": tenant_id})


class PrivacyBudgetService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        audit: AuditLog,
        *,
        policies: Callable[[str], ActivePolicy],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._policies = policies
        self._clock = clock

    def caps(self, tenant_id: str) -> Caps:
        f = self._policies(tenant_id).policy.finetune
        return Caps(f.max_epsilon_per_dataset, f.max_epsilon_total, f.period_days, f.delta)

    def ledger(self, session: Session, tenant_id: str) -> Ledger:
        """Every charge of the tenant plus the plans of its unfinished jobs, in ``session``."""
        hashes = _content_hashes(session, tenant_id)
        charges = {
            c.job_id: c for c in session.scalars(select(PrivacyCharge).where(PrivacyCharge.tenant_id == tenant_id))
        }
        unfinished = {
            j.id: j
            for j in session.scalars(
                select(FinetuneJob).where(FinetuneJob.tenant_id == tenant_id, FinetuneJob.state.in_(UNFINISHED))
            )
        }
        entries: list[Charge] = []
        for job_id, c in charges.items():
            job = unfinished.get(job_id)
            ran = history_of(c.history)
            key = c.dataset_hash or ""
            if c.settled or job is None:
                entries.append(Charge(job_id, c.dataset_id, ran, c.delta, c.epsilon, c.charged_at, True, key))
                continue
            plan = _plan_history(job)
            reserved = plan if sum(n for *_, n in plan) >= c.steps else ran
            epsilon = max(job.target_epsilon, c.epsilon)
            entries.append(Charge(job_id, c.dataset_id, reserved, c.delta, epsilon, c.charged_at, False, key))
        for job_id, job in unfinished.items():
            if job_id not in charges:
                key = hashes.get(job.dataset_id, "")
                plan = _plan_history(job)
                entries.append(
                    Charge(job_id, job.dataset_id, plan, job.delta, job.target_epsilon, job.created_at, False, key)
                )
        return Ledger(entries, self.caps(tenant_id), self._clock())

    def check(self, session: Session, tenant_id: str, plan: Plan, *, exclude_job: str | None = None) -> None:
        """Raise BudgetExceeded when ``plan`` does not fit; call after :func:`lock_tenant`. A
        plan without a ``dataset_key`` is looked up by its dataset's content hash."""
        if not plan.dataset_key:
            plan = dataclasses.replace(plan, dataset_key=_content_hashes(session, tenant_id).get(plan.dataset_id, ""))
        self.ledger(session, tenant_id).check(plan, exclude_job=exclude_job)

    # -- charges (the worker) ------------------------------------------------------------

    def open(self, session: Session, job: FinetuneJob) -> None:
        """Open the job's charge (no steps yet) as it starts; a restarted job keeps its charge."""
        if session.scalar(select(PrivacyCharge.id).where(PrivacyCharge.job_id == job.id)) is not None:
            return
        now = self._clock()
        content_hash = session.scalar(
            select(Dataset.content_hash).where(Dataset.tenant_id == job.tenant_id, Dataset.id == job.dataset_id)
        )
        session.add(
            PrivacyCharge(
                tenant_id=job.tenant_id,
                dataset_id=job.dataset_id,
                dataset_hash=content_hash,
                job_id=job.id,
                history="[]",
                steps=0,
                delta=job.delta,
                epsilon=0.0,
                settled=False,
                charged_at=now,
                updated_at=now,
            )
        )
        self._audit.record(
            AUDIT_ACTION,
            actor=SYSTEM_ACTOR,
            tenant_id=job.tenant_id,
            object=f"job:{job.id}",
            outcome="opened",
            facts={
                "dataset": job.dataset_id,
                "dataset_hash": content_hash,
                "reserved_epsilon": job.target_epsilon,
                "delta": job.delta,
                "planned_steps": job.planned_steps,
            },
            session=session,
        )

    def raise_to(self, session: Session, job: FinetuneJob, steps: int, epsilon: float) -> None:
        """Record that the job ran at least ``steps`` steps (never lowers a charge)."""
        history = _scaled(_plan_history(job), steps)
        session.execute(
            update(PrivacyCharge)
            .where(PrivacyCharge.job_id == job.id, PrivacyCharge.settled.is_(False), PrivacyCharge.steps < steps)
            .values(history=history_json(history), steps=steps, epsilon=epsilon, updated_at=self._clock())
        )

    def settle(
        self,
        session: Session,
        job: FinetuneJob,
        history: Sequence[HistoryEntry] | None,
        outcome: str,
    ) -> float:
        """Close the job's charge with the history it ran (``None``: what progress recorded,
        for a failed job) and return the epsilon charged. Audited with the dataset's composed
        total after the charge."""
        row = session.scalar(select(PrivacyCharge).where(PrivacyCharge.job_id == job.id))
        if row is None:
            return 0.0
        recorded = history_of(row.history)
        final = tuple(history) if history is not None else recorded
        if sum(n for *_, n in final) < row.steps:  # never charge less than progress already showed
            final = recorded
        epsilon = epsilon_of(final, job.delta)
        if history is None:  # by progress: the engine's own figure, if it said more
            epsilon = max(epsilon, row.epsilon)
        row.history = history_json(final)
        row.steps = sum(n for *_, n in final)
        row.epsilon = epsilon
        row.settled = True
        row.updated_at = self._clock()
        session.flush()
        caps = self.caps(job.tenant_id)
        ledger = self.ledger(session, job.tenant_id)
        dataset = ledger.dataset(row.dataset_hash or row.dataset_id)
        total = ledger.total()
        self._audit.record(
            AUDIT_ACTION,
            actor=SYSTEM_ACTOR,
            tenant_id=job.tenant_id,
            object=f"job:{job.id}",
            outcome=outcome,
            facts={
                "dataset": job.dataset_id,
                "dataset_hash": row.dataset_hash,
                "steps": row.steps,
                "epsilon": epsilon,
                "delta": job.delta,
                "dataset_epsilon": dataset.spent,
                "dataset_limit": caps.max_epsilon_per_dataset,
                "period_epsilon": total.spent,
                "period_limit": caps.max_epsilon_total,
            },
            session=session,
        )
        return epsilon

    # -- reading (compliance) ------------------------------------------------------------

    def report(self, principal: Principal, tenant: str) -> BudgetReport:
        principal.require(*READERS)
        with transaction(self._sessions) as session:
            t = find_tenant(session, principal, tenant)
            ledger = self.ledger(session, t.id)
            stored = session.execute(
                select(Dataset.id, Dataset.name, Dataset.content_hash)
                .where(Dataset.tenant_id == t.id)
                .order_by(Dataset.created_at)
            ).all()
            states = dict(
                session.execute(select(FinetuneJob.id, FinetuneJob.state).where(FinetuneJob.tenant_id == t.id)).all()
            )
        caps = ledger.caps
        total = ledger.total()
        datasets = []
        for spend in ledger.datasets():
            uploads = [(i, n) for i, n, h in stored if h == spend.key or i == spend.key]
            newest_id, name = uploads[-1] if uploads else (spend.dataset_ids[0], None)
            datasets.append(
                DatasetBudget(
                    dataset_id=newest_id,
                    name=name,
                    content_hash=None if spend.key in spend.dataset_ids else spend.key,
                    dataset_ids=list(dict.fromkeys([*spend.dataset_ids, *(i for i, _ in uploads)])),
                    jobs=spend.jobs,
                    epsilon_spent=spend.spent,
                    epsilon_reserved=max(0.0, spend.with_reserved - spend.spent),
                    epsilon_summed=spend.summed,
                    limit=caps.max_epsilon_per_dataset,
                    remaining=max(0.0, caps.max_epsilon_per_dataset - spend.with_reserved),
                )
            )
        charges = [
            ChargeView(
                job_id=c.job_id,
                dataset_id=c.dataset_id,
                content_hash=c.dataset_key or None,
                state=states.get(c.job_id, "deleted"),
                steps=c.steps,
                noise_multiplier=c.history[0][0] if c.history else None,
                sample_rate=c.history[0][1] if c.history else None,
                delta=c.delta,
                epsilon=c.epsilon,
                settled=c.settled,
                charged_at=c.charged_at,
            )
            for c in sorted(ledger.charges, key=lambda c: c.charged_at)
        ]
        return BudgetReport(
            tenant=t.slug,
            accountant="rdp",
            delta=caps.delta,
            period_days=caps.period_days,
            period_start=total.since,
            total_limit=caps.max_epsilon_total,
            total_spent=total.spent,
            total_reserved=total.reserved,
            total_remaining=max(0.0, caps.max_epsilon_total - total.spent - total.reserved),
            delta_spent=total.delta_spent,
            per_dataset_limit=caps.max_epsilon_per_dataset,
            datasets=datasets,
            charges=charges,
        )


def _content_hashes(session: Session, tenant_id: str) -> dict[str, str]:
    """dataset id -> content hash, for the tenant's stored datasets."""
    rows = session.execute(select(Dataset.id, Dataset.content_hash).where(Dataset.tenant_id == tenant_id))
    return {str(i): str(h) for i, h in rows}


def _plan_history(job: FinetuneJob) -> tuple[HistoryEntry, ...]:
    """The job's planned history: its noise multiplier and sample rate for ``planned_steps``
    (computed as the engine computes them, so a run's steps charge what the run spent)."""
    return ((job.noise_multiplier, job.sample_rate, job.planned_steps),)
