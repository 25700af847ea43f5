"""``POST /v1/classifications`` on a live appliance with a tenant-owned classifier (trained for
the session on MiniLM), called with the official openai client: the privacy pipeline runs as
for embeddings, the model sees only pseudonyms, other tenants cannot reach the model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from appliance.cli.context import CliState
from appliance.cli.models import model as model_cli
from appliance.db.models import AuditEntry
from appliance.roles import Role
from appliance.services.principal import Principal
from tests.support import SeenInputs, Stack, live_stack, make_services, make_settings

pytestmark = pytest.mark.slow

CLF = "support-clf"
SECRET_NAME = "Marguerite Okonkwo-Lindqvist"
SECRET_EMAIL = "m.okonkwo.lindqvist@example.org"


@pytest.fixture(scope="module")
def seen() -> SeenInputs:
    return SeenInputs()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, seen: SeenInputs) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("classify")
    svc = make_services(make_settings(tmp / "data", f"sqlite:///{tmp / 'a.db'}"), model_observer=seen)
    with live_stack(svc) as stack:
        yield stack


@pytest.fixture(scope="module")
def owner(live: Stack, support_classifier: Path) -> str:
    """A tenant that registered the classifier as its own (``appliance model add --tenant``)."""
    tenant = live.tenant("clf")
    state = CliState(None, _settings=live.services.settings, _services=live.services)
    args = ["add", CLF, "--kind", "classifier", "--source", str(support_classifier), "--tenant", tenant]
    result = CliRunner().invoke(model_cli, args, obj=state, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return tenant


def _client(live: Stack, tenant: str) -> openai.OpenAI:
    key = live.key(Role.APP, tenant)
    return openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def client(live: Stack, owner: str) -> openai.OpenAI:
    return _client(live, owner)


def classify(client: openai.OpenAI, **body: Any) -> dict[str, Any]:
    answer: dict[str, Any] = client.post("/classifications", cast_to=object, body={"model": CLF, **body})
    return answer


def test_labels_come_back_in_the_documented_shape(client: openai.OpenAI) -> None:
    texts = ["Please refund the double charge on my card", "The app crashes every time I log in"]
    answer = classify(client, input=texts)
    assert answer["object"] == "list" and answer["model"] == CLF
    assert [d["label"] for d in answer["data"]] == ["billing", "technical"]
    for i, item in enumerate(answer["data"]):
        assert item["object"] == "classification" and item["index"] == i
        scores = [s["score"] for s in item["labels"]]
        assert scores == sorted(scores, reverse=True)
        assert item["labels"][0] == {"label": item["label"], "score": item["score"]}
        assert {s["label"] for s in item["labels"]} == {"billing", "technical"}
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    usage = answer["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] > 10


@pytest.mark.parametrize(("top_k", "count"), [(1, 1), (2, 2), (50, 2)])
def test_top_k_cuts_the_label_list(client: openai.OpenAI, top_k: int, count: int) -> None:
    answer = classify(client, input="Where is my invoice?", top_k=top_k)
    (item,) = answer["data"]
    assert len(item["labels"]) == count
    assert item["label"] == item["labels"][0]["label"] == "billing"


def test_the_model_sees_only_pseudonyms_and_the_audit_holds_no_values(
    client: openai.OpenAI, seen: SeenInputs, live: Stack
) -> None:
    before = len(seen.inputs)
    text = f"This is {SECRET_NAME} ({SECRET_EMAIL}): please refund the double charge on my card"
    answer = classify(client, input=[text])
    assert answer["data"][0]["label"] == "billing"
    handed = [i for i in seen.since(before) if i.kind == "classifier"]
    model_side = "\n".join(t for i in handed for t in i.texts)
    assert handed and handed[0].model == CLF
    assert SECRET_NAME not in model_side and SECRET_EMAIL not in model_side and "Okonkwo" not in model_side
    assert "<PERSON_1>" in model_side and "<EMAIL_ADDRESS_1>" in model_side
    with live.services.sessions() as s:
        entry = s.scalars(
            select(AuditEntry).where(AuditEntry.action == "classifications").order_by(AuditEntry.id.desc())
        ).first()
    assert entry is not None
    assert entry.object == CLF and entry.outcome == "ok"
    assert '"PERSON"' in entry.facts and '"EMAIL_ADDRESS"' in entry.facts
    assert SECRET_NAME not in entry.facts and SECRET_EMAIL not in entry.facts
    assert live.services.audit.verify().ok


def test_another_tenant_cannot_see_or_call_the_model(live: Stack, client: openai.OpenAI) -> None:
    assert CLF in {m.id for m in client.models.list()}
    other = _client(live, live.tenant("other"))
    assert CLF not in {m.id for m in other.models.list()}
    with pytest.raises(openai.NotFoundError):
        classify(other, input="Please refund my invoice")


def test_a_blocked_entity_is_a_422_naming_the_type_and_the_model_never_sees_it(
    live: Stack, owner: str, seen: SeenInputs
) -> None:
    doc = "extends: default\npii:\n  entities:\n    EMAIL_ADDRESS: {action: block}\n"
    live.services.policies.apply(Principal.local_operator(), owner, doc, "no e-mail addresses")
    before = len(seen.inputs)
    try:
        with pytest.raises(openai.UnprocessableEntityError) as info:
            classify(_client(live, owner), input=f"Refund {SECRET_EMAIL} please")
    finally:
        live.services.policies.apply(Principal.local_operator(), owner, "extends: default\n", "back to default")
    assert "EMAIL_ADDRESS" in str(info.value)
    assert SECRET_EMAIL not in str(info.value)
    assert seen.since(before) == []
    with live.services.sessions() as s:
        outcomes = s.scalars(select(AuditEntry.outcome).where(AuditEntry.action == "classifications")).all()
    assert "blocked" in outcomes


def test_the_tenant_rate_limit_applies(live: Stack, support_classifier: Path) -> None:
    tenant = live.tenant("limited")
    live.services.model_registry.add(CLF, "classifier", str(support_classifier), tenant=tenant)
    live.services.policies.apply(
        Principal.local_operator(), tenant, "extends: default\nlimits:\n  requests_per_minute: 2\n", "tight"
    )
    client = _client(live, tenant)
    for _ in range(2):
        classify(client, input="within the limit")
    with pytest.raises(openai.RateLimitError):
        classify(client, input="one too many")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": CLF, "input": []}, 422),
        ({"model": CLF, "input": [1, 2]}, 422),
        ({"model": CLF, "input": ["fine", None]}, 422),
        ({"model": CLF, "input": ""}, 422),
        ({"model": CLF, "input": "hi", "top_k": 0}, 422),
        ({"model": CLF, "input": "hi", "top_k": "two"}, 422),
        ({"model": CLF, "input": "hi", "temperature": 1}, 422),
        ({"input": "hi"}, 422),
        ({"model": "all-minilm-l6-v2", "input": "hi"}, 422),
        ({"model": "smollm2-135m-instruct", "input": "hi"}, 422),
        ({"model": "no-such-model", "input": "hi"}, 404),
    ],
    ids=[
        "empty list", "numbers", "a null", "empty string", "top_k 0", "top_k text", "unknown field",
        "no model", "an embedding model", "a chat model", "unknown model",
    ],
)  # fmt: skip
def test_bad_requests_are_clear_openai_shaped_4xx(live: Stack, owner: str, body: dict[str, Any], status: int) -> None:
    r = live.client(live.key(Role.APP, owner)).post("/v1/classifications", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["error"]["message"]


def test_only_tenant_keys_may_classify(live: Stack) -> None:
    body = {"model": CLF, "input": "hi"}
    assert live.client(live.operator_key).post("/v1/classifications", json=body).status_code == 403
    assert live.client().post("/v1/classifications", json=body).status_code == 401


def test_model_latency_is_measured_for_the_classifier_kind(live: Stack, client: openai.OpenAI) -> None:
    classify(client, input="Why is my bill so high?")
    metrics = httpx.get(f"{live.base_url}/metrics").text
    assert 'appliance_model_latency_seconds_count{kind="classifier",model="support-clf"}' in metrics or (
        'appliance_model_latency_seconds_count{model="support-clf",kind="classifier"}' in metrics
    )


def test_the_route_and_its_body_are_in_the_openapi_document(live: Stack) -> None:
    doc = live.client().get("/schema/openapi.json").json()
    operation = doc["paths"]["/v1/classifications"]["post"]
    assert "openai" in operation["tags"]
    assert "ClassificationsBody" in str(operation["requestBody"])
