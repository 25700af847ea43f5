"""Probes, metrics, OpenAPI, request ids and the shape of errors."""

from __future__ import annotations

from appliance.roles import Role
from tests.support import Stack


def test_health_and_readiness_need_no_key(stack: Stack) -> None:
    anon = stack.client()
    assert anon.get("/healthz").json() == {"status": "ok"}
    ready = anon.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["migrations"] == "current"


def test_models_answers_json_with_key_and_problem_without(stack: Stack) -> None:
    key = stack.key(Role.APP, stack.tenant())
    ok = stack.client(key).get("/v1/models")
    assert ok.status_code == 200
    assert ok.json()["object"] == "list"
    denied = stack.client().get("/v1/models")
    assert denied.status_code == 401
    body = denied.json()
    assert denied.headers["content-type"].startswith("application/problem+json")
    assert body["type"] == "urn:appliance:problem:unauthenticated"
    assert body["status"] == 401
    assert body["error"]["type"] == "authentication_error"  # what the openai client reads


def test_every_response_carries_a_request_id_and_honours_a_sane_incoming_one(stack: Stack) -> None:
    anon = stack.client()
    assert len(anon.get("/nope").headers["x-request-id"]) >= 16
    r = anon.get("/healthz", headers={"X-Request-ID": "trace-abc-12345"})
    assert r.headers["x-request-id"] == "trace-abc-12345"
    hostile = "<script>" + "x" * 100
    r = anon.get("/healthz", headers={"X-Request-ID": hostile})
    assert r.headers["x-request-id"] != hostile


def test_unknown_route_and_method_are_problems(stack: Stack) -> None:
    anon = stack.client()
    r = anon.get("/definitely/not/here")
    assert r.status_code == 404
    assert r.json()["type"] == "urn:appliance:problem:not-found"
    r = stack.client(stack.operator_key).put("/admin/v1/tenants", json={})
    assert r.status_code == 405
    assert r.json()["type"] == "urn:appliance:problem:method-not-allowed"


def test_metrics_count_requests_by_route_and_status(stack: Stack) -> None:
    anon = stack.client()
    anon.get("/healthz")
    text = anon.get("/metrics").text
    assert 'appliance_requests_total{app_name="appliance",method="GET",path="/healthz",status_code="200"}' in text
    assert "appliance_request_duration_seconds_bucket" in text


def test_openapi_document_is_served_and_names_bearer_auth(stack: Stack) -> None:
    doc = stack.client().get("/schema/openapi.json").json()
    assert doc["info"]["title"] == "Appliance API"
    assert "/admin/v1/tenants" in doc["paths"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
