"""The ``upstream`` kind: forward chat and embeddings to an OpenAI-compatible engine.

vLLM, TGI and the llama.cpp server batch on their own GPUs; this runner only forwards,
with the same interface as the local runners so the privacy pipeline wraps both alike.
The engine only ever receives what the pipeline already transformed.

- Timeouts: ``timeout_s`` per HTTP phase (connect, each read), ``request_timeout_s`` overall.
- Retries with exponential backoff on connect errors and 5xx answers, but only before any
  byte of an answer has been passed on (a half-streamed answer is never replayed).
- Back-pressure: more than ``max_inflight`` calls at once get ``Overloaded`` at once.
- Error messages never quote the engine's body: it may echo request content.
- Sampling: a ``temperature`` or ``top_p`` left to the engine (:class:`UpstreamChatRequest`)
  stays out of the body, so the engine applies its own defaults, as vLLM does from the
  model's generation config, instead of being told OpenAI's temperature 1.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Any

import httpx

from appliance.errors import InvalidInput, Overloaded
from appliance.models.base import (
    ChatChunk,
    ChatRequest,
    ChatResult,
    EmbeddingResult,
    FinishReason,
    GenerationTimeout,
    InputObserver,
    ModelInput,
    RunnerStats,
    Usage,
    collect,
)


class UpstreamUnavailable(Overloaded):
    """The engine could not be reached or kept failing (503, retry later)."""

    slug = "upstream-unavailable"
    title = "Upstream model engine unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, retry_after_s=5, status=503)


class _Retryable(Exception):
    pass


ENGINE_SAMPLING = frozenset({"temperature", "top_p"})
"""The sampling fields an engine may choose itself. ``max_tokens`` is not one: the policy's
limit must hold on every engine, so a length is always sent."""


@dataclass(frozen=True)
class UpstreamChatRequest(ChatRequest):
    """A chat request whose fields named in ``left_to_engine`` (of :data:`ENGINE_SAMPLING`)
    neither the caller nor the model's registration set: they are not sent, and their values
    here are unused."""

    left_to_engine: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.left_to_engine <= ENGINE_SAMPLING:
            raise ValueError(
                f"only {sorted(ENGINE_SAMPLING)} can be left to the engine, not {sorted(self.left_to_engine)}"
            )

    @classmethod
    def of(cls, request: ChatRequest, left_to_engine: frozenset[str]) -> UpstreamChatRequest:
        return cls(**{f.name: getattr(request, f.name) for f in fields(ChatRequest)}, left_to_engine=left_to_engine)


def _finish(reason: Any) -> FinishReason:
    return "length" if reason == "length" else "stop"


class UpstreamRunner:
    """Serves chat and embeddings from ``base_url`` (the engine's ``.../v1``)."""

    kind = "upstream"

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        remote_model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        request_timeout_s: float = 120.0,
        retries: int = 2,
        backoff_s: float = 0.25,
        max_inflight: int = 72,
        observer: InputObserver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._base_url = base_url.rstrip("/")
        self._remote_model = remote_model or name
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout_s)
        self._timeout_s = timeout_s
        self._request_timeout_s = request_timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_inflight = max_inflight
        self._observer = observer
        self._transport = transport
        self._lock = threading.Lock()
        self._inflight = 0
        self._stats = RunnerStats()

    def warmup(self) -> None:
        """Nothing to load; reachability is checked by the first call (engines start slowly)."""

    def close(self) -> None:
        """Clients live per call, so there is nothing to release."""

    @property
    def stats(self) -> RunnerStats:
        with self._lock:
            return RunnerStats(requests=self._stats.requests, completion_tokens=self._stats.completion_tokens)

    # ---------------------------------------------------------------- chat

    async def complete(self, request: ChatRequest) -> ChatResult:
        return await collect(self.stream(request))

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        body: dict[str, Any] = {
            "model": self._remote_model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        left = request.left_to_engine if isinstance(request, UpstreamChatRequest) else frozenset()
        if "temperature" not in left:
            body["temperature"] = request.temperature
        if "top_p" not in left:
            body["top_p"] = request.top_p
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if request.stop:
            body["stop"] = list(request.stop)
        if request.seed is not None:
            body["seed"] = request.seed
        timeout_s = request.timeout_s or self._request_timeout_s
        deadline = time.monotonic() + timeout_s
        async with self._slot():
            self._observe("chat", tuple(m.content for m in request.messages))
            finish: FinishReason | None = None
            usage: Usage | None = None
            deltas = 0
            async with self._open("POST", "/chat/completions", body) as response:
                async for data in _sse_data(response):
                    if time.monotonic() > deadline:
                        raise GenerationTimeout(timeout_s)
                    if data.get("usage"):
                        usage = Usage(int(data["usage"]["prompt_tokens"]), int(data["usage"]["completion_tokens"]))
                    for choice in data.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or ""
                        if choice.get("finish_reason"):
                            finish = _finish(choice["finish_reason"])
                        if text:
                            deltas += 1
                            yield ChatChunk(text)
            usage = usage or Usage(0, deltas)
            with self._lock:
                self._stats.completion_tokens += usage.completion_tokens
        # Sent after the connection is released, so a caller that stops here leaks nothing.
        yield ChatChunk("", finish_reason=finish or "stop", usage=usage)

    # ---------------------------------------------------------------- embeddings

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        items = list(texts)
        if not items:
            raise InvalidInput("input must hold at least one text")
        body = {"model": self._remote_model, "input": items, "encoding_format": "float"}
        async with self._slot():
            self._observe("embedding", tuple(items))
            try:
                async with asyncio.timeout(self._request_timeout_s):
                    async with self._open("POST", "/embeddings", body) as response:
                        payload = json.loads(await response.aread())
            except TimeoutError:
                raise GenerationTimeout(self._request_timeout_s) from None
        try:
            rows = sorted(payload["data"], key=lambda d: int(d["index"]))
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
            tokens = int((payload.get("usage") or {}).get("prompt_tokens", 0))
        except (KeyError, TypeError, ValueError):
            raise UpstreamUnavailable("the upstream engine sent a malformed embeddings answer") from None
        if len(vectors) != len(items):
            raise UpstreamUnavailable("the upstream engine sent the wrong number of embeddings")
        return EmbeddingResult(vectors, tokens)

    # ---------------------------------------------------------------- plumbing

    def _observe(self, kind: Any, texts: tuple[str, ...]) -> None:
        if self._observer is not None:
            self._observer(ModelInput(self.name, kind, texts))

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        with self._lock:
            if self._inflight >= self._max_inflight:
                raise Overloaded(f"model {self.name!r} has {self._inflight} calls in flight; retry later")
            self._inflight += 1
            self._stats.requests += 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1

    @asynccontextmanager
    async def _open(self, method: str, path: str, body: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        """A successful (2xx) response whose body is not read yet, after retries."""
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            async with httpx.AsyncClient(
                base_url=self._base_url, timeout=self._timeout, headers=self._headers, transport=self._transport
            ) as client:
                try:
                    async with client.stream(method, self._base_url + path, json=body) as response:
                        if response.status_code >= 500:
                            raise _Retryable
                        if response.status_code == 429:
                            raise Overloaded(f"upstream engine for {self.name!r} is busy; retry later", status=503)
                        if response.status_code >= 400:
                            raise InvalidInput(f"the upstream engine rejected the request ({response.status_code})")
                        try:
                            yield response
                        except httpx.TimeoutException:
                            raise GenerationTimeout(self._timeout_s) from None
                        except httpx.TransportError:
                            raise UpstreamUnavailable(f"the upstream engine for {self.name!r} broke off") from None
                        return
                except (httpx.ConnectError, httpx.ConnectTimeout, _Retryable):
                    if last:
                        raise UpstreamUnavailable(
                            f"the upstream engine for {self.name!r} failed {attempt + 1} attempts"
                        ) from None
                except httpx.TimeoutException:
                    raise GenerationTimeout(self._timeout_s) from None
                except httpx.TransportError:
                    raise UpstreamUnavailable(f"the upstream engine for {self.name!r} broke off") from None
            await asyncio.sleep(self._backoff_s * 2**attempt)


async def _sse_data(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream, up to ``[DONE]``."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            data = json.loads(payload)
        except ValueError:
            raise UpstreamUnavailable("the upstream engine sent a malformed stream") from None
        if isinstance(data, dict):
            if "error" in data:
                raise UpstreamUnavailable("the upstream engine reported an error mid-stream")
            yield data
