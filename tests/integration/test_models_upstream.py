"""The upstream runner against a real OpenAI-compatible engine on loopback.

The engine is a small Litestar app in this file serving the local SmolLM2 and MiniLM
runners the way vLLM or llama.cpp's server would (SSE chat, JSON embeddings), plus routes
that fail on purpose. (The end-to-end test against a second appliance process comes with
the HTTP endpoints.)
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from litestar import Litestar, Response, post
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from appliance.errors import InvalidInput
from appliance.models.base import ChatMessage, ChatRequest, ModelInput
from appliance.models.chat import LocalChatRunner
from appliance.models.embeddings import LocalEmbeddingRunner
from appliance.models.upstream import UpstreamChatRequest, UpstreamRunner, UpstreamUnavailable
from tests.support import free_port
from tests.unit.models import support


@dataclass
class Engine:
    base_url: str
    failures_left: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    bodies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(route, request body) of each chat call, as the engine received it."""


def _engine_app(chat: LocalChatRunner, embeddings: LocalEmbeddingRunner, engine: Engine) -> Litestar:
    def count(route: str) -> bool:
        """True when this call should fail (the route still has failures left)."""
        engine.calls[route] = engine.calls.get(route, 0) + 1
        left = engine.failures_left.get(route, 0)
        engine.failures_left[route] = max(left - 1, 0)
        return left > 0

    @post("/{route:str}/v1/chat/completions", status_code=200)
    async def completions(route: FromPath[str], data: JSONBody[dict[str, Any]]) -> Any:
        engine.bodies.append((route, data))
        if route == "bad":
            return Response({"error": {"message": "nope"}}, status_code=400)
        if count(route):
            return Response({"error": {"message": "warming up"}}, status_code=503)
        request = ChatRequest(
            [ChatMessage(m["role"], m["content"]) for m in data["messages"]],
            max_tokens=data.get("max_tokens"),
            temperature=data.get("temperature", 1.0),
            top_p=data.get("top_p", 1.0),
            stop=data.get("stop") or (),
            seed=data.get("seed"),
        )

        async def events() -> AsyncIterator[str]:
            async for chunk in chat.stream(request):
                delta = {"content": chunk.text} if chunk.text else {}
                choice = {"index": 0, "delta": delta, "finish_reason": chunk.finish_reason}
                yield f"data: {json.dumps({'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"
                if chunk.usage is not None:
                    usage = {
                        "prompt_tokens": chunk.usage.prompt_tokens,
                        "completion_tokens": chunk.usage.completion_tokens,
                        "total_tokens": chunk.usage.total_tokens,
                    }
                    yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return Stream(events(), media_type="text/event-stream")

    @post("/{route:str}/v1/embeddings", status_code=200)
    async def embed(route: FromPath[str], data: JSONBody[dict[str, Any]]) -> Any:
        if count(route):
            return Response({"error": {"message": "busy"}}, status_code=502)
        result = await embeddings.embed(data["input"])
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(result.vectors)],
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        }

    return Litestar([completions, embed])


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    root = support.store_root(request.config)
    port = free_port()
    state = Engine(f"http://127.0.0.1:{port}")
    app = _engine_app(support.shared_chat(root), support.shared_embeddings(), state)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "engine did not start"
        time.sleep(0.02)
    yield state
    server.should_exit = True
    thread.join(10)


def _runner(engine: Engine, route: str = "ok", **kw: Any) -> UpstreamRunner:
    kw.setdefault("backoff_s", 0.01)
    return UpstreamRunner("remote-smol", f"{engine.base_url}/{route}/v1", remote_model="smollm2", **kw)


FRANCE = ChatRequest([ChatMessage("user", "What is the capital of France?")], temperature=0, max_tokens=16)


@pytest.mark.slow
def test_chat_through_the_engine_answers_and_streams_like_the_local_model(engine: Engine) -> None:
    seen: list[ModelInput] = []
    runner = _runner(engine, observer=seen.append)

    async def go() -> tuple[list[str], str]:
        chunks = [c async for c in runner.stream(FRANCE)]
        assert chunks[-1].finish_reason == "stop"
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.prompt_tokens > 10
        return [c.text for c in chunks], (await runner.complete(FRANCE)).text

    deltas, whole = asyncio.run(go())
    assert "Paris" in whole
    assert "".join(deltas) == whole
    assert len([d for d in deltas if d]) > 2  # passed through as deltas, not one blob
    assert seen[0] == ModelInput("remote-smol", "chat", ("What is the capital of France?",))


@pytest.mark.slow
def test_sampling_fields_left_to_the_engine_stay_out_of_the_body_and_the_others_are_sent(engine: Engine) -> None:
    """What neither the caller nor the registration set is left out, so the engine applies its
    own defaults (vLLM: the model's generation config) instead of being told temperature 1."""
    runner = _runner(engine, "sampling")

    def sent(request: ChatRequest) -> dict[str, Any]:
        asyncio.run(runner.complete(request))
        route, body = engine.bodies[-1]
        assert route == "sampling"
        return body

    short = FRANCE.messages
    both = frozenset({"temperature", "top_p"})
    body = sent(UpstreamChatRequest(short, max_tokens=4, left_to_engine=both))
    assert "temperature" not in body and "top_p" not in body
    assert body["max_tokens"] == 4 and body["messages"] == [{"role": "user", "content": FRANCE.messages[0].content}]
    body = sent(UpstreamChatRequest(short, max_tokens=4, temperature=0.0, left_to_engine=frozenset({"top_p"})))
    assert body["temperature"] == 0.0 and "top_p" not in body
    body = sent(ChatRequest(short, max_tokens=4, temperature=1.0, top_p=1.0))  # set values, even OpenAI's
    assert (body["temperature"], body["top_p"]) == (1.0, 1.0)


def test_only_sampling_fields_can_be_left_to_the_engine() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        UpstreamChatRequest(FRANCE.messages, left_to_engine=frozenset({"max_tokens"}))


@pytest.mark.slow
def test_embeddings_through_the_engine_match_the_local_model(engine: Engine) -> None:
    texts = ["hello there", "general kenobi"]
    remote = asyncio.run(_runner(engine).embed(texts))
    local = asyncio.run(support.shared_embeddings().embed(texts))
    assert remote.prompt_tokens == local.prompt_tokens
    for a, b in zip(remote.vectors, local.vectors, strict=True):
        assert a == pytest.approx(b, abs=1e-5)


@pytest.mark.slow
def test_server_errors_are_retried_with_backoff_until_the_engine_answers(engine: Engine) -> None:
    engine.failures_left["flaky"] = 2
    result = asyncio.run(_runner(engine, "flaky", retries=2).complete(FRANCE))
    assert "Paris" in result.text
    assert engine.calls["flaky"] == 3


def test_when_retries_run_out_the_caller_gets_503_without_the_engines_words(engine: Engine) -> None:
    engine.failures_left["down"] = 10
    with pytest.raises(UpstreamUnavailable) as caught:
        asyncio.run(_runner(engine, "down", retries=1).embed(["x"]))
    assert caught.value.status == 503
    assert "busy" not in caught.value.detail
    assert engine.calls["down"] == 2


def test_an_engine_that_refuses_connections_is_unavailable_after_retries() -> None:
    runner = UpstreamRunner("gone", f"http://127.0.0.1:{free_port()}/v1", retries=2, backoff_s=0.01, timeout_s=2)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        asyncio.run(runner.complete(FRANCE))
    assert time.monotonic() - started < 5


def test_a_request_the_engine_rejects_is_invalid_input_and_not_retried(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as caught:
        asyncio.run(_runner(engine, "bad").complete(FRANCE))
    assert "nope" not in caught.value.detail


def test_when_too_many_calls_are_in_flight_the_next_is_overloaded(engine: Engine) -> None:
    runner = _runner(engine, max_inflight=0)
    with pytest.raises(Exception, match="in flight") as caught:
        asyncio.run(runner.embed(["x"]))
    assert getattr(caught.value, "status", None) == 429
