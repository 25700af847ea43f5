"""Step-level (continuous) batching of chat generations, whatever engine computes the tokens.

One worker thread owns the engine. Each loop iteration it

1. drops sequences whose caller went away (cancelled), ran past their deadline, or finished,
   and gives their slots back to the engine;
2. admits waiting requests up to ``max_batch``;
3. asks the engine for one more token of every running sequence and of every admitted one
   (:meth:`StepBatchedChatRunner._forward`: the engine prefills the newcomers and runs one
   decode step for the others, in one pass or two as it likes).

So a request arriving mid-generation joins at the next step instead of waiting for the
batch to drain, and N concurrent streams cost roughly one forward pass per token rather
than N. Callers see an async iterator of text deltas; the worker hands chunks to the
caller's event loop with ``call_soon_threadsafe``.

This module holds what the engines share: queueing and back-pressure, deadlines,
cancellation, incremental detokenization, stop strings and the observer seam. The torch
engine is :mod:`appliance.models.chat`, the llama.cpp one :mod:`appliance.models.llamacpp`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from appliance.errors import InvalidInput, Overloaded
from appliance.models.base import (
    ChatChunk,
    ChatRequest,
    ChatResult,
    FinishReason,
    GenerationTimeout,
    InputObserver,
    ModelInput,
    RunnerStats,
    Usage,
    WorkerThreadRunner,
    collect,
)

log = logging.getLogger(__name__)

GREEDY_BELOW = 1e-5
"""Temperatures below this are greedy decoding (OpenAI clients send 0)."""


class Detokenizer(Protocol):
    """Turns one sequence's tokens into text incrementally (each call costs O(1) tokens, not
    O(length)): ``push`` returns the text that became certain with this token (a multi-byte
    character split across tokens is held back until complete), ``flush`` the rest."""

    def push(self, token: int) -> str: ...

    def flush(self) -> str: ...


@dataclass(eq=False)
class GenSeq:
    """One request's state; fields after ``queue`` are touched only by the worker thread
    (``cancelled`` also by the caller, under the runner's lock)."""

    request: ChatRequest
    prompt_ids: list[int]
    max_new: int
    deadline: float
    timeout_s: float
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[ChatChunk | BaseException]
    seed: int
    """The request's seed, or a random one: sampling engines draw from it alone, so a row's
    tokens do not depend on which other requests share its batch."""
    detok: Detokenizer
    cancelled: bool = False
    out_ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    done: bool = False
    slot: int = -1
    """The engine's place for this sequence (a KV-cache row or a llama.cpp sequence id)."""

    @property
    def greedy(self) -> bool:
        return self.request.temperature < GREEDY_BELOW

    def send(self, item: ChatChunk | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody is listening any more
            self.cancelled = True


def stop_holdback(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might be the start of a stop string (so not yet sent)."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


def validate(request: ChatRequest) -> None:
    """Refuse a request no engine can run, before it takes a queue place."""
    if not request.messages:
        raise InvalidInput("messages must not be empty")
    if request.max_tokens is not None and request.max_tokens < 1:
        raise InvalidInput("max_tokens must be at least 1")
    if not 0 <= request.temperature <= 2:
        raise InvalidInput("temperature must be between 0 and 2")
    if not 0 < request.top_p <= 1:
        raise InvalidInput("top_p must be greater than 0 and at most 1")
    if len(request.stop) > 4 or any(not s for s in request.stop):
        raise InvalidInput("stop takes at most 4 non-empty strings")


class StepBatchedChatRunner(WorkerThreadRunner, ABC):
    """The caller side and the worker loop of a local chat runner. Thread-safe; the async
    methods need a running loop. Subclasses supply the engine (see the abstract methods)."""

    kind = "chat"

    def __init__(
        self,
        name: str,
        *,
        max_batch: int,
        max_queue: int,
        request_timeout_s: float,
        default_max_tokens: int,
        observer: InputObserver | None,
    ) -> None:
        self.name = name
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._timeout_s = request_timeout_s
        self._default_max_tokens = default_max_tokens
        self._observer = observer
        self._context = 2048
        """Tokens one sequence may hold (prompt and answer); engines set it at load."""

        self._load_lock = threading.Lock()
        self._loaded = False
        self._cond = threading.Condition()
        self._pending: collections.deque[GenSeq] = collections.deque()
        self._running: list[GenSeq] = []  # owned by the worker thread
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stats = RunnerStats()
        self._avg_request_s = 5.0

    # ---------------------------------------------------------------- what engines supply

    @abstractmethod
    def _load(self) -> None:
        """Load the model and set ``_context`` (blocking; called once, under the load lock)."""

    @abstractmethod
    def _template(self, messages: list[dict[str, str]]) -> str:
        """The chat template applied to ``messages``, with the generation prompt."""

    @abstractmethod
    def _encode(self, prompt: str) -> list[int]:
        """Token ids of a templated prompt (special tokens in it parsed, none added)."""

    @abstractmethod
    def _detokenizer(self) -> Detokenizer:
        """A fresh incremental detokenizer for one sequence."""

    @abstractmethod
    def _is_end(self, token: int) -> bool:
        """Whether ``token`` ends a generation (end of turn, end of text)."""

    @abstractmethod
    def _forward(self, running: list[GenSeq], joining: list[GenSeq]) -> list[int]:
        """One more token for each sequence of ``running + joining``, in that order.

        ``joining`` sequences have no slot yet: the engine gives each one (``seq.slot``) and
        prefills its prompt; ``running`` ones get one decode step. On the worker thread."""

    @abstractmethod
    def _release(self, seq: GenSeq) -> None:
        """Give ``seq``'s slot back (it finished, failed or was cancelled)."""

    @abstractmethod
    def _reset(self) -> None:
        """Forget every sequence's engine state after a failed step."""

    def _worker_context(self) -> contextlib.AbstractContextManager[object]:
        """Entered once around the worker loop (torch: inference mode)."""
        return contextlib.nullcontext()

    # ---------------------------------------------------------------- lifecycle

    def warmup(self) -> None:
        """Load the model and start the worker (blocking; a no-op once loaded)."""
        with self._load_lock:
            if self._loaded:
                return
            if self._closed:
                raise Overloaded("model is shutting down", status=503)
            self._load()
            self._loaded = True
            self._thread = threading.Thread(target=self._run, name=f"chat-{self.name}", daemon=True)
            self._thread.start()

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._pending)

    # ---------------------------------------------------------------- caller side

    def render(self, request: ChatRequest) -> str:
        """The exact prompt text the model receives for ``request`` (chat template applied)."""
        self.warmup()
        return self._template([{"role": m.role, "content": m.content} for m in request.messages])

    async def complete(self, request: ChatRequest) -> ChatResult:
        return await collect(self.stream(request))

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        seq = self._submit(request)
        try:
            while True:
                remaining = seq.deadline - time.monotonic() + 5.0  # the worker enforces it; this is a backstop
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that lands as the next token arrives, and a client that went
                # away would keep its generation running.
                try:
                    async with asyncio.timeout(max(remaining, 0.1)):
                        item = await seq.queue.get()
                except TimeoutError:
                    raise GenerationTimeout(seq.timeout_s) from None
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not seq.done:
                self._cancel(seq)

    def _submit(self, request: ChatRequest) -> GenSeq:
        validate(request)
        self.warmup()
        if self._closed:
            raise Overloaded("model is shutting down", status=503)
        prompt = self.render(request)
        prompt_ids = self._encode(prompt)
        room = self._context - len(prompt_ids)
        if room < 1:
            raise InvalidInput(f"the prompt is {len(prompt_ids)} tokens; model {self.name!r} takes {self._context}")
        wanted = request.max_tokens or self._default_max_tokens
        timeout_s = request.timeout_s or self._timeout_s
        seq = GenSeq(
            request=request,
            prompt_ids=prompt_ids,
            max_new=min(wanted, room),
            deadline=time.monotonic() + timeout_s,
            timeout_s=timeout_s,
            loop=asyncio.get_running_loop(),
            queue=asyncio.Queue(),
            seed=request.seed if request.seed is not None else secrets.randbits(63),
            detok=self._detokenizer(),
        )
        if self._observer is not None:  # before queueing: an observer that raises leaves nothing behind
            self._observer(ModelInput(self.name, "chat", (prompt,)))
        with self._cond:
            if self._closed:
                raise Overloaded("model is shutting down", status=503)
            if len(self._pending) >= self._max_queue:
                waves = len(self._pending) / max(self._max_batch, 1)
                raise Overloaded(
                    f"model {self.name!r} has {len(self._pending)} requests waiting; retry later",
                    retry_after_s=max(1, math.ceil(waves * self._avg_request_s)),
                )
            self._pending.append(seq)
            self._stats.requests += 1
            self._cond.notify()
        return seq

    def _cancel(self, seq: GenSeq) -> None:
        with self._cond:
            seq.cancelled = True
            with contextlib.suppress(ValueError):  # already running: dropped before the next step
                self._pending.remove(seq)
            self._cond.notify()

    # ---------------------------------------------------------------- worker thread

    def _run(self) -> None:
        with self._worker_context():
            while True:
                with self._cond:
                    while not self._closed and not self._pending and not self._running:
                        self._cond.wait()
                    if self._closed:
                        break
                    admitted: list[GenSeq] = []
                    while self._pending and len(self._running) + len(admitted) < self._max_batch:
                        admitted.append(self._pending.popleft())
                try:
                    self._iterate(admitted)
                except Exception as exc:
                    log.exception("chat model %s failed a step; failing its requests", self.name)
                    for seq in self._running + admitted:
                        self._fail(seq, exc)
                    self._running = []
                    self._reset()
        shutdown = Overloaded("model is shutting down", status=503)
        with self._cond:
            leftover = list(self._pending) + self._running
            self._pending.clear()
        for seq in leftover:
            self._fail(seq, shutdown)
        self._running = []
        self._reset()

    def _iterate(self, admitted: list[GenSeq]) -> None:
        running = []
        for seq in self._running:
            if self._alive(seq):
                running.append(seq)
            else:
                self._release(seq)
        joining = [s for s in admitted if self._alive(s)]
        self._running = running + joining
        if not self._running:
            return
        tokens = self._forward(running, joining)
        still = []
        for seq, token in zip(self._running, tokens, strict=True):
            if self._advance(seq, token):
                self._release(seq)
            else:
                still.append(seq)
        self._running = still

    def _alive(self, seq: GenSeq) -> bool:
        if seq.cancelled:
            seq.done = True
            return False
        if time.monotonic() > seq.deadline:
            self._fail(seq, GenerationTimeout(seq.timeout_s))
            return False
        return not seq.done

    @staticmethod
    def _fail(seq: GenSeq, exc: BaseException) -> None:
        if not seq.done:
            seq.done = True
            seq.send(exc)

    def _count(self, batch: int, *, prefill: bool, passes: int = 1) -> None:
        with self._cond:
            st = self._stats
            st.forward_passes += passes
            if prefill:
                st.prefill_passes += passes
            else:
                st.decode_steps += passes
                st.batch_sizes[batch] = st.batch_sizes.get(batch, 0) + passes
            st.max_batch_seen = max(st.max_batch_seen, batch)

    def _advance(self, seq: GenSeq, token: int) -> bool:
        """Record one sampled token, send what text is safe to send; True when ``seq`` is finished."""
        if seq.cancelled:
            seq.done = True
            return True
        seq.out_ids.append(token)
        reason: FinishReason | None = None
        if self._is_end(token):
            reason = "stop"
            seq.text += seq.detok.flush()
        elif len(seq.out_ids) >= seq.max_new:
            reason = "length"
            seq.text += seq.detok.push(token) + seq.detok.flush()
        else:
            seq.text += seq.detok.push(token)
        stops = seq.request.stop
        text = seq.text
        if stops:
            start = max(0, seq.emitted - max(map(len, stops)))
            hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
            if hits:
                text, reason = text[: min(hits)], "stop"
        if reason is None:
            safe = len(text) - stop_holdback(text, stops)
            if safe > seq.emitted:
                seq.send(ChatChunk(text[seq.emitted : safe]))
                seq.emitted = safe
            return False
        usage = Usage(len(seq.prompt_ids), len(seq.out_ids))
        seq.done = True
        with self._cond:  # counted before the caller can see the end, so its stats include it
            self._stats.completion_tokens += len(seq.out_ids)
            elapsed = time.monotonic() - (seq.deadline - seq.timeout_s)
            self._avg_request_s = 0.9 * self._avg_request_s + 0.1 * elapsed
        seq.send(ChatChunk(text[seq.emitted :], finish_reason=reason, usage=usage))
        return True


def chunked(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    """``items`` in consecutive pieces of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
