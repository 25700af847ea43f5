"""The job queue in the database, as ``appliance worker`` uses it (the worker loop is
:mod:`appliance.training.worker`; this is its :class:`~appliance.training.worker.JobStore`).

Claiming: on PostgreSQL any number of workers run side by side; each claim locks one
candidate row with ``SELECT ... FOR UPDATE SKIP LOCKED``, so two workers never take the same
job and never wait for each other. On SQLite one worker runs at a time: it must hold the
``sqlite`` row of ``worker_leases`` (renewed with its heartbeat), and a second worker waits
until that lease expires. A candidate is a queued job, or a running one whose lease ran out
(its worker died): that one is resumed from its last sealed checkpoint, or ends failed once
it has been started ``training.max_attempts`` times.

Every claim re-checks the policy and the privacy budget (refused: the job ends failed,
naming the budget) and opens the job's charge. The charge is raised *before* each step runs
(:meth:`DbJobStore.charge`), so a job that crashes, fails or is killed is charged for every
step it ran, never fewer; the end settles it. Progress for display is written at most once
a second. Checkpoints are sealed with the tenant's key into the blob store (kind
``checkpoint``), one per job, replaced as the run goes, deleted when the job ends.

A trained model is registered (sealed, a new version) only in :meth:`DbJobStore.complete`,
in the same transaction that ends the job succeeded and settles its charge: a crash leaves
either a served model on a finished job or neither (the job is then taken over and trained
again; the sealed files the dead worker wrote are unreferenced and swept). A job that is
taken over although a version names it (left by a release that registered in two steps)
is finished, not retrained.

Claiming looks at every tenant's queue; everything done afterwards for a claimed job runs in
its tenant's scope (``db/tenancy.py``), so behind PostgreSQL's row-level security the database
itself keeps a job to its own tenant's rows (a job row pointing at another tenant's dataset
finds nothing).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import or_, select, text, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from appliance.config import TrainingSettings
from appliance.crypto.blobs import BlobStore
from appliance.db.base import utcnow
from appliance.db.engine import transaction
from appliance.db.models import FinetuneJob, ModelVersion, WorkerLease
from appliance.db.tenancy import tenant_scope
from appliance.errors import BudgetExceeded, IntegrityError, InvalidInput, KeyUnavailable, NotFound
from appliance.services.audit import SYSTEM_ACTOR, AuditLog
from appliance.services.datasets import CHECKPOINT_KIND, DatasetService, StoredDataset
from appliance.services.finetune import BASE_KIND, OUTPUT_KIND, spec_for
from appliance.services.policies import ActivePolicy
from appliance.services.privacy_budget import PrivacyBudgetService, lock_tenant
from appliance.training.budget import Plan
from appliance.training.spec import (
    ChatExample,
    ChatMessage,
    Example,
    LabeledText,
    Progress,
    PromptCompletion,
    TrainingCancelled,
    TrainingResult,
)
from appliance.training.worker import ClaimedJob, PreparedJob

if TYPE_CHECKING:
    from appliance.models.registry import ModelRegistry, VersionInfo
    from appliance.models.store import ModelStore

log = logging.getLogger(__name__)

SQLITE_LEASE = "sqlite"
RUNNING = ("running", "cancelling")
PROGRESS_EVERY_S = 1.0
"""Progress is written at most this often (and always for the first and the last step); the
charge does not wait for it (see :meth:`DbJobStore.charge`)."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _in_jobs_tenant(
    method: Callable[Concatenate[DbJobStore, ClaimedJob, _P], _R],
) -> Callable[Concatenate[DbJobStore, ClaimedJob, _P], _R]:
    """Run a store method for a claimed job in the job's tenant scope (the heartbeat calls
    from a thread of its own, which starts global)."""

    @functools.wraps(method)
    def scoped(self: DbJobStore, job: ClaimedJob, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with tenant_scope(job.tenant_id):
            return method(self, job, *args, **kwargs)

    return scoped


class _Superseded(Exception):
    """The job is no longer this worker's (taken over, deleted): undo the registration."""


def examples_of(dataset: StoredDataset) -> list[Example]:
    """Stored rows as the engine's example types."""
    out: list[Example] = []
    for row in dataset.rows:
        if "label" in row:
            out.append(LabeledText(str(row["text"]), str(row["label"])))
        elif "messages" in row:
            out.append(ChatExample(tuple(ChatMessage(m["role"], m["content"]) for m in row["messages"])))
        else:
            out.append(PromptCompletion(str(row["prompt"]), str(row["completion"])))
    return out


class DbJobStore:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        blobs: BlobStore,
        audit: AuditLog,
        budget: PrivacyBudgetService,
        datasets: DatasetService,
        *,
        policies: Callable[[str], ActivePolicy],
        registry: Callable[[], ModelRegistry],
        store: Callable[[], ModelStore],
        training: TrainingSettings,
        clock: Callable[[], datetime] = utcnow,
        progress_every_s: float = PROGRESS_EVERY_S,
    ) -> None:
        """``progress_every_s``: how often progress (step, loss, ETA) is written at most."""
        self._sessions = sessions
        self._blobs = blobs
        self._audit = audit
        self._budget = budget
        self._datasets = datasets
        self._policies = policies
        self._registry = registry
        self._store = store
        self._training = training
        self._clock = clock
        self._lease = timedelta(seconds=training.lease_s)
        self._progress_every_s = progress_every_s
        self._progress_at: dict[str, float] = {}
        self._drops: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Session]:
        """A transaction after whose commit the checkpoints of jobs it ended are deleted
        (never before: a rolled-back ending still needs its checkpoint)."""
        with self._dropping(), transaction(self._sessions) as session:
            yield session

    @contextlib.contextmanager
    def _dropping(self) -> Iterator[None]:
        """Delete the checkpoints :meth:`_end` queued once the block (whose transaction
        commits inside it) completed; forget them if it raised."""
        self._drops.clear()
        try:
            yield
        except BaseException:
            self._drops.clear()
            raise
        drops, self._drops = self._drops, []
        for tenant_id, blob_id in drops:
            self._drop_blob(tenant_id, blob_id)

    @property
    def _sqlite(self) -> bool:
        return bool(self._sessions.kw["bind"].dialect.name == "sqlite")

    # -- claiming --------------------------------------------------------------------------

    def claim(self, worker_id: str) -> ClaimedJob | None:
        if self._sqlite and not self._hold_sqlite_lease(worker_id):
            return None
        while True:
            try:
                claimed, retry = self._claim_one(worker_id)
            except DbIntegrityError:
                return None
            if not retry:
                return claimed

    def _candidates(self, now: datetime) -> Any:
        query = (
            select(FinetuneJob)
            .where(
                or_(
                    FinetuneJob.state == "queued",
                    FinetuneJob.state.in_(RUNNING) & (FinetuneJob.lease_expires_at < now),
                )
            )
            .order_by(FinetuneJob.created_at, FinetuneJob.id)
            .limit(1)
        )
        return query.with_for_update(skip_locked=True) if not self._sqlite else query

    def _claim_one(self, worker_id: str) -> tuple[ClaimedJob | None, bool]:
        """One candidate: (the claimed job, False), or (None, True) when the candidate ended
        instead (over budget, too many attempts) and the next should be tried."""
        now = self._clock()
        with self._tx() as session:
            if self._sqlite:  # take the write lock before reading, so the claim is atomic
                session.execute(text("UPDATE worker_leases SET name = name WHERE name = :n"), {"n": SQLITE_LEASE})
            job = session.scalar(self._candidates(now))
            if job is None:
                return None, False
            lock_tenant(session, job.tenant_id)
            takeover = job.state in RUNNING
            if takeover and self._finish_registered(session, job):
                return None, True
            job.attempts += 1
            if takeover and job.state == "cancelling":
                self._end(session, job, "cancelled", None, None, "the worker running it stopped; it was cancelled")
                return None, True
            if takeover and job.attempts > self._training.max_attempts:
                reason = f"the worker running this job stopped {job.attempts - 1} times; giving up"
                self._end(session, job, "failed", None, reason, reason)
                return None, True
            refusal = self._refusal(session, job)
            if refusal is not None:
                self._end(session, job, "failed", None, refusal, refusal)
                return None, True
            job.state = "running"
            job.worker_id = worker_id
            job.lease_expires_at = now + self._lease
            job.heartbeat_at = now
            job.started_at = job.started_at or now
            job.error = None
            self._budget.open(session, job)
            self._audit.record(
                "finetune.job.start",
                actor=SYSTEM_ACTOR,
                tenant_id=job.tenant_id,
                object=f"job:{job.id}",
                facts={
                    "attempt": job.attempts,
                    "takeover": takeover,
                    "resume_from_step": job.checkpoint_step if job.checkpoint_blob else None,
                },
                session=session,
            )
            return ClaimedJob(job.id, job.tenant_id, job.attempts, worker_id), False

    def _finish_registered(self, session: Session, job: FinetuneJob) -> bool:
        """End a taken-over job succeeded when a version of its model already names it (its
        worker died after registering, before ending the job): never train it twice. The
        version exists only for a whole run, so the charge is the whole planned run."""
        version = session.scalar(
            select(ModelVersion)
            .where(ModelVersion.tenant_id == job.tenant_id, ModelVersion.job_id == job.id)
            .order_by(ModelVersion.version)
            .limit(1)
        )
        if version is None:
            return False
        job.model_version = version.version
        job.step = job.total_steps = job.planned_steps
        job.eta_s = 0.0
        ran = ((job.noise_multiplier, job.sample_rate, job.planned_steps),)
        facts = {"model": version.name, "version": version.version, "recovered": True}
        self._end(session, job, "succeeded", ran, None, None, facts=facts)
        return True

    def _refusal(self, session: Session, job: FinetuneJob) -> str | None:
        """Why the job may not start now (the policy or the budget changed), or None."""
        policy = self._policies(job.tenant_id).policy.finetune
        if not policy.allowed:
            return "the tenant's policy no longer allows fine-tuning (finetune.allowed is false)"
        plan = Plan(
            job.dataset_id,
            job.dataset_id,
            ((job.noise_multiplier, job.sample_rate, job.planned_steps),),
            job.delta,
            job.target_epsilon,
        )
        try:
            self._budget.check(session, job.tenant_id, plan, exclude_job=job.id)
        except (BudgetExceeded, InvalidInput) as exc:
            return f"refused when it was about to start: {exc.detail}"
        return None

    def _hold_sqlite_lease(self, worker_id: str) -> bool:
        now = self._clock()
        with transaction(self._sessions) as session:
            took = session.execute(
                update(WorkerLease)
                .where(
                    WorkerLease.name == SQLITE_LEASE,
                    or_(WorkerLease.holder == worker_id, WorkerLease.expires_at < now),
                )
                .values(holder=worker_id, expires_at=now + self._lease)
            )
            if took.rowcount:  # type: ignore[attr-defined]
                return True
            if session.get(WorkerLease, SQLITE_LEASE) is not None:
                return False
            session.add(WorkerLease(name=SQLITE_LEASE, holder=worker_id, expires_at=now + self._lease))
        return True

    def idle(self, worker_id: str) -> None:
        if self._sqlite:
            with contextlib.suppress(DbIntegrityError):
                self._hold_sqlite_lease(worker_id)

    def leave(self, worker_id: str) -> None:
        if self._sqlite:
            with transaction(self._sessions) as session:
                session.execute(
                    update(WorkerLease)
                    .where(WorkerLease.name == SQLITE_LEASE, WorkerLease.holder == worker_id)
                    .values(expires_at=self._clock() - timedelta(seconds=1))
                )

    # -- while running ---------------------------------------------------------------------

    def _mine(self, job: ClaimedJob) -> Any:
        return (FinetuneJob.id == job.id) & (FinetuneJob.worker_id == job.worker_id) & FinetuneJob.state.in_(RUNNING)

    @_in_jobs_tenant
    def renew(self, job: ClaimedJob) -> bool:
        now = self._clock()
        with transaction(self._sessions) as session:
            renewed = session.execute(
                update(FinetuneJob).where(self._mine(job)).values(lease_expires_at=now + self._lease, heartbeat_at=now)
            )
            if self._sqlite:
                session.execute(
                    update(WorkerLease)
                    .where(WorkerLease.name == SQLITE_LEASE, WorkerLease.holder == job.worker_id)
                    .values(expires_at=now + self._lease)
                )
            return bool(renewed.rowcount)  # type: ignore[attr-defined]

    @_in_jobs_tenant
    def cancel_requested(self, job: ClaimedJob) -> bool:
        with self._sessions() as session:
            row = session.execute(
                select(FinetuneJob.cancel_requested, FinetuneJob.state).where(FinetuneJob.id == job.id)
            ).first()
        return row is None or bool(row[0]) or row[1] == "cancelling"

    @contextlib.contextmanager
    def prepare(self, job: ClaimedJob) -> Iterator[PreparedJob]:
        with tenant_scope(job.tenant_id):
            yield from self._prepared(job)

    def _prepared(self, job: ClaimedJob) -> Iterator[PreparedJob]:
        with self._sessions() as session:
            row = session.get(FinetuneJob, job.id)
            if row is None:
                raise NotFound("the job was deleted")
        try:
            dataset = self._datasets.load(job.tenant_id, row.dataset_id)
        except NotFound:
            raise NotFound("the job's dataset was deleted") from None
        resume = None
        if row.checkpoint_blob:
            try:
                resume = self._blobs.read_bytes(job.tenant_id, row.checkpoint_blob)
            except (IntegrityError, NotFound, KeyUnavailable):
                raise IntegrityError("the job's last checkpoint failed verification; it cannot be resumed") from None
        registry = self._registry()
        info = registry.get(row.base_model, job.tenant_id)
        if info.kind != BASE_KIND[row.task]:
            raise InvalidInput(f"the base model {row.base_model!r} is no longer a {BASE_KIND[row.task]} model")
        with self._base_dir(registry, info) as base_dir:
            spec = spec_for(row, base_dir, self._training, dataset_hash=dataset.content_hash)
            yield PreparedJob(spec, examples_of(dataset), resume)

    @contextlib.contextmanager
    def _base_dir(self, registry: ModelRegistry, info: Any) -> Iterator[Any]:
        from appliance.models.sealed import is_sealed

        if is_sealed(info.source):
            with registry.open_sealed(info) as path:
                yield path
        else:
            yield self._store().resolve(info.source)

    @_in_jobs_tenant
    def charge(self, job: ClaimedJob, step: int, epsilon: float) -> bool:
        """Raise the job's charge to ``step`` steps before that step runs (``epsilon``: the
        last figure the engine reported; settling recomputes it from the steps). False when
        the job is no longer this worker's: the step must not run."""
        with transaction(self._sessions) as session:
            row = session.scalar(select(FinetuneJob).where(self._mine(job)))
            if row is None:
                return False
            self._budget.raise_to(session, row, step, epsilon)
            return True

    @_in_jobs_tenant
    def progress(self, job: ClaimedJob, progress: Progress) -> None:
        now = time.monotonic()
        last = progress.step >= progress.total_steps
        if not last and progress.step > 1 and now - self._progress_at.get(job.id, 0.0) < self._progress_every_s:
            return
        self._progress_at[job.id] = now
        with transaction(self._sessions) as session:
            row = session.scalar(select(FinetuneJob).where(self._mine(job)))
            if row is None:
                return
            row.step = progress.step
            row.total_steps = progress.total_steps
            row.epoch = float(progress.epoch)
            row.loss = progress.loss
            row.epsilon_spent = progress.epsilon_spent
            row.elapsed_s = progress.elapsed_s
            row.eta_s = progress.eta_s
            # A no-op under the worker, which charged each step before it ran (:meth:`charge`).
            self._budget.raise_to(session, row, progress.step, progress.epsilon_spent)

    @_in_jobs_tenant
    def checkpoint(self, job: ClaimedJob, step: int, state: bytes) -> None:
        blob = self._blobs.put(job.tenant_id, CHECKPOINT_KIND, state)
        old: str | None = None
        with transaction(self._sessions) as session:
            row = session.scalar(select(FinetuneJob).where(self._mine(job)))
            if row is not None:
                old = row.checkpoint_blob
                row.checkpoint_blob = blob.id
                row.checkpoint_step = step
        if row is None:  # not ours any more: keep nothing
            self._drop_blob(job.tenant_id, blob.id)
        elif old:
            self._drop_blob(job.tenant_id, old)

    # -- endings ---------------------------------------------------------------------------

    @_in_jobs_tenant
    def complete(self, job: ClaimedJob, result: TrainingResult) -> None:
        """Register the trained model as the next version of the job's model name, end the
        job succeeded and settle its charge, all in one transaction."""
        with self._sessions() as session:
            row = session.scalar(select(FinetuneJob).where(self._mine(job)))
            if row is None:
                return  # taken over or deleted: the other worker (or nobody) registers
            output, task, dataset_id = row.output_model, row.task, row.dataset_id
        card = {**result.card.to_dict(), "job_id": job.id, "dataset_id": dataset_id, "model": output}

        def finish(session: Session, version: VersionInfo) -> None:
            row = session.scalar(select(FinetuneJob).where(self._mine(job)).with_for_update())
            if row is None:
                raise _Superseded
            lock_tenant(session, row.tenant_id)
            row.model_version = version.version
            row.step = result.card.steps
            row.epsilon_spent = result.card.epsilon
            row.eta_s = 0.0
            self._end(
                session,
                row,
                "succeeded",
                result.history,
                None,
                None,
                facts={"model": output, "version": version.version, "epsilon": result.card.epsilon},
            )

        with contextlib.suppress(_Superseded), self._dropping():
            self._registry().add_version(
                job.tenant_id,
                output,
                OUTPUT_KIND[task],
                result.output_dir,
                card=card,
                job_id=job.id,
                dataset_id=dataset_id,
                finish=finish,
            )

    @_in_jobs_tenant
    def cancelled(self, job: ClaimedJob, exc: TrainingCancelled) -> None:
        with self._tx() as session:
            row = session.scalar(select(FinetuneJob).where(self._mine(job)).with_for_update())
            if row is None:
                return
            lock_tenant(session, row.tenant_id)
            row.step = max(row.step, exc.steps)
            row.epsilon_spent = max(row.epsilon_spent, exc.epsilon_spent)
            self._end(session, row, "cancelled", exc.history, None, None)

    @_in_jobs_tenant
    def failed(self, job: ClaimedJob, reason: str) -> None:
        with self._tx() as session:
            row = session.scalar(select(FinetuneJob).where(self._mine(job)).with_for_update())
            if row is None:
                return
            lock_tenant(session, row.tenant_id)
            self._end(session, row, "failed", None, reason, reason)

    @_in_jobs_tenant
    def release(self, job: ClaimedJob) -> None:
        with transaction(self._sessions) as session:
            row = session.scalar(select(FinetuneJob).where(self._mine(job)))
            if row is None:
                return
            row.state = "queued"
            row.worker_id = None
            row.lease_expires_at = None
            row.attempts = max(0, row.attempts - 1)  # a deliberate stop is not a crash
            self._audit.record(
                "finetune.job.release",
                actor=SYSTEM_ACTOR,
                tenant_id=row.tenant_id,
                object=f"job:{row.id}",
                facts={"step": row.step, "resume_from_step": row.checkpoint_step if row.checkpoint_blob else None},
                session=session,
            )

    def _end(
        self,
        session: Session,
        row: FinetuneJob,
        state: str,
        history: Any,
        error: str | None,
        audit_reason: str | None,
        *,
        facts: dict[str, Any] | None = None,
    ) -> None:
        """Finish ``row`` in ``session``: state, settled charge, audit entry; the checkpoint
        blob is deleted after the transaction commits."""
        row.state = state
        row.error = error[:500] if error else None
        row.finished_at = self._clock()
        row.lease_expires_at = None
        epsilon = self._budget.settle(session, row, history, state)
        if row.checkpoint_blob:
            self._drops.append((row.tenant_id, row.checkpoint_blob))
        row.checkpoint_blob, row.checkpoint_step = None, None
        self._audit.record(
            "finetune.job.finish",
            actor=SYSTEM_ACTOR,
            tenant_id=row.tenant_id,
            object=f"job:{row.id}",
            outcome=state,
            facts={
                "epsilon_charged": epsilon,
                "steps": row.step,
                "attempts": row.attempts,
                "reason": _reason_code(audit_reason),
                **(facts or {}),
            },
            session=session,
        )

    def _drop_blob(self, tenant_id: str, blob_id: str) -> None:
        with contextlib.suppress(NotFound, OSError):
            self._blobs.delete(tenant_id, blob_id)


def _reason_code(reason: str | None) -> str | None:
    """Audit facts hold identifiers, not sentences: a short code for why a job ended."""
    if reason is None:
        return None
    for needle, code in (
        ("budget", "budget-exceeded"),
        ("policy", "policy-forbids"),
        ("stopped", "worker-crashed"),
        ("checkpoint", "checkpoint-unreadable"),
        ("dataset", "dataset-missing"),
        ("training failed", "training-error"),
    ):
        if needle in reason:
            return code
    return "other"
