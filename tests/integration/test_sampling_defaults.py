"""A chat request that omits temperature, top_p or max_tokens gets the model's defaults,
the policy's limit caps the default length, and whatever the request sends wins. For an
upstream engine, a temperature or top_p that neither the request nor the registration sets
is left out, so the engine applies its own defaults (as vLLM does from the model's
generation config). Observed at a real OpenAI-compatible engine on loopback that records
what it was asked."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from litestar import Litestar, post
from litestar.params import JSONBody
from litestar.response import Stream

from appliance.errors import InvalidInput
from appliance.models.base import ChatMessage
from appliance.roles import Role
from appliance.services.container import Services
from appliance.services.inference import ChatCall
from appliance.services.principal import Principal
from tests.support import free_port, make_services, make_settings

COMPLIANCE = Principal(key_id=None, role=Role.COMPLIANCE)


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An engine answering "ok" to every chat call and keeping each request body."""
    seen: list[dict[str, Any]] = []

    @post("/v1/chat/completions", status_code=200)
    async def completions(data: JSONBody[dict[str, Any]]) -> Stream:
        seen.append(data)

        async def events() -> AsyncIterator[str]:
            chunk = {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"

        return Stream(events(), media_type="text/event-stream")

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(Litestar([completions]), host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp: Path = tmp_path_factory.mktemp("sampling")
    svc = make_services(make_settings(tmp / "data", f"sqlite:///{tmp / 'a.db'}", server={"cache_ttl_s": 0}))
    try:
        yield svc
    finally:
        svc.close()


def _app(services: Services, tenant: str) -> Principal:
    services.tenants.create(Principal.local_operator(), tenant)
    key = services.api_keys.create(Principal.local_operator(), role=Role.APP, name="t", tenant=tenant).api_key
    return services.api_keys.authenticate(key)


def _asked(services: Services, seen: list[dict[str, Any]], app: Principal, **fields: Any) -> dict[str, Any]:
    asyncio.run(services.inference.chat(app, ChatCall(model="tuned", messages=[ChatMessage("user", "hi")], **fields)))
    return seen[-1]


def test_omitted_fields_take_the_models_defaults_and_sent_fields_win(
    services: Services, engine: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = engine
    services.model_registry.add(
        "tuned", "upstream", url, options={"default_temperature": "0.3", "default_max_tokens": "40"}
    )
    app = _app(services, "sampling-a")
    body = _asked(services, seen, app)
    assert (body["temperature"], body["max_tokens"]) == (0.3, 40)
    assert "top_p" not in body  # neither the request nor the registration set it: the engine's own
    body = _asked(services, seen, app, temperature=0.9, top_p=0.5, max_tokens=7)
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.9, 0.5, 7)
    body = _asked(services, seen, app, temperature=0.0)
    assert (body["temperature"], body["max_tokens"]) == (0.0, 40)  # 0 is a value, not an omission

    # The policy's limit caps the default; a request asking for more than the limit is refused.
    services.policies.apply(COMPLIANCE, "sampling-a", "extends: default\nlimits:\n  max_tokens: 25\n", "short")
    body = _asked(services, seen, app)
    assert body["max_tokens"] == 25
    with pytest.raises(InvalidInput, match="at most 25"):
        _asked(services, seen, app, max_tokens=30)


def test_an_upstream_engine_keeps_its_own_temperature_and_top_p_unless_someone_sets_them(
    services: Services, engine: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = engine
    services.model_registry.add("plain", "upstream", url)
    services.model_registry.add("pinned", "upstream", url, options={"default_temperature": "1", "default_top_p": "1"})
    app = _app(services, "sampling-b")

    def asked(model: str, **fields: Any) -> dict[str, Any]:
        call = ChatCall(model=model, messages=[ChatMessage("user", "hi")], **fields)
        asyncio.run(services.inference.chat(app, call))
        return seen[-1]

    body = asked("plain")
    assert "temperature" not in body and "top_p" not in body
    # The length is the appliance's to bound (the policy's limit holds on any engine): always sent.
    assert body["max_tokens"] == 512
    body = asked("plain", temperature=1.0, top_p=1.0)  # OpenAI's values, sent on purpose
    assert (body["temperature"], body["top_p"]) == (1.0, 1.0)
    body = asked("plain", top_p=0.8)
    assert body["top_p"] == 0.8 and "temperature" not in body
    body = asked("pinned")  # the registration's 1 is a choice too
    assert (body["temperature"], body["top_p"]) == (1.0, 1.0)
