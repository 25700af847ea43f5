"""Fine-tuning jobs as principals see them: create (checked against the policy and the
privacy budget), list, show with live progress, cancel.

A job is a row in ``finetune_jobs``; ``appliance worker`` runs it (see
:mod:`appliance.services.finetune_queue`). Creating one plans its privacy cost the way the
engine will run it (Poisson sample rate ``1 / ceil(n / batch_size)``, Opacus's noise for the
target epsilon over the epochs) and refuses it when that plan does not fit the budget. The
settings are stored as numbers; nothing of the dataset's content reaches this table. The
per-dataset budget is the budget of the dataset's content (its content hash): a job on a
re-upload of rows that were trained on already is charged against what they spent.

Job states::

    queued ──> running ──> succeeded
       │          ├──────> failed      (error says why; steps that ran are charged)
       │          └──> cancelling ──> cancelled (steps that ran are charged)
       └──────────────────────────> cancelled (before it started: nothing charged)
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from appliance.config import TrainingSettings
from appliance.crypto.blobs import BlobStore
from appliance.db.base import utcnow
from appliance.db.engine import transaction
from appliance.db.models import Dataset, FinetuneJob
from appliance.errors import InvalidInput, NotFound, PermissionDenied
from appliance.models.store import NAME as MODEL_NAME
from appliance.roles import Role
from appliance.services.audit import AuditLog
from appliance.services.paging import DEFAULT_PAGE, Page, page_by_creation
from appliance.services.policies import ActivePolicy
from appliance.services.principal import Principal
from appliance.services.privacy_budget import PrivacyBudgetService, lock_tenant
from appliance.services.tenants import find_tenant
from appliance.training.accounting import noise_multiplier_for, sample_rate_for, steps_per_epoch
from appliance.training.budget import Plan
from appliance.training.spec import TrainingSpec, holdout_rows

if TYPE_CHECKING:
    from appliance.models.registry import ModelRegistry

TaskName = Literal["classifier", "lora"]
TASKS: tuple[TaskName, ...] = ("classifier", "lora")
DATASET_TASK = {"classifier": "classification", "lora": "generation"}
"""Which dataset task each job task trains on."""
BASE_KIND = {"classifier": "embedding", "lora": "chat"}
"""The registered kind of a job's base model."""
OUTPUT_KIND = {"classifier": "classifier", "lora": "chat"}
"""The kind the trained model is registered (and served) as."""
UNFINISHED = ("queued", "running", "cancelling")
FINISHED = ("succeeded", "failed", "cancelled")
STATES = (*UNFINISHED, *FINISHED)
WRITERS = (Role.OPERATOR, Role.TENANT_ADMIN)
READERS = (Role.OPERATOR, Role.TENANT_ADMIN, Role.COMPLIANCE)
DELTA_FRACTION_OF_1_OVER_N = 0.1
"""Default delta: a tenth of 1/n (the usual "well below 1/n"), capped by the policy's delta."""


@dataclass(frozen=True)
class JobRequest:
    """What a caller may choose; None takes the default (and for the engine's settings, the
    engine's default, recorded in the job)."""

    dataset: str
    task: TaskName
    output_model: str
    target_epsilon: float
    base_model: str | None = None
    delta: float | None = None
    epochs: int = 3
    batch_size: int = 64
    max_grad_norm: float = 1.0
    learning_rate: float | None = None
    seed: int = 0
    """Public: the new weights' initialisation and the held-out split. The DP noise and batches
    come from a secret seed each run draws (never stored in the clear, never shown)."""
    max_seq_len: int | None = None
    train_top_layers: int | None = None
    lora_rank: int | None = None
    holdout_fraction: float | None = None


@dataclass(frozen=True)
class JobView:
    id: str
    tenant: str
    dataset_id: str
    task: str
    base_model: str
    output_model: str
    state: str
    target_epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    planned_steps: int
    settings: dict[str, Any]
    step: int
    total_steps: int
    epoch: float
    loss: float | None
    epsilon_spent: float
    elapsed_s: float
    eta_s: float | None
    attempts: int
    cancel_requested: bool
    model_version: int | None
    error: str | None
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    resumable_from_step: int | None = field(default=None)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def job_view(row: FinetuneJob, slug: str) -> JobView:
    return JobView(
        id=row.id,
        tenant=slug,
        dataset_id=row.dataset_id,
        task=row.task,
        base_model=row.base_model,
        output_model=row.output_model,
        state=row.state,
        target_epsilon=row.target_epsilon,
        delta=row.delta,
        noise_multiplier=row.noise_multiplier,
        sample_rate=row.sample_rate,
        planned_steps=row.planned_steps,
        settings=json.loads(row.settings or "{}"),
        step=row.step,
        total_steps=row.total_steps or row.planned_steps,
        epoch=row.epoch,
        loss=row.loss,
        epsilon_spent=row.epsilon_spent,
        elapsed_s=row.elapsed_s,
        eta_s=row.eta_s,
        attempts=row.attempts,
        cancel_requested=row.cancel_requested,
        model_version=row.model_version,
        error=row.error,
        created_by=row.created_by,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        resumable_from_step=row.checkpoint_step if row.checkpoint_blob else None,
    )


def spec_for(
    row: FinetuneJob, base_model_dir: Path, training: TrainingSettings, *, dataset_hash: str = ""
) -> TrainingSpec:
    """The engine's spec for a stored job (the worker's, and the creation-time check's)."""
    settings = json.loads(row.settings or "{}")
    options = {k: settings[k] for k in _ENGINE_OPTIONS if settings.get(k) is not None}
    return TrainingSpec(
        task=row.task,  # type: ignore[arg-type]
        base_model_dir=base_model_dir,
        target_epsilon=row.target_epsilon,
        delta=row.delta,
        epochs=int(settings["epochs"]),
        batch_size=int(settings["batch_size"]),
        max_grad_norm=float(settings["max_grad_norm"]),
        seed=int(settings["seed"]),
        dp_mode=training.dp_mode,
        device=training.device,
        secure_mode=training.secure_mode,
        gpus=training.gpus,
        checkpoint_every_steps=training.checkpoint_every_steps,
        checkpoint_every_s=training.checkpoint_every_s,
        dataset_hash=dataset_hash,
        base_model_name=row.base_model,
        **options,
    )


_ENGINE_OPTIONS = ("learning_rate", "max_seq_len", "train_top_layers", "lora_rank", "holdout_fraction")


class FinetuneService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        audit: AuditLog,
        budget: PrivacyBudgetService,
        blobs: BlobStore,
        *,
        policies: Callable[[str], ActivePolicy],
        registry: Callable[[], ModelRegistry],
        training: TrainingSettings,
        default_models: Callable[[TaskName], str],
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._budget = budget
        self._blobs = blobs
        self._policies = policies
        self._registry = registry
        self._training = training
        self._default_models = default_models

    def create(self, principal: Principal, tenant: str, request: JobRequest) -> JobView:
        """Queue a job, or refuse it naming the reason: the policy forbids fine-tuning, the
        dataset does not fit the task, a setting is out of range, or the budget is short."""
        principal.require(*WRITERS)
        with self._sessions() as session:
            t = find_tenant(session, principal, tenant)
            tenant_id, slug = t.id, t.slug
        active = self._policies(tenant_id)
        policy = active.policy.finetune
        if not policy.allowed:
            raise PermissionDenied("this tenant's policy does not allow fine-tuning (finetune.allowed is false)")
        if request.task not in TASKS:
            raise InvalidInput(f"task must be one of {', '.join(TASKS)}")
        if not MODEL_NAME.fullmatch(request.output_model):
            raise InvalidInput("output_model must be 1-128 lowercase letters, digits, '.', '_' or '-'")
        with self._sessions() as session:
            dataset = session.scalar(
                select(Dataset).where(
                    Dataset.tenant_id == tenant_id, (Dataset.id == request.dataset) | (Dataset.name == request.dataset)
                )
            )
        if dataset is None:
            raise NotFound("no such dataset")
        if dataset.task != DATASET_TASK[request.task]:
            raise InvalidInput(
                f"a {request.task} job trains on a {DATASET_TASK[request.task]} dataset; "
                f"dataset {dataset.name!r} is a {dataset.task} dataset"
            )
        base = request.base_model or self._default_models(request.task)
        self._check_models(tenant_id, active, request.task, base, request.output_model)
        delta = self._delta(request.delta, dataset.rows, policy.delta)
        settings = {
            "epochs": request.epochs,
            "batch_size": request.batch_size,
            "max_grad_norm": request.max_grad_norm,
            "seed": request.seed,
            "learning_rate": request.learning_rate,
            "max_seq_len": request.max_seq_len,
            "train_top_layers": request.train_top_layers if request.task == "classifier" else None,
            "lora_rank": request.lora_rank if request.task == "lora" else None,
            "holdout_fraction": request.holdout_fraction,
        }
        probe = FinetuneJob(
            task=request.task,
            base_model=base,
            target_epsilon=request.target_epsilon,
            delta=delta,
            settings=json.dumps(settings),
        )
        spec = spec_for(probe, Path("."), self._training)  # validates every setting, naming it
        train_rows = dataset.rows - holdout_rows(dataset.rows, spec.holdout_fraction)
        if train_rows < 1:
            raise InvalidInput("the dataset is too small to train on")
        sample_rate = sample_rate_for(train_rows, spec.batch_size)
        steps = spec.epochs * steps_per_epoch(train_rows, spec.batch_size)
        noise = noise_multiplier_for(spec.target_epsilon, delta, sample_rate, epochs=spec.epochs)
        plan = Plan(
            dataset.id, dataset.name, ((noise, sample_rate, steps),), delta, spec.target_epsilon, dataset.content_hash
        )
        with transaction(self._sessions) as session:
            lock_tenant(session, tenant_id)
            self._budget.check(session, tenant_id, plan)
            row = FinetuneJob(
                tenant_id=tenant_id,
                dataset_id=dataset.id,
                task=request.task,
                base_model=base,
                output_model=request.output_model,
                target_epsilon=spec.target_epsilon,
                delta=delta,
                noise_multiplier=noise,
                sample_rate=sample_rate,
                planned_steps=steps,
                settings=json.dumps({**settings, "train_rows": train_rows, "rows": dataset.rows}),
                state="queued",
                created_by=principal.key_id or "local-operator",
            )
            session.add(row)
            session.flush()
            self._audit.record(
                "finetune.job.create",
                actor=principal,
                tenant_id=tenant_id,
                object=f"job:{row.id}",
                policy_version=active.version,
                facts={
                    "dataset": dataset.id,
                    "task": request.task,
                    "base_model": base,
                    "output_model": request.output_model,
                    "target_epsilon": spec.target_epsilon,
                    "delta": delta,
                    "noise_multiplier": noise,
                    "sample_rate": sample_rate,
                    "planned_steps": steps,
                    "epochs": spec.epochs,
                    "batch_size": spec.batch_size,
                    "max_grad_norm": spec.max_grad_norm,
                },
                session=session,
            )
            return job_view(row, slug)

    def _check_models(self, tenant_id: str, active: ActivePolicy, task: TaskName, base: str, output: str) -> None:
        registry = self._registry()
        try:
            info = registry.get(base, tenant_id)
        except NotFound:
            raise NotFound(f"no base model named {base!r}") from None
        if not active.policy.allows_model(base):
            raise NotFound(f"no base model named {base!r}")
        if info.kind != BASE_KIND[task]:
            raise InvalidInput(
                f"a {task} job needs a local {BASE_KIND[task]} model as its base; {base!r} is {info.kind}"
            )
        with self._sessions() as session:
            registry.check_version_name(session, tenant_id, output, OUTPUT_KIND[task])
        if any(b.name == output for b in registry.list(None) if b.builtin):
            raise InvalidInput(f"{output!r} is a built-in model name")

    @staticmethod
    def _delta(requested: float | None, rows: int, cap: float) -> float:
        one_over_n = 1.0 / rows
        if requested is None:
            return min(cap, DELTA_FRACTION_OF_1_OVER_N * one_over_n)
        if not (math.isfinite(requested) and 0 < requested < one_over_n):
            raise InvalidInput(f"delta must be above 0 and below 1/n = {one_over_n:.3g} for this dataset's {rows} rows")
        if requested > cap:
            raise InvalidInput(f"delta {requested:.3g} is above the policy's finetune.delta of {cap:.3g}")
        return requested

    # -- reading ---------------------------------------------------------------------------

    def list(
        self,
        principal: Principal,
        tenant: str,
        *,
        state: str | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> Page[JobView]:
        """The tenant's jobs (in ``state``, if given), oldest first, a page at a time."""
        principal.require(*READERS)
        if state is not None and state not in STATES:
            raise InvalidInput(f"state must be one of {', '.join(STATES)}")
        with self._sessions() as session:
            t = find_tenant(session, principal, tenant)
            query = select(FinetuneJob).where(FinetuneJob.tenant_id == t.id)
            if state is not None:
                query = query.where(FinetuneJob.state == state)
            rows, next_cursor = page_by_creation(
                session, query, FinetuneJob.created_at, FinetuneJob.id, tag="j1", cursor=cursor, limit=limit
            )
            return Page([job_view(r, t.slug) for r in rows], next_cursor)

    def get(self, principal: Principal, tenant: str, job_id: str) -> JobView:
        principal.require(*READERS)
        with self._sessions() as session:
            t = find_tenant(session, principal, tenant)
            return job_view(_job(session, t.id, job_id), t.slug)

    def cancel(self, principal: Principal, tenant: str, job_id: str) -> JobView:
        """A queued job ends cancelled at once; a running one is asked to stop and ends
        cancelled when its worker notices (within a step), charged for the steps it ran.
        Cancelling a finished job changes nothing."""
        principal.require(*WRITERS)
        checkpoint: str | None = None
        with transaction(self._sessions) as session:
            t = find_tenant(session, principal, tenant)
            row = _job(session, t.id, job_id, lock=True)  # the job's row before the tenant's, as workers lock
            lock_tenant(session, t.id)
            if row.state in FINISHED:
                return job_view(row, t.slug)
            before = row.state
            row.cancel_requested = True
            if row.state == "queued":
                row.state = "cancelled"
                row.finished_at = utcnow()
                self._budget.settle(session, row, None, "cancelled")  # a job handed back may have run steps
                checkpoint, row.checkpoint_blob, row.checkpoint_step = row.checkpoint_blob, None, None
            else:
                row.state = "cancelling"
            self._audit.record(
                "finetune.job.cancel",
                actor=principal,
                tenant_id=t.id,
                object=f"job:{row.id}",
                facts={"state_before": before, "state": row.state},
                session=session,
            )
            session.flush()
            view = job_view(row, t.slug)
        if checkpoint is not None:
            with contextlib.suppress(NotFound, OSError):
                self._blobs.delete(t.id, checkpoint)
        return view


def _job(session: Session, tenant_id: str, job_id: str, *, lock: bool = False) -> FinetuneJob:
    query = select(FinetuneJob).where(FinetuneJob.tenant_id == tenant_id, FinetuneJob.id == job_id)
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFound("no such job")
    return row
