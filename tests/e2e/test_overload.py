"""Back-pressure against a live appliance: a model queue of one, more callers than it holds.

Every caller gets either an answer or a clean, retryable refusal (429/503 problem+json
with Retry-After); nothing fails with a 500 or a dropped connection; the server keeps
serving afterwards, frees every queue slot, and its memory does not grow burst after burst.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import psutil  # type: ignore[import-untyped]
import pytest

from appliance.models.generation import StepBatchedChatRunner
from appliance.roles import Role
from tests.support import Stack, live_stack, make_services, make_settings

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
CHATS = 8
"""Concurrent chat calls per burst (half streamed); the chat model admits 1 running + 1 waiting."""
EMBEDDINGS = 8
BURSTS = 3
RSS_GROWTH_LIMIT = 96 * 1024 * 1024
"""How much the process may grow between the first and the last burst (the same work each time)."""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@dataclass
class Outcome:
    kind: str
    status: int
    headers: httpx.Headers
    body: bytes


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("overload")
    settings = make_settings(
        tmp / "data",
        f"sqlite:///{tmp / 'a.db'}",
        models={"max_queue": 1, "max_batch": 1, "request_timeout_s": 30},
    )
    svc = make_services(settings)
    with live_stack(svc) as stack:
        yield stack


@pytest.fixture(scope="module")
def app_key(live: Stack) -> str:
    return live.key(Role.APP, live.tenant("overload"))


def _chat_body(i: int, stream: bool) -> dict[str, Any]:
    return {
        "model": CHAT,
        "messages": [{"role": "user", "content": f"Write a short poem about the number {i}."}],
        "temperature": 0,
        "max_tokens": 20,
        "stream": stream,
    }


def _call(base_url: str, key: str, kind: str, i: int, start: threading.Barrier) -> Outcome:
    """One caller on its own connection; transport errors propagate and fail the test."""
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        start.wait(10)
        if kind == "embeddings":
            texts = [f"Overload sentence {i}.{j}: the report shows steady growth." for j in range(16)]
            r = http.post("/v1/embeddings", json={"model": EMBED, "input": texts})
            return Outcome(kind, r.status_code, r.headers, r.content)
        with http.stream("POST", "/v1/chat/completions", json=_chat_body(i, kind == "stream")) as r:
            return Outcome(kind, r.status_code, r.headers, r.read())


def _burst(base_url: str, key: str) -> list[Outcome]:
    kinds = ["chat", "stream"] * (CHATS // 2) + ["embeddings"] * EMBEDDINGS
    start = threading.Barrier(len(kinds))
    with ThreadPoolExecutor(len(kinds)) as pool:
        futures = [pool.submit(_call, base_url, key, kind, i, start) for i, kind in enumerate(kinds)]
        return [f.result(timeout=90) for f in futures]


def _check(outcome: Outcome) -> bool:
    """True when answered, False when cleanly refused; anything else fails the test."""
    assert outcome.status in (200, 429, 503), (outcome.kind, outcome.status, outcome.body[:300])
    if outcome.status == 200:
        if outcome.kind == "stream":
            events = [line[6:] for line in outcome.body.decode().splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            finishes = [c["finish_reason"] for e in events[:-1] for c in json.loads(e)["choices"]]
            assert finishes[-1] in ("stop", "length")
        elif outcome.kind == "chat":
            answer = json.loads(outcome.body)
            assert answer["choices"][0]["finish_reason"] in ("stop", "length")
            assert answer["usage"]["completion_tokens"] >= 1
        else:
            assert len(json.loads(outcome.body)["data"]) == 16
        return True
    assert outcome.headers["content-type"].startswith("application/problem+json")
    retry_after = outcome.headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, outcome.headers
    problem = json.loads(outcome.body)
    assert problem["status"] == outcome.status
    assert problem["type"].startswith("urn:appliance:problem:")
    assert problem["error"]["message"]  # the OpenAI-shaped member the official client reads
    return False


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def test_more_callers_than_the_queue_holds_get_clean_refusals_and_the_server_survives(
    live: Stack, app_key: str
) -> None:
    started = time.monotonic()
    client = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=app_key, max_retries=0, timeout=60)
    # Load both models first, so the bursts measure queueing rather than loading.
    assert client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    ).choices
    assert client.embeddings.create(model=EMBED, input="hi").data

    rss: list[int] = []
    refused_chat = 0
    for _ in range(BURSTS):
        outcomes = _burst(live.base_url, app_key)
        answered = [_check(o) for o in outcomes]
        assert any(answered), "nobody was served"
        assert not all(answered), "no request was refused although the queue holds one"
        refused_chat += sum(1 for o, ok in zip(outcomes, answered, strict=True) if not ok and o.kind != "embeddings")
        rss.append(_rss())
    assert refused_chat >= BURSTS, "the chat queue (1 running + 1 waiting) never refused a call"

    # Still serving: probes, and normal calls through the official client.
    assert httpx.get(f"{live.base_url}/healthz", timeout=5).json() == {"status": "ok"}
    assert httpx.get(f"{live.base_url}/readyz", timeout=5).status_code == 200
    answer = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "What is the capital of Germany?"}],
        temperature=0,
        max_tokens=12,
    )
    assert "Berlin" in (answer.choices[0].message.content or "")
    assert len(client.embeddings.create(model=EMBED, input=["after the storm"]).data[0].embedding) == 384
    # Every refused or finished call gave its queue slot back.
    runner = live.services.models.chat(CHAT)
    assert isinstance(runner, StepBatchedChatRunner) and runner.queued == 0

    # Bounded memory: the same burst again does not keep growing the process.
    assert rss[-1] - rss[0] < RSS_GROWTH_LIMIT, [f"{r / 2**20:.0f} MiB" for r in rss]
    assert time.monotonic() - started < 90


def test_refusals_are_audited_nowhere_as_successes(live: Stack, app_key: str) -> None:
    """A refused call never produced an 'ok' audit entry: oks match the answers the callers got."""
    from sqlalchemy import func, select

    from appliance.db.models import AuditEntry

    OK_CHAT = (AuditEntry.action == "chat.completion") & (AuditEntry.outcome == "ok")  # noqa: N806
    with live.services.sessions() as s:
        before = s.scalar(select(func.count()).select_from(AuditEntry).where(OK_CHAT))
    outcomes = _burst(live.base_url, app_key)
    answered_plain = sum(1 for o in outcomes if o.kind == "chat" and _check(o))
    with live.services.sessions() as s:
        after = s.scalar(select(func.count()).select_from(AuditEntry).where(OK_CHAT))
    assert (after or 0) - (before or 0) == answered_plain
