"""Fine-tuning jobs and the privacy-budget ledger through real HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select

from appliance.db.models import AuditEntry, FinetuneJob
from appliance.roles import Role
from appliance.training.accounting import noise_multiplier_for, sample_rate_for
from tests.finetune_support import OP, TICKETS, add_tickets, finetune_tenant, tickets_jsonl
from tests.support import Stack

JOB = {"dataset": "tickets", "task": "classifier", "output_model": "tickets-clf", "epochs": 1, "batch_size": 4}


@pytest.fixture(scope="module")
def ready(stack: Stack) -> tuple[str, httpx.Client]:
    """A tenant with a dataset and its admin's client, for tests that store nothing."""
    tenant = finetune_tenant(stack.services)
    add_tickets(stack.services, tenant)
    return tenant, stack.client(stack.key(Role.TENANT_ADMIN, tenant))


def _jobs(tenant: str) -> str:
    return f"/admin/v1/tenants/{tenant}/finetune/jobs"


def test_a_job_is_queued_with_the_noise_opacus_computes_for_its_target(stack: Stack) -> None:
    tenant = finetune_tenant(stack.services)
    add_tickets(stack.services, tenant)
    admin = stack.client(stack.key(Role.TENANT_ADMIN, tenant))
    r = admin.post(_jobs(tenant), json={**JOB, "target_epsilon": 1.0})
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["state"], job["step"], job["epsilon_spent"], job["attempts"]) == ("queued", 0, 0.0, 0)
    train_rows = job["settings"]["train_rows"]
    assert 0 < train_rows < 12  # the held-out rows measure the card's metrics
    assert job["delta"] <= 1e-5 and job["delta"] < 1 / 12  # the policy's delta, below 1/n
    assert job["sample_rate"] == sample_rate_for(train_rows, 4)
    assert job["noise_multiplier"] == pytest.approx(
        noise_multiplier_for(1.0, job["delta"], job["sample_rate"], epochs=1)
    )
    assert admin.get(f"{_jobs(tenant)}/{job['id']}").json()["id"] == job["id"]
    assert [j["id"] for j in admin.get(_jobs(tenant), params={"state": "queued"}).json()["items"]] == [job["id"]]
    assert admin.get(_jobs(tenant), params={"state": "succeeded"}).json() == {"items": [], "next_cursor": None}
    with stack.services.sessions() as s:
        facts = s.scalar(select(AuditEntry.facts).where(AuditEntry.object == f"job:{job['id']}"))
    assert json.loads(str(facts))["target_epsilon"] == 1.0


@pytest.mark.parametrize(
    ("change", "status", "needle"),
    [
        ({"delta": 0.2}, 422, "below 1/n"),
        ({"delta": 1e-4}, 422, "above the policy's finetune.delta"),
        ({"task": "lora"}, 422, "trains on a generation dataset"),
        ({"base_model": "no-such-model"}, 404, "no base model"),
        ({"base_model": "smollm2-135m-instruct"}, 422, "needs a local embedding model"),
        ({"dataset": "nope"}, 404, "no such dataset"),
        ({"output_model": "all-minilm-l6-v2"}, 422, "built-in"),
        ({"output_model": "Bad Name"}, 422, "output_model"),
        ({"batch_size": 0}, 422, "batch_size"),
        ({"target_epsilon": 1000}, 422, "target_epsilon"),
        ({"unknown": 1}, 422, "unknown"),
    ],
)
def test_a_job_that_cannot_run_is_refused_with_the_reason(
    stack: Stack, ready: tuple[str, httpx.Client], change: dict[str, object], status: int, needle: str
) -> None:
    tenant, admin = ready
    r = admin.post(_jobs(tenant), json={**JOB, "target_epsilon": 1.0, **change})
    assert r.status_code == status, r.text
    assert needle in r.text


def test_the_ledger_refuses_a_job_past_the_dataset_budget_naming_spent_reserved_and_asked(stack: Stack) -> None:
    tenant = finetune_tenant(stack.services, max_epsilon_per_dataset=1.2, max_epsilon_total=10)
    add_tickets(stack.services, tenant)
    admin = stack.client(stack.key(Role.TENANT_ADMIN, tenant))
    first = admin.post(_jobs(tenant), json={**JOB, "target_epsilon": 1.0})
    assert first.status_code == 201
    second = admin.post(_jobs(tenant), json={**JOB, "target_epsilon": 1.0})
    assert second.status_code == 409
    problem = second.json()
    assert problem["type"] == "urn:appliance:problem:privacy-budget-exceeded"
    budget = problem["budget"]
    assert budget["name"] == "dataset tickets"
    assert (budget["limit"], budget["spent"], budget["requested"]) == (1.2, 0.0, 1.0)
    assert budget["reserved"] == pytest.approx(1.0, abs=0.05)  # the first job, not run yet
    assert budget["would_be"] > 1.2  # composed with RDP: less than the 2.0 a sum would say
    assert "dataset tickets budget" in problem["detail"]

    cancelled = admin.post(f"{_jobs(tenant)}/{first.json()['id']}/cancel")
    assert cancelled.json()["state"] == "cancelled"  # never started: nothing charged
    assert admin.post(_jobs(tenant), json={**JOB, "target_epsilon": 1.0}).status_code == 201


def test_the_ledger_refuses_a_job_past_the_tenants_period_total(stack: Stack) -> None:
    tenant = finetune_tenant(stack.services, max_epsilon_per_dataset=1.0, max_epsilon_total=1.5)
    add_tickets(stack.services, tenant, name="one")
    other_rows = [(f"{text} again", label) for text, label in TICKETS]  # other content: a budget of its own
    stack.services.datasets.add(OP, tenant, "two", tickets_jsonl(other_rows), fmt="jsonl")
    admin = stack.client(stack.key(Role.TENANT_ADMIN, tenant))
    assert admin.post(_jobs(tenant), json={**JOB, "dataset": "one", "target_epsilon": 1.0}).status_code == 201
    r = admin.post(_jobs(tenant), json={**JOB, "dataset": "two", "target_epsilon": 1.0})
    assert r.status_code == 409
    assert r.json()["budget"]["name"] == "tenant total over 365 days"
    assert r.json()["budget"]["would_be"] == pytest.approx(2.0)


def test_compliance_reads_the_budget_and_other_tenants_see_nothing(stack: Stack) -> None:
    tenant = finetune_tenant(stack.services)
    add_tickets(stack.services, tenant)
    admin = stack.client(stack.key(Role.TENANT_ADMIN, tenant))
    job = admin.post(_jobs(tenant), json={**JOB, "target_epsilon": 1.0}).json()
    compliance = stack.client(stack.key(Role.COMPLIANCE))
    report = compliance.get(f"/admin/v1/tenants/{tenant}/privacy-budget")
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["total_limit"], body["per_dataset_limit"], body["accountant"]) == (10.0, 3.0, "rdp")
    assert body["total_spent"] == 0 and body["total_reserved"] == pytest.approx(1.0)
    assert [c["job_id"] for c in body["charges"]] == [job["id"]]
    assert body["datasets"][0]["name"] == "tickets"
    assert compliance.post(_jobs(tenant), json={**JOB, "target_epsilon": 1.0}).status_code == 403

    other = finetune_tenant(stack.services)
    outsider = stack.client(stack.key(Role.TENANT_ADMIN, other))
    for path in (f"/admin/v1/tenants/{tenant}/privacy-budget", f"{_jobs(tenant)}/{job['id']}", _jobs(tenant)):
        assert outsider.get(path).status_code == 404
    missing = outsider.get(f"{_jobs(other)}/{job['id']}")
    nonexistent = outsider.get(f"{_jobs(other)}/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == nonexistent.status_code == 404
    assert missing.json()["detail"] == nonexistent.json()["detail"]
    assert outsider.post(f"{_jobs(other)}/{job['id']}/cancel").status_code == 404


def _spend_the_whole_plan(stack: Stack, tenant: str, job_id: str) -> None:
    """What a worker that ran every planned step and then handed the job back leaves: the
    charge opened and raised to the plan (the budget service's own calls); cancelling the job
    then settles it at what ran."""
    budget = stack.services.privacy_budget
    with stack.services.sessions.begin() as s:
        row = s.get(FinetuneJob, job_id)
        assert row is not None
        budget.open(s, row)
        budget.raise_to(s, row, row.planned_steps, row.target_epsilon)
    assert stack.services.finetune.cancel(OP, tenant, job_id).state == "cancelled"


def test_the_same_rows_uploaded_again_or_after_a_delete_share_one_dataset_budget(stack: Stack) -> None:
    tenant = finetune_tenant(stack.services, max_epsilon_per_dataset=1.2, max_epsilon_total=10)
    admin = stack.client(stack.key(Role.TENANT_ADMIN, tenant))
    first = add_tickets(stack.services, tenant)
    spent = admin.post(_jobs(tenant), json={**JOB, "target_epsilon": 1.0})
    assert spent.status_code == 201, spent.text
    _spend_the_whole_plan(stack, tenant, spent.json()["id"])

    # The same rows, shuffled, under another name: the same data, so the same budget.
    again = stack.services.datasets.add(OP, tenant, "again", tickets_jsonl(TICKETS[::-1]), fmt="jsonl")
    assert again.content_hash == first.content_hash
    refused = admin.post(_jobs(tenant), json={**JOB, "dataset": "again", "target_epsilon": 1.0})
    assert refused.status_code == 409, refused.text
    budget = refused.json()["budget"]
    assert budget["name"] == "dataset again (with 1 other upload of the same content)"
    assert budget["spent"] == pytest.approx(1.0, abs=0.05)

    # Deleting every upload does not refund what the rows spent.
    for name in ("tickets", "again"):
        assert admin.delete(f"/admin/v1/tenants/{tenant}/datasets/{name}").status_code == 200
    add_tickets(stack.services, tenant, name="fresh")
    after_delete = admin.post(_jobs(tenant), json={**JOB, "dataset": "fresh", "target_epsilon": 1.0})
    assert after_delete.status_code == 409, after_delete.text
    assert after_delete.json()["budget"]["spent"] == pytest.approx(1.0, abs=0.05)

    # Other rows are another dataset (near-duplicates are not recognised: the period total bounds them).
    edited = [(f"{text}!", label) for text, label in TICKETS]
    stack.services.datasets.add(OP, tenant, "edited", tickets_jsonl(edited), fmt="jsonl")
    assert admin.post(_jobs(tenant), json={**JOB, "dataset": "edited", "target_epsilon": 1.0}).status_code == 201

    report = admin.get(f"/admin/v1/tenants/{tenant}/privacy-budget").json()
    shared = next(d for d in report["datasets"] if d["content_hash"] == first.content_hash)
    assert shared["name"] == "fresh"
    assert set(shared["dataset_ids"]) == {first.id, shared["dataset_id"]}  # charged, and stored now
    assert shared["epsilon_spent"] == pytest.approx(1.0, abs=0.05)
    assert report["charges"][0]["content_hash"] == first.content_hash
