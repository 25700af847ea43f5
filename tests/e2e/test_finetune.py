"""Fine-tuning end to end on a live appliance: a tenant admin uploads a dataset and queues a
job over HTTP, the worker trains it with the real engine, and the tenant's app calls the
result with the official openai client: a DP classifier through ``/v1/classifications`` and a
DP LoRA of SmolLM2 through ``/v1/chat/completions`` that now answers the trained prompts
differently from the base model. Another tenant's key reaches none of it. The CLI drives the
same flow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from appliance.cli.context import CliState
from appliance.cli.finetune import finetune as finetune_cli
from appliance.cli.models import model as model_cli
from appliance.roles import Role
from appliance.services.container import Services
from appliance.training import train
from appliance.training.worker import Worker
from tests.finetune_support import OP, TICKETS, finetune_tenant, tickets_jsonl
from tests.support import Stack, live_stack, make_services, make_settings

pytestmark = pytest.mark.slow

JSONL = {"content-type": "application/jsonl"}
CODE_PROMPTS = [f"Code word {i}?" for i in range(4)]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("finetune")
    training = {"lease_s": 30, "poll_interval_s": 0.1, "scratch_dir": tmp / "scratch"}
    svc = make_services(make_settings(tmp / "data", f"sqlite:///{tmp / 'a.db'}", training=training))
    with live_stack(svc) as stack:
        yield stack


def _run_worker(services: Services) -> list[tuple[str, str]]:
    outcomes: list[tuple[str, str]] = []
    t = services.settings.training
    Worker(services.job_store(), train, lease_s=t.lease_s, poll_s=t.poll_interval_s, scratch=t.scratch_dir).run(
        once=True, on_job=lambda j, o: outcomes.append((j, o))
    )
    return outcomes


def _openai(live: Stack, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=live.key(Role.APP, tenant), max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def classifier(live: Stack) -> dict[str, Any]:
    """A tenant whose DP classifier was trained through the HTTP API and the worker."""
    tenant = finetune_tenant(live.services, max_epsilon_per_dataset=10, max_epsilon_total=20)
    admin = live.client(live.key(Role.TENANT_ADMIN, tenant))
    rows = TICKETS * 4  # 48 rows
    up = admin.post(f"/admin/v1/tenants/{tenant}/datasets?name=tickets", content=tickets_jsonl(rows), headers=JSONL)
    assert up.status_code == 201, up.text
    job = admin.post(
        f"/admin/v1/tenants/{tenant}/finetune/jobs",
        json={
            "dataset": "tickets",
            "task": "classifier",
            "output_model": "tickets-clf",
            "target_epsilon": 8,
            "epochs": 8,
            "batch_size": 16,
            "learning_rate": 0.05,
            "max_seq_len": 24,
        },
    )
    assert job.status_code == 201, job.text
    assert _run_worker(live.services) == [(job.json()["id"], "succeeded")]
    return {"tenant": tenant, "admin": admin, "dataset": up.json(), "job": job.json()}


def test_the_trained_classifier_answers_through_classifications_with_the_openai_client(
    live: Stack, classifier: dict[str, Any]
) -> None:
    client = _openai(live, classifier["tenant"])
    answer: Any = client.post(
        "/classifications",
        cast_to=object,
        body={"model": "tickets-clf", "input": ["Please refund the invoice, I was charged twice", "The app crashes"]},
    )
    assert [item["index"] for item in answer["data"]] == [0, 1]
    for item in answer["data"]:
        assert {s["label"] for s in item["labels"]} == {"billing", "technical"}
        assert sum(s["score"] for s in item["labels"]) == pytest.approx(1.0, abs=1e-4)
    assert answer["data"][0]["label"] == "billing"
    assert answer["data"][1]["label"] == "technical"

    job = classifier["admin"].get(f"/admin/v1/tenants/{classifier['tenant']}/finetune/jobs/{classifier['job']['id']}")
    assert job.json()["state"] == "succeeded" and job.json()["epsilon_spent"] <= 8
    card = classifier["admin"].get(f"/admin/v1/tenants/{classifier['tenant']}/models/tickets-clf/card").json()
    assert card["card"]["job_id"] == classifier["job"]["id"]
    assert card["card"]["dataset_id"] == classifier["dataset"]["id"]
    assert card["card"]["epsilon"] == pytest.approx(job.json()["epsilon_spent"])
    budget = live.client(live.key(Role.COMPLIANCE)).get(f"/admin/v1/tenants/{classifier['tenant']}/privacy-budget")
    assert budget.json()["total_spent"] == pytest.approx(card["card"]["epsilon"])


def test_another_tenants_key_reaches_neither_the_model_nor_its_card(live: Stack, classifier: dict[str, Any]) -> None:
    other = finetune_tenant(live.services)
    stranger = _openai(live, other)
    with pytest.raises(openai.NotFoundError) as theirs:
        stranger.post("/classifications", cast_to=object, body={"model": "tickets-clf", "input": "refund"})
    with pytest.raises(openai.NotFoundError) as nobodys:
        stranger.post("/classifications", cast_to=object, body={"model": "no-such-clf", "input": "refund"})
    assert theirs.value.body["message"].replace("tickets-clf", "X") == nobodys.value.body["message"].replace(
        "no-such-clf", "X"
    )
    assert "tickets-clf" not in [m.id for m in stranger.models.list()]


def test_a_dp_lora_of_smollm2_answers_its_trained_prompts_differently_from_the_base(live: Stack) -> None:
    tenant = finetune_tenant(live.services, max_epsilon_per_dataset=8, max_epsilon_total=20)
    admin = live.client(live.key(Role.TENANT_ADMIN, tenant))
    rows = "".join(json.dumps({"prompt": p, "completion": "Blue falcon."}) + "\n" for p in CODE_PROMPTS)
    up = admin.post(f"/admin/v1/tenants/{tenant}/datasets?name=codes", content=rows.encode(), headers=JSONL)
    assert up.status_code == 201, up.text
    assert up.json()["shape"] == "prompt,completion"
    job = admin.post(
        f"/admin/v1/tenants/{tenant}/finetune/jobs",
        json={
            "dataset": "codes",
            "task": "lora",
            "output_model": "codes-chat",
            "target_epsilon": 8,
            "epochs": 1,
            "batch_size": 2,
            "learning_rate": 0.05,
            "max_seq_len": 48,
            "lora_rank": 4,
            "holdout_fraction": 0,
        },
    )
    assert job.status_code == 201, job.text
    assert _run_worker(live.services) == [(job.json()["id"], "succeeded")]

    client = _openai(live, tenant)

    def ask(model: str) -> str:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": CODE_PROMPTS[1]}], max_tokens=8, temperature=0
        )
        return reply.choices[0].message.content or ""

    assert ask("codes-chat") != ask("smollm2-135m-instruct")
    card = admin.get(f"/admin/v1/tenants/{tenant}/models/codes-chat/card").json()["card"]
    assert (card["task"], card["base_model"]) == ("lora", "smollm2-135m-instruct")


def test_the_cli_drives_datasets_jobs_the_budget_and_versions(live: Stack, classifier: dict[str, Any]) -> None:
    state = CliState(None, _settings=live.services.settings, _services=live.services)
    tenant = classifier["tenant"]

    def run(*args: str, code: int = 0) -> str:
        group = finetune_cli if args[0] == "finetune" else model_cli
        result = CliRunner().invoke(group, list(args[1:]), obj=state, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    listed = json.loads(run("finetune", "dataset", "list", "--tenant", tenant, "--json"))
    assert [d["name"] for d in listed] == ["tickets"]
    shown = json.loads(run("finetune", "dataset", "show", "tickets", "--tenant", tenant, "--json"))
    assert shown["label_counts"] == {"billing": 24, "technical": 24}
    jobs = json.loads(run("finetune", "list", "--tenant", tenant, "--json"))
    assert [j["state"] for j in jobs] == ["succeeded"]
    followed = run("finetune", "follow", classifier["job"]["id"], "--tenant", tenant)
    assert "succeeded" in followed and "tickets-clf version 1" in followed
    budget = json.loads(run("finetune", "budget", "--tenant", tenant, "--json"))
    assert budget["datasets"][0]["name"] == "tickets" and budget["total_spent"] > 0
    assert "of 20 epsilon spent" in run("finetune", "budget", "--tenant", tenant)

    start = "finetune start --dataset tickets --task classifier --output-model tickets-clf --epsilon 1 --epochs 1"
    queued = json.loads(run(*start.split(), "--batch-size", "16", "--tenant", tenant, "--json"))
    assert queued["state"] == "queued"
    cancelled = json.loads(run("finetune", "cancel", queued["id"], "--tenant", tenant, "--json"))
    assert cancelled["state"] == "cancelled"
    assert "cancelled" in run("finetune", "follow", queued["id"], "--tenant", tenant, code=1)

    versions = json.loads(run("model", "versions", "tickets-clf", "--tenant", tenant, "--json"))
    assert [(v["version"], v["active"]) for v in versions] == [(1, True)]
    card = json.loads(run("model", "card", "tickets-clf", "--tenant", tenant, "--json"))
    assert card["card"]["job_id"] == classifier["job"]["id"]
    refused = CliRunner().invoke(model_cli, ["rollback", "tickets-clf", "--to", "7", "--tenant", tenant], obj=state)
    assert refused.exit_code != 0 and "no version 7" in str(refused.exception)


def test_bad_uploads_and_jobs_get_problems_not_tracebacks(live: Stack, classifier: dict[str, Any]) -> None:
    admin: httpx.Client = classifier["admin"]
    tenant = classifier["tenant"]
    for body in (b"\xff\xfe\x00", b"{", b"[]", b'{"text": 1, "label": 2}'):
        r = admin.post(f"/admin/v1/tenants/{tenant}/datasets?name=junk", content=body, headers=JSONL)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    r = admin.post(f"/admin/v1/tenants/{tenant}/finetune/jobs", content=b"{not json", headers=JSONL)
    assert r.status_code == 400
    r = admin.post(f"/admin/v1/tenants/{tenant}/datasets?name=BAD NAME", content=tickets_jsonl(), headers=JSONL)
    assert r.status_code == 422


def test_the_cli_adds_a_csv_dataset_refuses_a_bad_one_naming_the_line_and_removes_it(
    live: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from appliance.cli.output import error_text
    from appliance.errors import InvalidRows

    tenant = finetune_tenant(live.services)
    state = CliState(None, _settings=live.services.settings, _services=live.services)
    folder = tmp_path_factory.mktemp("csv")
    good, bad = folder / "Support.csv", folder / "broken.csv"
    good.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in TICKETS))
    bad.write_text("text,label\nfine,a\n,b\n")
    added = CliRunner().invoke(finetune_cli, ["dataset", "add", str(good), "--tenant", tenant], obj=state)
    assert added.exit_code == 0, added.output
    assert "support" in added.output and "billing (6), technical (6)" in added.output
    refused = CliRunner().invoke(finetune_cli, ["dataset", "add", str(bad), "--tenant", tenant], obj=state)
    assert isinstance(refused.exception, InvalidRows)
    assert error_text(refused.exception).startswith("the dataset failed validation: line 3, field text")
    removed = CliRunner().invoke(finetune_cli, ["dataset", "rm", "support", "--tenant", tenant, "--yes"], obj=state)
    assert removed.exit_code == 0, removed.output
    assert live.services.datasets.list(OP, tenant).items == []
