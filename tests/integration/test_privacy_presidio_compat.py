"""A Presidio client switches to the appliance by URL: /v1/privacy/analyze and /anonymize take
the request shapes Presidio's own analyzer and anonymizer REST servers take (checked with
Presidio's own request parsers), answer in Presidio's shapes (read back with Presidio's own
result classes), and the tenant's policy still decides: callers may narrow or tighten, never loosen."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from presidio_analyzer import AnalyzerRequest
from presidio_analyzer import RecognizerResult as AnalyzerResult
from presidio_anonymizer.entities import OperatorResult
from presidio_anonymizer.services.app_entities_convertor import AppEntitiesConvertor

from appliance.roles import Role
from tests.support import Stack, live_stack, make_services, make_settings

TEXT = "Hi, I'm Anna Berg, mail anna.berg@example.org about Project Nightjar."


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("presidio")
    with live_stack(make_services(make_settings(tmp / "data", f"sqlite:///{tmp / 'a.db'}"))) as stack:
        yield _app_client(stack)


def _app_client(stack: Stack) -> httpx.Client:
    return stack.client(stack.key(Role.APP, stack.tenant("presidio")))


def _analyze(api: httpx.Client, **fields: Any) -> httpx.Response:
    body = {"text": TEXT, "language": "en", **fields}
    AnalyzerRequest(body)  # a request Presidio's analyzer server accepts
    return api.post("/v1/privacy/analyze", json=body)


def _anonymize(api: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    AppEntitiesConvertor.analyzer_results_from_json(body["analyzer_results"])  # what Presidio's server parses
    AppEntitiesConvertor.operators_config_from_json(copy.deepcopy(body.get("anonymizers")))  # it pops "type"
    return api.post("/v1/privacy/anonymize", json=body)


def test_analyze_answers_presidios_list_with_a_reason_per_detection(api: httpx.Client) -> None:
    response = _analyze(api, return_decision_process=True, correlation_id="c-1")
    assert response.status_code == 200, response.text
    items = response.json()
    found = {(r.entity_type, TEXT[r.start : r.end]) for r in map(AnalyzerResult.from_json, items)}
    assert {("PERSON", "Anna Berg"), ("EMAIL_ADDRESS", "anna.berg@example.org")} <= found
    for item in items:
        explanation = item["analysis_explanation"]
        assert explanation["recognizer"] == item["recognition_metadata"]["recognizer_name"]
        assert explanation["textual_explanation"] and explanation["score"] == item["score"]
        assert TEXT[item["start"] : item["end"]] not in explanation["textual_explanation"]  # no value echoed
    plain = _analyze(api).json()
    assert all(item["analysis_explanation"] is None for item in plain)


def test_entities_and_score_threshold_narrow_what_analyze_reports(api: httpx.Client) -> None:
    only_email = _analyze(api, entities=["EMAIL_ADDRESS"]).json()
    assert [i["entity_type"] for i in only_email] == ["EMAIL_ADDRESS"]
    assert _analyze(api, score_threshold=1.0).json() == [i for i in _analyze(api).json() if i["score"] >= 1.0]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"language": "de"}, "'en'"),
        ({"entities": ["NO_SUCH_TYPE"]}, "NO_SUCH_TYPE"),
        ({"allow_list": ["Anna Berg"]}, "allow_list"),
        ({"ad_hoc_recognizers": [{"name": "x", "supported_entity": "X", "deny_list": ["Nightjar"]}]}, "ad_hoc"),
    ],
)
def test_analyze_refuses_what_would_step_outside_the_policy_with_a_clear_422(
    api: httpx.Client, fields: dict[str, Any], named: str
) -> None:
    response = api.post("/v1/privacy/analyze", json={"text": TEXT, "language": "en", **fields})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert named in response.json()["detail"]


def test_anonymize_takes_presidios_request_and_answers_text_and_items(api: httpx.Client) -> None:
    results = _analyze(api, return_decision_process=True).json()  # forwarded as a Presidio client does
    results.append({"entity_type": "PROJECT", "start": TEXT.index("Nightjar"), "end": len(TEXT) - 1, "score": 0.9})
    body = {
        "text": TEXT,
        "anonymizers": {"PERSON": {"type": "redact"}, "DEFAULT": {"type": "replace", "new_value": "<ANONYMIZED>"}},
        "analyzer_results": results,
    }
    response = _anonymize(api, body)
    assert response.status_code == 200, response.text
    out = response.json()
    # PERSON: redact is stricter than the policy's pseudonymize; DEFAULT raises the e-mail
    # address to replace; the caller's own PROJECT span is transformed too.
    assert out["text"] == "Hi, I'm , mail <EMAIL_ADDRESS> about Project <PROJECT>."
    items = [OperatorResult.from_json(i) for i in out["items"]]
    assert [(i.entity_type, i.operator) for i in items] == [
        ("PERSON", "redact"),
        ("EMAIL_ADDRESS", "replace"),
        ("PROJECT", "replace"),
    ]
    assert all(out["text"][i.start : i.end] == i.text for i in items)


def test_a_weaker_operator_never_loosens_the_policy(api: httpx.Client) -> None:
    body = {
        "text": TEXT,
        "anonymizers": {"PERSON": {"type": "keep"}, "EMAIL_ADDRESS": {"type": "keep"}},
        "analyzer_results": [],
    }
    out = _anonymize(api, body).json()
    assert "Anna" not in out["text"] and "anna.berg" not in out["text"]
    assert {i["operator"] for i in out["items"]} == {"pseudonymize"}
    assert out["scope"]  # the pseudonyms can be restored, as with the appliance's own shape

    card = "pay with 4111 1111 1111 1111"
    blocked = _anonymize(
        api, {"text": card, "anonymizers": {"CREDIT_CARD": {"type": "replace"}}, "analyzer_results": []}
    )
    assert blocked.status_code == 422
    assert blocked.json()["type"].endswith("blocked-by-policy")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"anonymizers": {"PERSON": {"type": "encrypt", "key": "WmZq4t7w!z%C&F)J"}}}, "encrypt"),
        ({"anonymizers": {"PERSON": {"type": "shuffle"}}}, "shuffle"),
        ({"analyzer_results": [{"entity_type": "PERSON", "start": 5, "end": 500, "score": 1}]}, "outside"),
    ],
)
def test_anonymize_refuses_what_it_cannot_honour_with_a_clear_422(
    api: httpx.Client, body: dict[str, Any], named: str
) -> None:
    response = api.post("/v1/privacy/anonymize", json={"text": TEXT, "analyzer_results": [], **body})
    assert response.status_code == 422
    assert named in response.json()["detail"]
