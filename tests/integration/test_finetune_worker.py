"""The worker with the real engine on the real MiniLM (tiny datasets, a few steps): a job
ends registered as a sealed, versioned tenant model with its card, its charge settled at
the accountant's epsilon; cancel and stop mid-run; retraining, rollback, version removal."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import func, select, text

from appliance.db.base import Base
from appliance.db.models import AuditEntry, Blob, ModelVersion, PrivacyCharge
from appliance.errors import AuditUnavailable, Conflict
from appliance.models.sealed import is_sealed
from appliance.services.container import Services
from appliance.services.finetune_queue import DbJobStore
from appliance.training import train
from appliance.training.accounting import epsilon_of
from appliance.training.engine import _derive
from appliance.training.spec import Example, Progress, TrainingResult, TrainingSpec
from appliance.training.worker import SCRATCH_PREFIX, Worker
from tests.finetune_support import OP, add_tickets, finetune_tenant, queue_job
from tests.support import database_url, make_services, make_settings

pytestmark = pytest.mark.slow


@pytest.fixture
def trainer(backend: str, tmp_path: Path) -> Iterator[Services]:
    """Services whose worker checkpoints every step and leases for a few seconds."""
    with database_url(backend, tmp_path) as url:
        training = {
            "lease_s": 4,
            "poll_interval_s": 0.1,
            "checkpoint_every_steps": 1,
            "scratch_dir": tmp_path / "scratch",
        }
        svc = make_services(make_settings(tmp_path / "data", url, training=training))
        try:
            yield svc
        finally:
            svc.close()


def _worker(services: Services) -> Worker:
    t = services.settings.training
    return Worker(services.job_store(), train, lease_s=t.lease_s, poll_s=t.poll_interval_s, scratch=t.scratch_dir)


def _wait(check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_job_trains_registers_a_sealed_version_with_its_card_and_settles_its_charge(trainer: Services) -> None:
    tenant = finetune_tenant(trainer)
    tenant_id = trainer.tenants.get(OP, tenant).id
    dataset = add_tickets(trainer, tenant)
    first = queue_job(trainer, tenant, "tickets")
    second = queue_job(trainer, tenant, "tickets", target_epsilon=0.8)  # retraining: version 2
    outcomes: list[tuple[str, str]] = []
    assert _worker(trainer).run(once=True, on_job=lambda j, o: outcomes.append((j, o))) == 2
    assert outcomes == [(first.id, "succeeded"), (second.id, "succeeded")]

    job = trainer.finetune.get(OP, tenant, first.id)
    assert (job.state, job.model_version, job.step, job.total_steps) == ("succeeded", 1, 3, 3)
    versions = trainer.model_versions.versions(OP, tenant, "tickets-clf")
    assert [(v.version, v.active) for v in versions] == [(1, False), (2, True)]
    assert all(is_sealed(v.source) for v in versions)
    card = trainer.model_versions.card(OP, tenant, "tickets-clf", 1).card
    assert (card["job_id"], card["dataset_id"], card["dataset_hash"]) == (first.id, dataset.id, dataset.content_hash)
    assert card["labels"] == ["billing", "technical"]
    assert (card["noise_multiplier"], card["sample_rate"], card["steps"]) == (job.noise_multiplier, job.sample_rate, 3)
    for key in ("epsilon", "delta", "accountant", "max_grad_norm", "dp_mode", "metrics", "wall_time_s", "device"):
        assert key in card
    with trainer.sessions() as s:
        charge = s.scalar(select(PrivacyCharge).where(PrivacyCharge.job_id == first.id))
        checkpoints = s.scalar(select(func.count()).select_from(Blob).where(Blob.kind == "checkpoint"))
        finished = list(s.scalars(select(AuditEntry.outcome).where(AuditEntry.action == "finetune.job.finish")))
    assert charge is not None and charge.settled and charge.steps == 3
    assert charge.epsilon == pytest.approx(card["epsilon"])  # the ledger charges what the accountant said
    assert charge.epsilon == pytest.approx(epsilon_of([(card["noise_multiplier"], card["sample_rate"], 3)], job.delta))
    assert checkpoints == 0  # a finished job keeps no checkpoint
    assert finished == ["succeeded", "succeeded"]
    served = trainer.model_registry.get("tickets-clf", tenant_id)
    assert (served.kind, served.version, served.source) == ("classifier", 2, versions[1].source)
    assert not list((trainer.settings.training.scratch_dir or Path("/")).glob(f"{SCRATCH_PREFIX}*"))

    rolled = trainer.model_versions.rollback(OP, tenant, "tickets-clf", 1)
    assert rolled.active and trainer.model_registry.get("tickets-clf", tenant_id).source == versions[0].source
    with pytest.raises(Conflict, match="being served"):
        trainer.model_versions.remove_version(OP, tenant, "tickets-clf", 1)
    trainer.model_versions.remove_version(OP, tenant, "tickets-clf", 2)
    assert [v.version for v in trainer.model_versions.versions(OP, tenant, "tickets-clf")] == [1]
    with trainer.sessions() as s:
        actions = set(s.scalars(select(AuditEntry.action).where(AuditEntry.tenant_id == tenant_id)))
    assert {"model.rollback", "model.version.remove", "privacy_budget.charge", "finetune.job.start"} <= actions
    trainer.model_registry.remove("tickets-clf", tenant)  # the model with every version: no sealed file stays
    with trainer.sessions() as s:
        assert s.scalar(select(func.count()).select_from(ModelVersion)) == 0
        kinds = set(s.scalars(select(Blob.kind).where(Blob.tenant_id == tenant_id)))
    assert kinds == {"dataset"}


def test_a_job_cancelled_while_it_trains_ends_cancelled_charged_for_its_steps(trainer: Services, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the queue's backend difference is covered by test_finetune_queue")
    tenant = finetune_tenant(trainer)
    add_tickets(trainer, tenant)
    job = queue_job(trainer, tenant, "tickets", epochs=400)  # 1,200 steps: far longer than the test waits
    worker = _worker(trainer)
    runner = threading.Thread(target=worker.run, kwargs={"once": True})
    runner.start()
    _wait(lambda: trainer.finetune.get(OP, tenant, job.id).step >= 2)
    assert trainer.finetune.cancel(OP, tenant, job.id).state == "cancelling"
    runner.join(60)
    assert not runner.is_alive()
    ended = trainer.finetune.get(OP, tenant, job.id)
    assert ended.state == "cancelled" and ended.model_version is None
    with trainer.sessions() as s:
        charge = s.scalar(select(PrivacyCharge).where(PrivacyCharge.job_id == job.id))
        versions = s.scalar(select(func.count()).select_from(ModelVersion))
    assert charge is not None and charge.settled
    assert 2 <= charge.steps < 1200
    assert charge.epsilon == pytest.approx(
        epsilon_of([(job.noise_multiplier, job.sample_rate, charge.steps)], job.delta)
    )
    assert 0 < charge.epsilon < job.target_epsilon
    assert versions == 0  # nothing half-trained is registered
    report = trainer.privacy_budget.report(OP, tenant)
    assert report.total_spent == pytest.approx(charge.epsilon)


def test_a_stopping_worker_hands_its_job_back_and_the_next_resumes_from_the_checkpoint(
    trainer: Services, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("the queue's backend difference is covered by test_finetune_queue")
    tenant = finetune_tenant(trainer)
    add_tickets(trainer, tenant)
    job = queue_job(trainer, tenant, "tickets", epochs=8)  # 24 steps
    first = _worker(trainer)
    outcomes: list[str] = []
    runner = threading.Thread(target=first.run, kwargs={"once": True, "on_job": lambda _j, o: outcomes.append(o)})
    runner.start()
    _wait(lambda: (trainer.finetune.get(OP, tenant, job.id).resumable_from_step or 0) >= 2)
    first.stop()
    runner.join(60)
    assert outcomes == ["released"]
    paused = trainer.finetune.get(OP, tenant, job.id)
    assert paused.state == "queued" and paused.resumable_from_step is not None
    assert _worker(trainer).run(once=True) == 1
    done = trainer.finetune.get(OP, tenant, job.id)
    assert (done.state, done.step, done.model_version) == ("succeeded", 24, 1)
    with trainer.sessions() as s:
        starts = list(s.scalars(select(AuditEntry.facts).where(AuditEntry.action == "finetune.job.start")))
        charge = s.scalar(select(PrivacyCharge).where(PrivacyCharge.job_id == job.id))
    assert '"resume_from_step":null' in starts[0] and '"resume_from_step":null' not in starts[1]
    card = trainer.model_versions.card(OP, tenant, "tickets-clf").card
    assert charge is not None and charge.steps == 24
    assert charge.epsilon == pytest.approx(card["epsilon"])  # resumed: the same total as one uninterrupted run


def test_a_job_that_fails_mid_run_is_charged_for_every_step_it_ran(trainer: Services, backend: str) -> None:
    """Progress is written seldom (here: never after step 1); the charge is raised before
    each step all the same, so the failed job is charged for exactly the steps that ran."""
    if backend != "sqlite":
        pytest.skip("the queue's backend difference is covered by test_finetune_queue")
    tenant = finetune_tenant(trainer)
    add_tickets(trainer, tenant)
    job = queue_job(trainer, tenant, "tickets", epochs=4)  # 12 steps

    def failing_after_step_5(
        spec: TrainingSpec, examples: Sequence[Example], output_dir: Path, **kw: Any
    ) -> TrainingResult:
        report = kw.pop("on_progress")

        def on_progress(progress: Progress) -> None:
            report(progress)
            if progress.step == 5:
                raise RuntimeError("the device fell over")

        return train(spec, examples, output_dir, on_progress=on_progress, **kw)

    t = trainer.settings.training
    store = DbJobStore(
        trainer.sessions,
        trainer.blobs,
        trainer.audit,
        trainer.privacy_budget,
        trainer.datasets,
        policies=trainer.policies.effective,
        registry=lambda: trainer.model_registry,
        store=lambda: trainer.model_store,
        training=t,
        progress_every_s=3600,
    )
    outcomes: list[tuple[str, str]] = []
    worker = Worker(store, failing_after_step_5, lease_s=t.lease_s, poll_s=t.poll_interval_s, scratch=t.scratch_dir)
    worker.run(once=True, on_job=lambda j, o: outcomes.append((j, o)))
    assert outcomes == [(job.id, "failed")]
    ended = trainer.finetune.get(OP, tenant, job.id)
    assert ended.state == "failed" and ended.step == 1  # what progress showed last
    with trainer.sessions() as s:
        charge = s.scalar(select(PrivacyCharge).where(PrivacyCharge.job_id == job.id))
    assert charge is not None and charge.settled and charge.steps == 5
    assert charge.epsilon == pytest.approx(epsilon_of([(job.noise_multiplier, job.sample_rate, 5)], job.delta))


def test_a_rollback_whose_audit_entry_cannot_be_written_switches_nothing(
    services: Services, backend: str, tmp_path: Path
) -> None:
    if backend != "sqlite":
        pytest.skip("the failing audit trail is a SQLite trigger")
    tenant = finetune_tenant(services)
    tenant_id = services.tenants.get(OP, tenant).id
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    for _ in range(2):
        services.model_registry.add_version(
            tenant_id, "tickets-clf", "classifier", model, card={}, job_id=None, dataset_id=None
        )
    with services.sessions.begin() as s:  # the audit trail refuses exactly this entry
        s.execute(
            text(
                "CREATE TRIGGER refuse_rollback_audit BEFORE INSERT ON audit_entries "
                "WHEN NEW.action = 'model.rollback' BEGIN SELECT RAISE(ABORT, 'audit trail unavailable'); END"
            )
        )
    with pytest.raises(AuditUnavailable):
        services.model_versions.rollback(OP, tenant, "tickets-clf", 1)
    assert services.model_registry.get("tickets-clf", tenant_id).version == 2  # still serving the newest
    with services.sessions.begin() as s:
        s.execute(text("DROP TRIGGER refuse_rollback_audit"))
    services.model_versions.rollback(OP, tenant, "tickets-clf", 1)
    assert services.model_registry.get("tickets-clf", tenant_id).version == 1
    with services.sessions() as s:
        facts = list(s.scalars(select(AuditEntry.facts).where(AuditEntry.action == "model.rollback")))
    assert [json.loads(f) for f in facts] == [{"from_version": 2, "to_version": 1}]


def test_the_runs_secret_is_only_in_its_sealed_checkpoint_never_in_the_job_card_database_or_logs(
    trainer: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """The noise and the Poisson batches come from a secret the engine draws per run: the
    guarantee is void for whoever knows it. The test reads it from the checkpoints the engine
    hands the store (before they are sealed), then looks for it, and the generator seeds
    derived from it, in every row of every table, the job's view, the card and the logs."""
    tenant = finetune_tenant(trainer)
    add_tickets(trainer, tenant)
    job = queue_job(trainer, tenant, "tickets")  # 3 steps, a checkpoint after steps 1 and 2
    drawn: list[int] = []

    def tapped(spec: TrainingSpec, examples: Sequence[Example], output_dir: Path, **kw: Any) -> TrainingResult:
        sink = kw.pop("checkpoints")

        class Tap:
            def save(self, step: int, state: bytes) -> None:
                drawn.append(int(torch.load(io.BytesIO(state), weights_only=True)["secret"]))
                sink.save(step, state)

        return train(spec, examples, output_dir, checkpoints=Tap(), **kw)

    caplog.set_level(logging.DEBUG)
    t = trainer.settings.training
    worker = Worker(trainer.job_store(), tapped, lease_s=t.lease_s, poll_s=t.poll_interval_s, scratch=t.scratch_dir)
    assert worker.run(once=True) == 1
    assert len(drawn) == 2 and len(set(drawn)) == 1
    secret = drawn[0]
    seeds = [secret, _derive(secret, "noise", 0), *(_derive(secret, "batches", e, 0) for e in range(2))]
    needles = [form for n in seeds for form in (str(n), f"{n:x}", f"{n:X}")]

    view = trainer.finetune.get(OP, tenant, job.id)
    assert view.state == "succeeded"
    card = trainer.model_versions.card(OP, tenant, "tickets-clf").card
    with trainer.sessions() as s:
        rows = [repr(tuple(r)) for table in Base.metadata.sorted_tables for r in s.execute(table.select())]
    assert any(job.id in r for r in rows)  # the dump does hold the job's rows
    places = {"job view": repr(view), "card": json.dumps(card), "database": "\n".join(rows), "logs": caplog.text}
    assert [where for where, data in places.items() if any(n in data for n in needles)] == []
    assert card["hyperparameters"]["seed"] == 0  # the public seed is shown, as before
