"""The job queue the worker claims from, on SQLite (one worker at a time, by lease) and
PostgreSQL (SKIP LOCKED, workers side by side); takeover of a dead worker's job; the budget
checked again at start."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from appliance.db.base import utcnow
from appliance.db.models import AuditEntry, Blob, FinetuneJob, ModelVersion, PrivacyCharge, WorkerLease
from appliance.services.container import Services
from appliance.training.accounting import epsilon_of
from tests.finetune_support import COMPLIANCE, OP, add_tickets, finetune_policy, finetune_tenant, queue_job


@pytest.fixture
def sqlite_only(backend: str) -> None:
    """Skips before a database is made: SQLite's rule (one worker at a time), or logic the
    claim test already ran on both backends."""
    if backend != "sqlite":
        pytest.skip("covered on SQLite; PostgreSQL's claims are tested above")


@pytest.fixture
def postgres_only(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("SKIP LOCKED is PostgreSQL's queue")


def _row(services: Services, job_id: str) -> FinetuneJob:
    with services.sessions() as s:
        row = s.get(FinetuneJob, job_id)
        assert row is not None
        return row


def _expire(services: Services, job_id: str) -> None:
    """What a worker's death looks like after ``training.lease_s``: its lease ran out."""
    past = utcnow() - timedelta(seconds=1)
    with services.sessions.begin() as s:
        s.execute(update(FinetuneJob).where(FinetuneJob.id == job_id).values(lease_expires_at=past))
        s.execute(update(WorkerLease).values(expires_at=past))


def test_a_worker_claims_the_oldest_queued_job_and_opens_its_charge(services: Services) -> None:
    tenant = finetune_tenant(services)
    add_tickets(services, tenant)
    first = queue_job(services, tenant, "tickets")
    second = queue_job(services, tenant, "tickets", output_model="other")
    store = services.job_store()
    claimed = store.claim("worker-a")
    assert claimed is not None
    assert (claimed.id, claimed.attempt, claimed.worker_id) == (first.id, 1, "worker-a")
    row = _row(services, first.id)
    assert (row.state, row.worker_id, row.attempts) == ("running", "worker-a", 1)
    assert row.lease_expires_at is not None and row.lease_expires_at > utcnow()
    assert _row(services, second.id).state == "queued"
    with services.sessions() as s:
        charge = s.scalar(select(PrivacyCharge).where(PrivacyCharge.job_id == first.id))
        opened = s.scalar(select(AuditEntry.outcome).where(AuditEntry.action == "privacy_budget.charge"))
    assert charge is not None and (charge.steps, charge.settled) == (0, False)
    assert opened == "opened"
    assert store.renew(claimed)
    assert not store.cancel_requested(claimed)


def test_on_sqlite_a_second_worker_waits_until_the_first_ones_lease_expires(
    sqlite_only: None, services: Services
) -> None:
    tenant = finetune_tenant(services)
    add_tickets(services, tenant)
    job = queue_job(services, tenant, "tickets")
    other = queue_job(services, tenant, "tickets", output_model="other")
    store = services.job_store()
    assert store.claim("worker-a") is not None
    assert store.claim("worker-b") is None  # worker-a holds the SQLite lease, even for the other job
    store.leave("worker-a")  # a worker that exits cleanly gives the lease up at once
    taken = store.claim("worker-b")
    assert taken is not None and taken.id == other.id
    _expire(services, job.id)  # worker-b died too: its lease and worker-a's job's have run out
    takeover = store.claim("worker-c")
    assert takeover is not None and takeover.id == job.id and takeover.attempt == 2


def test_on_postgresql_a_job_locked_by_one_worker_is_skipped_by_the_next(
    postgres_only: None, services: Services
) -> None:
    tenant = finetune_tenant(services)
    add_tickets(services, tenant)
    first = queue_job(services, tenant, "tickets")
    second = queue_job(services, tenant, "tickets", output_model="other")
    store = services.job_store()
    with services.sessions.begin() as holder:  # a worker in the middle of claiming the first job
        locked = holder.scalar(select(FinetuneJob).where(FinetuneJob.id == first.id).with_for_update())
        assert locked is not None
        claimed = store.claim("worker-b")  # does not wait for the lock: takes the next job
        assert claimed is not None and claimed.id == second.id
    again = store.claim("worker-c")
    assert again is not None and again.id == first.id
    assert store.claim("worker-d") is None


def test_a_job_whose_worker_died_is_taken_over_then_fails_after_max_attempts(
    sqlite_only: None, services: Services
) -> None:
    tenant = finetune_tenant(services)
    add_tickets(services, tenant)
    job = queue_job(services, tenant, "tickets")
    store = services.job_store()
    attempts = services.settings.training.max_attempts
    for attempt in range(1, attempts + 1):
        claimed = store.claim(f"worker-{attempt}")
        assert claimed is not None and claimed.attempt == attempt
        _expire(services, job.id)
    assert store.claim("worker-last") is None
    row = _row(services, job.id)
    assert row.state == "failed"
    assert f"stopped {attempts} times" in str(row.error)
    with services.sessions() as s:
        charge = s.scalar(select(PrivacyCharge).where(PrivacyCharge.job_id == job.id))
    assert charge is not None and charge.settled


def test_a_job_is_refused_at_start_when_the_budget_shrank_after_it_was_queued(
    sqlite_only: None, services: Services
) -> None:
    tenant = finetune_tenant(services)
    add_tickets(services, tenant)
    job = queue_job(services, tenant, "tickets", target_epsilon=1.0)
    services.policies.apply(COMPLIANCE, tenant, finetune_policy(max_epsilon_per_dataset=0.5), "tighter")
    assert services.job_store().claim("worker-a") is None
    row = _row(services, job.id)
    assert row.state == "failed"
    assert "refused when it was about to start" in str(row.error) and "dataset" in str(row.error)


def test_a_cancel_reaches_the_running_worker_and_a_dead_workers_cancelled_job_ends_cancelled(
    sqlite_only: None, services: Services
) -> None:
    tenant = finetune_tenant(services)
    add_tickets(services, tenant)
    job = queue_job(services, tenant, "tickets")
    store = services.job_store()
    claimed = store.claim("worker-a")
    assert claimed is not None
    assert services.finetune.cancel(OP, tenant, job.id).state == "cancelling"
    assert store.cancel_requested(claimed)
    _expire(services, job.id)
    store.leave("worker-a")
    assert store.claim("worker-b") is None
    assert _row(services, job.id).state == "cancelled"


def test_maintenance_sweeps_dataset_and_checkpoint_blobs_nothing_names(sqlite_only: None, services: Services) -> None:
    tenant = finetune_tenant(services)
    tenant_id = services.tenants.get(OP, tenant).id
    kept = add_tickets(services, tenant)
    left = [services.blobs.put(tenant_id, kind, b"sealed leftovers").id for kind in ("dataset", "checkpoint")]
    young = services.blobs.put(tenant_id, "checkpoint", b"a worker may be writing this one").id
    with services.sessions.begin() as s:
        s.execute(update(Blob).where(Blob.id.in_(left)).values(created_at=utcnow() - timedelta(hours=2)))
        s.execute(
            update(Blob)
            .where(Blob.kind == "dataset", Blob.id.not_in(left))
            .values(created_at=utcnow() - timedelta(hours=2))
        )
    assert services.datasets.sweep_orphans() == 2
    with services.sessions() as s:
        remaining = set(s.scalars(select(Blob.id).where(Blob.tenant_id == tenant_id)))
    assert not set(left) & remaining
    assert young in remaining
    assert services.datasets.load(tenant_id, kept.id).rows  # the dataset's own blob stays


def test_a_taken_over_job_whose_version_is_already_registered_is_finished_not_trained_again(
    sqlite_only: None, services: Services, tmp_path: Path
) -> None:
    tenant = finetune_tenant(services)
    tenant_id = services.tenants.get(OP, tenant).id
    dataset = add_tickets(services, tenant)
    job = queue_job(services, tenant, "tickets")
    store = services.job_store()
    assert store.claim("worker-a") is not None
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    # What a worker of a release that registered and ended the job in two transactions left
    # when it died between them: the version is served, the job still running.
    services.model_registry.add_version(
        tenant_id, "tickets-clf", "classifier", model, card={}, job_id=job.id, dataset_id=dataset.id
    )
    _expire(services, job.id)
    assert store.claim("worker-b") is None  # finished, not handed out to train again
    row = _row(services, job.id)
    assert (row.state, row.model_version, row.attempts, row.step) == ("succeeded", 1, 1, row.planned_steps)
    with services.sessions() as s:
        charge = s.scalar(select(PrivacyCharge).where(PrivacyCharge.job_id == job.id))
        versions = s.scalar(select(func.count()).select_from(ModelVersion))
        finish = s.scalar(select(AuditEntry.facts).where(AuditEntry.action == "finetune.job.finish"))
    assert versions == 1
    assert charge is not None and charge.settled and charge.steps == row.planned_steps
    assert charge.epsilon == pytest.approx(
        epsilon_of([(row.noise_multiplier, row.sample_rate, row.planned_steps)], row.delta)
    )
    assert finish is not None and json.loads(finish)["recovered"] is True


def test_the_charge_is_raised_before_each_step_and_only_by_the_jobs_worker(
    sqlite_only: None, services: Services
) -> None:
    tenant = finetune_tenant(services)
    add_tickets(services, tenant)
    job = queue_job(services, tenant, "tickets")
    store = services.job_store()
    claimed = store.claim("worker-a")
    assert claimed is not None
    assert store.charge(claimed, 1, 0.0)
    assert store.charge(claimed, 2, 0.1)
    assert store.charge(claimed, 1, 0.0)  # never lowers it
    with services.sessions() as s:
        charge = s.scalar(select(PrivacyCharge).where(PrivacyCharge.job_id == job.id))
    assert charge is not None and (charge.steps, charge.settled) == (2, False)
    _expire(services, job.id)
    taken = store.claim("worker-b")
    assert taken is not None
    assert not store.charge(claimed, 3, 0.2)  # worker-a lost the job: its step must not run
    assert store.charge(taken, 3, 0.2)
