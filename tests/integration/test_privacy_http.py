"""The /v1/privacy endpoints over real HTTP (uvicorn), with real keys, roles and policies.

``appliance/api/app.py`` registers :class:`PrivacyController`; until it does, this module
serves an app built the same way (auth middleware, problem handlers) with the controller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from litestar import Litestar
from litestar.di import Provide
from litestar.middleware import DefineMiddleware

from appliance.api.app import create_app
from appliance.api.auth import BearerKeyAuth
from appliance.api.problems import EXCEPTION_HANDLERS
from appliance.api.routes.privacy import PrivacyController
from appliance.config import PrivacySettings
from appliance.crypto.records import TenantCipher
from appliance.privacy.detection import Detector
from appliance.privacy.vault import PseudonymVault
from appliance.roles import Role
from appliance.services.container import Services
from appliance.services.principal import Principal
from appliance.services.privacy import PrivacyService
from tests.support import database_url, free_port, make_services, make_settings


def _app(services: Services) -> Litestar:
    app = create_app(services)
    if any(getattr(r, "path", "").startswith("/v1/privacy") for r in app.routes):
        return app
    app = Litestar(
        route_handlers=[PrivacyController],
        dependencies={"services": Provide(lambda: services, sync_to_thread=False)},
        middleware=[DefineMiddleware(BearerKeyAuth)],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=services.settings.server.max_body_bytes,
        logging_config=None,
    )
    app.state.services = services
    return app


class Api:
    def __init__(self, services: Services, base_url: str) -> None:
        self.services = services
        self.base_url = base_url

    def client(self, role: Role, tenant: str | None) -> httpx.Client:
        key = self.services.api_keys.create(Principal.local_operator(), role=role, name="t", tenant=tenant).api_key
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture(scope="module", params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp: Path = tmp_path_factory.mktemp("privacy-http")
    with database_url(str(request.param), tmp) as url:
        services = make_services(make_settings(tmp / "data", url))
        if not isinstance(getattr(type(services), "privacy", None), property):  # until the container wires it
            vault = PseudonymVault(services.sessions, services.data_keys, TenantCipher(services.data_keys))
            services.privacy = PrivacyService(  # type: ignore[attr-defined]
                Detector(PrivacySettings()), vault, services.data_keys, default_ttl=timedelta(hours=1)
            )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(_app(services), host="127.0.0.1", port=port, log_config=None, access_log=False)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.02)
        try:
            yield Api(services, f"http://127.0.0.1:{port}")
        finally:
            server.should_exit = True
            thread.join(10)
            services.close()


def _tenant(api: Api, name: str) -> str:
    api.services.tenants.create(Principal.local_operator(), name)
    return name


def test_analyze_returns_types_and_code_point_offsets_without_values(api: Api) -> None:
    with api.client(Role.APP, _tenant(api, "an-1")) as c:
        text = "😀 東京: write to anna@example.org"
        r = c.post("/v1/privacy/analyze", json={"text": text})
    assert r.status_code == 200, r.text
    [[hit]] = r.json()["results"]
    assert hit["entity_type"] == "EMAIL_ADDRESS"
    assert text[hit["start"] : hit["end"]] == "anna@example.org"
    assert "anna@example.org" not in r.text


def test_anonymize_applies_the_default_policy_and_counts_types(api: Api) -> None:
    with api.client(Role.TENANT_ADMIN, _tenant(api, "an-2")) as c:
        r = c.post("/v1/privacy/anonymize", json={"texts": ["mail anna@example.org", "from 203.0.113.5"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "anna@example.org" not in r.text and "203.0.113.5" not in r.text
    assert set(body["entities"]) == {"EMAIL_ADDRESS", "IP_ADDRESS"}
    assert all(v["count"] == 1 for v in body["entities"].values())


def test_blocked_type_gives_422_naming_types_only(api: Api) -> None:
    tenant = _tenant(api, "an-3")
    doc = "schema_version: 1\npii:\n  entities:\n    CREDIT_CARD: {action: block}\n"
    api.services.policies.apply(Principal.local_operator(), tenant, doc, "block cards")
    with api.client(Role.APP, tenant) as c:
        r = c.post("/v1/privacy/anonymize", json={"text": "card 4111 1111 1111 1111"})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "CREDIT_CARD" in r.text and "4111" not in r.text


@pytest.mark.parametrize(
    "body",
    [{}, {"text": "a", "texts": ["b"]}, {"text": "a", "extra": 1}, {"texts": "not a list"}, {"text": "a", "scope": ""}],
)
def test_bad_bodies_get_a_4xx_problem(api: Api, body: dict[str, object]) -> None:
    with api.client(Role.APP, _tenant(api, f"bad-{len(str(body))}-{abs(hash(str(body))) % 10000}")) as c:
        r = c.post("/v1/privacy/anonymize", json=body)
    assert 400 <= r.status_code < 500, r.text


def test_roles_without_a_tenant_may_not_call_it(api: Api) -> None:
    with api.client(Role.COMPLIANCE, None) as c:
        assert c.post("/v1/privacy/analyze", json={"text": "x"}).status_code == 403
    with httpx.Client(base_url=api.base_url) as anon:
        assert anon.post("/v1/privacy/analyze", json={"text": "x"}).status_code == 401
