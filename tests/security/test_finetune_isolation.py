"""Tenant isolation of fine-tuning: another tenant's admin key gets 404, with the same body as
for an id that does not exist, at every endpoint that names a dataset, a job, a trained model
or its card; its app key cannot call the model. One case per endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.roles import Role
from tests.finetune_support import OP, add_tickets, finetune_tenant, queue_job
from tests.support import Stack

MISSING = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def owned(stack: Stack, support_classifier: Path) -> dict[str, Any]:
    """Tenant A with a dataset, a queued job and a trained model of two versions; tenant B's keys."""
    a = finetune_tenant(stack.services, prefix="owner")
    dataset = add_tickets(stack.services, a)
    job = queue_job(stack.services, a, "tickets")
    a_id = stack.services.tenants.get(OP, a).id
    for _ in range(2):
        stack.services.model_registry.add_version(
            a_id, "a-clf", "classifier", support_classifier, card={"epsilon": 1.0}, job_id=job.id, dataset_id=dataset.id
        )
    b = finetune_tenant(stack.services, prefix="other")
    return {
        "a": a,
        "b": b,
        "dataset": dataset.id,
        "job": job.id,
        "b_admin": stack.client(stack.key(Role.TENANT_ADMIN, b)),
        "b_app": stack.client(stack.key(Role.APP, b)),
    }


# (method, path with {a}/{b}/{id}/{model}, json body): the same path with a missing id is the control.
CASES = [
    ("GET", "/admin/v1/tenants/{b}/datasets/{dataset}", None),
    ("DELETE", "/admin/v1/tenants/{b}/datasets/{dataset}", None),
    ("GET", "/admin/v1/tenants/{b}/finetune/jobs/{job}", None),
    ("POST", "/admin/v1/tenants/{b}/finetune/jobs/{job}/cancel", None),
    ("GET", "/admin/v1/tenants/{b}/models/{model}/versions", None),
    ("GET", "/admin/v1/tenants/{b}/models/{model}/versions/1", None),
    ("GET", "/admin/v1/tenants/{b}/models/{model}/card", None),
    ("POST", "/admin/v1/tenants/{b}/models/{model}/rollback", {"to": 1}),
    ("DELETE", "/admin/v1/tenants/{b}/models/{model}/versions/1", None),
]


def _fill(path: str, owned: dict[str, Any], *, dataset: str, job: str, model: str) -> str:
    return path.format(a=owned["a"], b=owned["b"], dataset=dataset, job=job, model=model)


def _same_problem(theirs: httpx.Response, missing: httpx.Response) -> None:
    assert theirs.status_code == missing.status_code == 404, (theirs.text, missing.text)
    strip = ("instance", "request_id")
    assert {k: v for k, v in theirs.json().items() if k not in strip} == {
        k: v for k, v in missing.json().items() if k not in strip
    }


@pytest.mark.parametrize(("method", "path", "body"), CASES, ids=[f"{m} {p}" for m, p, _ in CASES])
def test_another_tenants_object_looks_like_one_that_does_not_exist(
    owned: dict[str, Any], method: str, path: str, body: dict[str, Any] | None
) -> None:
    client: httpx.Client = owned["b_admin"]
    theirs = client.request(
        method, _fill(path, owned, dataset=owned["dataset"], job=owned["job"], model="a-clf"), json=body
    )
    missing = client.request(method, _fill(path, owned, dataset=MISSING, job=MISSING, model="no-such-model"), json=body)
    if "{model}" in path:  # the message names the model asked for; nothing else may differ
        missing = httpx.Response(
            missing.status_code,
            json={
                k: (v.replace("no-such-model", "a-clf") if isinstance(v, str) else v) for k, v in missing.json().items()
            },
        )
    _same_problem(theirs, missing)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/v1/tenants/{a}/datasets",
        "/admin/v1/tenants/{a}/datasets/{dataset}",
        "/admin/v1/tenants/{a}/finetune/jobs",
        "/admin/v1/tenants/{a}/finetune/jobs/{job}",
        "/admin/v1/tenants/{a}/models/a-clf/versions",
        "/admin/v1/tenants/{a}/models/a-clf/card",
        "/admin/v1/tenants/{a}/privacy-budget",
    ],
)
def test_the_owner_tenants_paths_look_like_a_tenant_that_does_not_exist(owned: dict[str, Any], path: str) -> None:
    client: httpx.Client = owned["b_admin"]
    theirs = client.get(_fill(path, owned, dataset=owned["dataset"], job=owned["job"], model="a-clf"))
    missing = client.get(path.format(a="no-such-tenant", dataset=MISSING, job=MISSING))
    _same_problem(theirs, missing)


def test_a_job_on_another_tenants_dataset_is_refused_as_missing(owned: dict[str, Any]) -> None:
    client: httpx.Client = owned["b_admin"]
    body = {"task": "classifier", "output_model": "steal", "target_epsilon": 1.0}
    theirs = client.post(f"/admin/v1/tenants/{owned['b']}/finetune/jobs", json={**body, "dataset": owned["dataset"]})
    missing = client.post(f"/admin/v1/tenants/{owned['b']}/finetune/jobs", json={**body, "dataset": MISSING})
    _same_problem(theirs, missing)


def test_another_tenants_app_cannot_call_the_trained_model(owned: dict[str, Any]) -> None:
    client: httpx.Client = owned["b_app"]
    theirs = client.post("/v1/classifications", json={"model": "a-clf", "input": "refund"})
    missing = client.post("/v1/classifications", json={"model": "zz-clf", "input": "refund"})
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"].replace("a-clf", "M") == missing.json()["detail"].replace("zz-clf", "M")
    assert "a-clf" not in str(client.get("/v1/models").json())
