"""A local causal LM served with step-level (continuous) batching.

One worker thread owns the model. Each loop iteration it

1. drops sequences whose caller went away (cancelled), ran past their deadline, or finished;
2. admits waiting requests up to ``max_batch``: one left-padded prefill pass for the new
   ones, whose KV cache is then merged into the running batch's cache;
3. runs one decode step for every running sequence together (one forward pass).

So a request arriving mid-generation joins at the next step instead of waiting for the
batch to drain, and N concurrent streams cost roughly one forward pass per token rather
than N. Callers see an async iterator of text deltas; the worker hands chunks to the
caller's event loop with ``call_soon_threadsafe``.

Only architectures whose cache is a plain per-layer key/value tensor (Llama, Mistral
without sliding windows, Qwen2, SmolLM...) are supported; others are better served by an
upstream engine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from appliance.errors import InvalidInput, NotSupportedYet, Overloaded
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

_GREEDY_BELOW = 1e-5
_REPLACEMENT = "\ufffd"


@dataclass(eq=False)
class _Seq:
    """One request's state; fields after ``loop`` are touched only by the worker thread."""

    request: ChatRequest
    prompt_ids: list[int]
    max_new: int
    deadline: float
    timeout_s: float
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[ChatChunk | BaseException]
    generator: torch.Generator | None
    cancelled: bool = False
    out_ids: list[int] = field(default_factory=list)
    emitted: int = 0
    done: bool = False

    def send(self, item: ChatChunk | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody is listening any more
            self.cancelled = True


def _new_cache(kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Any:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv) if kv else DynamicCache()


@dataclass(eq=False)
class _Batch:
    """The running sequences: row i of every tensor belongs to ``seqs[i]``.

    Rows are left-padded to a common length; ``mask`` marks real tokens, ``positions``
    holds each row's next position id, ``kv`` the per-layer key/value cache tensors
    shaped [batch, kv_heads, length, head_dim].
    """

    seqs: list[_Seq]
    cache: Any
    """A transformers ``DynamicCache``; decode steps grow it in place."""
    mask: torch.Tensor
    positions: torch.Tensor
    next_tokens: torch.Tensor

    @property
    def kv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(layer.keys, layer.values) for layer in self.cache.layers]

    def select(self, keep: list[int]) -> _Batch | None:
        """Only rows ``keep`` (None when empty), minus the columns that are padding in all of them."""
        if not keep:
            return None
        if len(keep) == len(self.seqs):
            return self
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        first = int(mask.any(dim=0).nonzero()[0].item())
        return _Batch(
            seqs=[self.seqs[i] for i in keep],
            cache=_new_cache(
                [(k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:]) for k, v in self.kv]
            ),
            mask=mask[:, first:],
            positions=self.positions.index_select(0, index),
            next_tokens=self.next_tokens.index_select(0, index),
        )

    def merge(self, other: _Batch) -> _Batch:
        """Both batches' rows, left-padded to the longer cache."""
        total = max(self.mask.shape[1], other.mask.shape[1])

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = total - t.shape[dim]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)

        return _Batch(
            seqs=self.seqs + other.seqs,
            cache=_new_cache(
                [
                    (torch.cat([pad(k0, 2), pad(k1, 2)]), torch.cat([pad(v0, 2), pad(v1, 2)]))
                    for (k0, v0), (k1, v1) in zip(self.kv, other.kv, strict=True)
                ]
            ),
            mask=torch.cat([pad(self.mask, 1), pad(other.mask, 1)]),
            positions=torch.cat([self.positions, other.positions]),
            next_tokens=torch.cat([self.next_tokens, other.next_tokens]),
        )


def _stop_holdback(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might be the start of a stop string (so not yet sent)."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


class LocalChatRunner(WorkerThreadRunner):
    """Serves one causal LM directory. Thread-safe; the async methods need a running loop."""

    kind = "chat"

    def __init__(
        self,
        name: str,
        model_dir: Path,
        *,
        device: str = "cpu",
        max_batch: int = 8,
        max_queue: int = 64,
        request_timeout_s: float = 120.0,
        default_max_tokens: int = 512,
        observer: InputObserver | None = None,
    ) -> None:
        self.name = name
        self._dir = model_dir
        self._device = torch.device(device)
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._timeout_s = request_timeout_s
        self._default_max_tokens = default_max_tokens
        self._observer = observer

        self._load_lock = threading.Lock()
        self._tok_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._eos: set[int] = set()
        self._pad_id = 0
        self._context = 2048

        self._cond = threading.Condition()
        self._pending: collections.deque[_Seq] = collections.deque()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stats = RunnerStats()
        self._avg_request_s = 5.0

        self._batch: _Batch | None = None  # owned by the worker thread

    # ---------------------------------------------------------------- lifecycle

    def warmup(self) -> None:
        """Load weights and tokenizer, start the worker, and run one tiny pass (blocking)."""
        with self._load_lock:
            if self._model is not None:
                return
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if self._closed:
                raise Overloaded("model is shutting down", status=503)
            tokenizer = AutoTokenizer.from_pretrained(str(self._dir))
            model = AutoModelForCausalLM.from_pretrained(str(self._dir), dtype=torch.float32)
            model.to(self._device).eval()  # type: ignore[arg-type]  # transformers wraps .to with a decorator mypy misreads
            if tokenizer.chat_template is None:
                raise InvalidInput(f"model {self.name!r} has no chat template; it cannot serve chat")
            eos = model.generation_config.eos_token_id
            if eos is None:
                eos = tokenizer.eos_token_id
            self._eos = set(eos) if isinstance(eos, list) else {int(eos)}
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._eos)
            self._pad_id = int(pad)
            self._context = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
            self._tokenizer = tokenizer
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([[self._pad_id]], device=self._device), use_cache=True)
            if not all(type(layer).__name__ == "DynamicLayer" for layer in out.cache.layers):
                raise NotSupportedYet(f"model {self.name!r} uses a cache layout the batched runner does not support")
            self._model = model
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
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        with self._tok_lock:
            text = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(text)

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

    def _submit(self, request: ChatRequest) -> _Seq:
        self._validate(request)
        self.warmup()
        prompt = self.render(request)
        with self._tok_lock:
            prompt_ids = list(self._tokenizer(prompt, add_special_tokens=False)["input_ids"])
        room = self._context - len(prompt_ids)
        if room < 1:
            raise InvalidInput(f"the prompt is {len(prompt_ids)} tokens; model {self.name!r} takes {self._context}")
        wanted = request.max_tokens or self._default_max_tokens
        timeout_s = request.timeout_s or self._timeout_s
        generator = None
        if request.temperature >= _GREEDY_BELOW:
            generator = torch.Generator(device=self._device)
            if request.seed is not None:
                generator.manual_seed(request.seed)
            else:
                generator.seed()
        seq = _Seq(
            request=request,
            prompt_ids=prompt_ids,
            max_new=min(wanted, room),
            deadline=time.monotonic() + timeout_s,
            timeout_s=timeout_s,
            loop=asyncio.get_running_loop(),
            queue=asyncio.Queue(),
            generator=generator,
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

    def _cancel(self, seq: _Seq) -> None:
        with self._cond:
            seq.cancelled = True
            with contextlib.suppress(ValueError):  # already running: dropped before the next step
                self._pending.remove(seq)
            self._cond.notify()

    @staticmethod
    def _validate(request: ChatRequest) -> None:
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

    # ---------------------------------------------------------------- worker thread

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self._pending and not self._active:
                        self._cond.wait()
                    if self._closed:
                        break
                    admitted: list[_Seq] = []
                    while self._pending and len(self._active) + len(admitted) < self._max_batch:
                        admitted.append(self._pending.popleft())
                try:
                    self._step(admitted)
                except Exception as exc:
                    log.exception("chat model %s failed a step; failing its requests", self.name)
                    for seq in self._active + admitted:
                        self._finish_with_error(seq, exc)
                    self._reset_batch()
        shutdown = Overloaded("model is shutting down", status=503)
        with self._cond:
            leftover = list(self._pending) + self._active
            self._pending.clear()
        for seq in leftover:
            self._finish_with_error(seq, shutdown)
        self._reset_batch()

    def _reset_batch(self) -> None:
        self._batch = None

    @property
    def _active(self) -> list[_Seq]:
        return self._batch.seqs if self._batch is not None else []

    def _finish_with_error(self, seq: _Seq, exc: BaseException) -> None:
        if not seq.done:
            seq.done = True
            seq.send(exc)

    def _step(self, admitted: list[_Seq]) -> None:
        self._prune()
        admitted = [s for s in admitted if self._alive(s)]
        if admitted:
            self._prefill(admitted)
        if self._batch is not None:
            self._decode(self._batch)

    def _alive(self, seq: _Seq) -> bool:
        if seq.cancelled:
            seq.done = True
            return False
        if time.monotonic() > seq.deadline:
            self._finish_with_error(seq, GenerationTimeout(seq.timeout_s))
            return False
        return not seq.done

    def _prune(self) -> None:
        if self._batch is None:
            return
        keep = [i for i, s in enumerate(self._batch.seqs) if self._alive(s)]
        self._batch = self._batch.select(keep)

    def _prefill(self, seqs: list[_Seq]) -> None:
        width = max(len(s.prompt_ids) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            n = len(seq.prompt_ids)
            ids[row, width - n :] = torch.tensor(seq.prompt_ids)
            mask[row, width - n :] = 1
        ids, mask = ids.to(self._device), mask.to(self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = _new_cache()
        out = self._model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1
        )
        self._count(len(seqs), prefill=True)
        tokens = self._sample(out.logits[:, -1, :], seqs)
        fresh = _Batch(
            seqs=seqs,
            cache=cache,
            mask=mask,
            positions=mask.sum(-1),
            next_tokens=torch.tensor([[t] for t in tokens], device=self._device),
        )
        finished = [self._advance(seq, tok) for seq, tok in zip(seqs, tokens, strict=True)]
        joined = fresh.select([i for i, f in enumerate(finished) if not f])
        if joined is not None:
            self._batch = joined if self._batch is None else self._batch.merge(joined)

    def _decode(self, batch: _Batch) -> None:
        size = len(batch.seqs)
        mask = torch.cat([batch.mask, torch.ones((size, 1), dtype=batch.mask.dtype, device=self._device)], dim=1)
        out = self._model(
            input_ids=batch.next_tokens,
            attention_mask=mask,
            position_ids=batch.positions.unsqueeze(1),
            cache=batch.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._count(size, prefill=False)
        tokens = self._sample(out.logits[:, -1, :], batch.seqs)
        batch.mask = mask
        batch.positions = batch.positions + 1
        batch.next_tokens = torch.tensor([[t] for t in tokens], device=self._device)
        finished = [self._advance(seq, tok) for seq, tok in zip(batch.seqs, tokens, strict=True)]
        if any(finished):
            self._batch = batch.select([i for i, f in enumerate(finished) if not f])

    def _count(self, batch: int, *, prefill: bool) -> None:
        with self._cond:
            st = self._stats
            st.forward_passes += 1
            if prefill:
                st.prefill_passes += 1
            else:
                st.decode_steps += 1
                st.batch_sizes[batch] = st.batch_sizes.get(batch, 0) + 1
            st.max_batch_seen = max(st.max_batch_seen, batch)

    def _sample(self, logits: torch.Tensor, seqs: list[_Seq]) -> list[int]:
        if all(s.generator is None for s in seqs):
            return [int(t) for t in logits.argmax(dim=-1).tolist()]
        tokens = []
        for row, seq in enumerate(seqs):
            if seq.generator is None:
                tokens.append(int(logits[row].argmax().item()))
                continue
            probs = torch.softmax(logits[row].float() / seq.request.temperature, dim=-1)
            if seq.request.top_p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                cumulative = sorted_probs.cumsum(-1)
                sorted_probs[(cumulative - sorted_probs) > seq.request.top_p] = 0.0
                probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
            tokens.append(int(torch.multinomial(probs, 1, generator=seq.generator).item()))
        return tokens

    def _advance(self, seq: _Seq, token: int) -> bool:
        """Record one sampled token, send what text is safe to send; True when ``seq`` is finished."""
        if seq.cancelled:
            seq.done = True
            return True
        seq.out_ids.append(token)
        reason: FinishReason | None = None
        if token in self._eos:
            reason = "stop"
            text = self._decode_text(seq.out_ids[:-1])
        else:
            text = self._decode_text(seq.out_ids)
        stops = seq.request.stop
        if stops:
            hits = [i for i in (text.find(s, max(0, seq.emitted - max(map(len, stops)))) for s in stops) if i >= 0]
            if hits:
                text, reason = text[: min(hits)], "stop"
        if reason is None and len(seq.out_ids) >= seq.max_new:
            reason = "length"
        if reason is None:
            safe = len(text.rstrip(_REPLACEMENT))  # an incomplete multi-byte character is held back
            safe = min(safe, len(text) - _stop_holdback(text, stops))
            if safe > seq.emitted:
                seq.send(ChatChunk(text[seq.emitted : safe]))
                seq.emitted = safe
            return False
        usage = Usage(len(seq.prompt_ids), len(seq.out_ids))
        seq.done = True
        seq.send(ChatChunk(text[seq.emitted :], finish_reason=reason, usage=usage))
        with self._cond:
            self._stats.completion_tokens += len(seq.out_ids)
            elapsed = time.monotonic() - (seq.deadline - seq.timeout_s)
            self._avg_request_s = 0.9 * self._avg_request_s + 0.1 * elapsed
        return True

    def _decode_text(self, ids: list[int]) -> str:
        with self._tok_lock:
            return str(self._tokenizer.decode(ids, skip_special_tokens=True))
