"""What every model runner offers, local or upstream, so the privacy pipeline wraps them alike.

A *runner* owns one loaded model (or one upstream engine) and its worker thread. Callers
on the event loop use the async methods; the heavy work never runs on the loop.

    ChatRunner        stream(request) -> async iterator of ChatChunk; complete(request) -> ChatResult
    EmbeddingRunner   embed(texts) -> EmbeddingResult
    ClassifierRunner  classify(texts) -> ClassificationResult

All accept an optional :data:`InputObserver` at construction: it is called with exactly
the text the model (or the upstream engine) receives. Tests use it to prove the model sees
only pseudonyms; production leaves it unset.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, runtime_checkable

from appliance.errors import Overloaded

FinishReason = Literal["stop", "length"]
ModelKind = Literal["chat", "embedding", "classifier", "upstream"]
MODEL_KINDS: tuple[ModelKind, ...] = ("chat", "embedding", "classifier", "upstream")
SERVED_BY: dict[str, tuple[ModelKind, ...]] = {
    "chat": ("chat", "upstream"),
    "embedding": ("embedding", "upstream"),
    "classifier": ("classifier",),  # upstream engines offer chat and embeddings only
}
"""Which registered kinds can answer each kind of call."""


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion. ``temperature`` 0 means greedy; ``seed`` makes sampling repeatable.

    ``max_tokens`` None means "up to the runner's default cap". ``timeout_s`` None means the
    runner's configured per-request timeout.
    """

    messages: Sequence[ChatMessage]
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatChunk:
    """A text delta. The last chunk of a stream carries ``finish_reason`` and ``usage``."""

    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass(frozen=True)
class ChatResult:
    text: str
    finish_reason: FinishReason
    usage: Usage


@dataclass(frozen=True)
class EmbeddingResult:
    vectors: list[list[float]]
    prompt_tokens: int


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True)
class Classification:
    """One text's verdict: every label's score, highest first (never empty).

    Scores are a softmax over the labels (they sum to 1), or independent sigmoids for a
    model trained for multi-label classification (each in 0..1, no fixed sum).
    """

    labels: tuple[LabelScore, ...]
    tokens: int

    @property
    def label(self) -> str:
        return self.labels[0].label

    @property
    def score(self) -> float:
        return self.labels[0].score


@dataclass(frozen=True)
class ClassificationResult:
    items: list[Classification]
    prompt_tokens: int


@dataclass(frozen=True)
class ModelInput:
    """What a model was handed: the templated prompt (chat) or the texts (embeddings, classifiers)."""

    model: str
    kind: Literal["chat", "embedding", "classifier"]
    texts: tuple[str, ...]


InputObserver = Callable[[ModelInput], None]


@dataclass
class RunnerStats:
    """Counters a runner exposes for tests, benchmarks and metrics (a snapshot copy)."""

    forward_passes: int = 0
    prefill_passes: int = 0
    decode_steps: int = 0
    completion_tokens: int = 0
    requests: int = 0
    max_batch_seen: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)


class WorkerThreadRunner:
    """What runners with one worker thread waiting on ``_cond`` share: stopping it and a
    snapshot of the counters. Subclasses set the four attributes in ``__init__``."""

    _cond: threading.Condition
    _closed: bool
    _thread: threading.Thread | None
    _stats: RunnerStats

    def close(self) -> None:
        """Stop the worker; calls waiting or running end with a 503. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def stats(self) -> RunnerStats:
        with self._cond:
            return replace(self._stats, batch_sizes=dict(self._stats.batch_sizes))


class GenerationTimeout(Overloaded):
    """The model did not finish within the request's time limit (503, retry later).

    Lives here until it moves into ``appliance/errors.py``; it is an ``Overloaded``, so the
    API maps it with Retry-After already.
    """

    slug = "model-timeout"
    title = "The model did not answer in time"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the model did not finish within {timeout_s:g} s", retry_after_s=1, status=503)


@runtime_checkable
class ChatRunner(Protocol):
    name: str

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Text deltas; closing the iterator early cancels the generation and frees its slot."""
        ...

    async def complete(self, request: ChatRequest) -> ChatResult: ...

    def warmup(self) -> None:
        """Load the model (blocking) so the first request does not pay for it."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class EmbeddingRunner(Protocol):
    name: str

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult: ...

    def warmup(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ClassifierRunner(Protocol):
    name: str

    async def classify(self, texts: Sequence[str]) -> ClassificationResult: ...

    def warmup(self) -> None: ...

    def close(self) -> None: ...


async def collect(chunks: AsyncIterator[ChatChunk]) -> ChatResult:
    """Join a stream into one result (how ``complete`` is built on ``stream``).

    The stream is closed before returning, so an upstream connection is released now and
    not whenever the garbage collector gets to it. Callers that stop reading a stream
    early (a disconnected client) must ``aclose()`` it the same way.
    """
    parts: list[str] = []
    try:
        async for chunk in chunks:
            parts.append(chunk.text)
            if chunk.finish_reason is not None:
                return ChatResult("".join(parts), chunk.finish_reason, chunk.usage or Usage(0, 0))
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    raise RuntimeError("model stream ended without a finish reason")
