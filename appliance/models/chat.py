"""A local causal LM served by torch with step-level (continuous) batching.

The scheduling (queue, deadlines, cancellation, stop strings, streaming) is shared with the
llama.cpp engine in :mod:`appliance.models.generation`; this module is the torch engine:

- the key/value cache is preallocated with one slot per running sequence
  (:class:`~appliance.models.kv_cache.SlotCache`): a joining sequence is prefilled into a
  free slot, a finishing one frees its slot, and no step copies the running batch's cache;
- the next input tokens, positions, lengths and sampling parameters live on the model's
  device; sampling is vectorized over the batch (:mod:`appliance.models.token_sampling`), and
  each step copies the new tokens to the host once, for the whole batch;
- detokenization is incremental (a few tokens per step, not the whole answer again);
- on CUDA, weights load in bfloat16 where the GPU supports it, the cache is allocated at
  full size, and the decode step is captured as a CUDA graph per bucketed batch size
  (1, 2, 4, ... up to ``max_batch``) and replayed, which removes the per-kernel launch
  cost that bounds a small model's decode step. Every graph is captured while the model
  loads (:func:`graph_plan`), not mid-serving, and in ``thread_local`` capture mode, so CUDA
  work of other threads (the embedding worker) neither breaks a capture nor is refused by
  it. On CPU the same step runs eagerly at the exact batch size.

Only architectures whose attention layers keep a plain key/value cache (Llama, Mistral
without sliding windows, Qwen2, SmolLM...) are supported; others are refused at load and
are better served by an upstream engine.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from appliance.errors import InvalidInput, NotSupportedYet
from appliance.models import sizing
from appliance.models.base import InputObserver
from appliance.models.generation import Detokenizer, GenSeq, StepBatchedChatRunner, stop_holdback
from appliance.models.kv_cache import GROW_STEP, SlotCache
from appliance.models.token_sampling import sample

log = logging.getLogger(__name__)

_stop_holdback = stop_holdback  # the name the tests knew it by
_REPLACEMENT = "\ufffd"
_PREFILL_BUDGET = 32 * 1024 * 1024
"""Most attention-mask cells (rows x prompt length squared) one prefill pass may build."""
SAMPLING_MODES = (0, 1, 2)
"""Decode-step variants, each its own graph: 0 greedy only, 1 sampled without top-p, 2 top-p."""
CAPTURE_OPTIONS: dict[str, Any] = {"capture_error_mode": "thread_local"}
"""How every decode graph is captured. The default (``global``) makes CUDA calls from any
thread that are unsafe during a capture (an allocation, a synchronizing copy: the embedding
worker makes them) fail, and invalidates the capture; ``thread_local`` checks only the
capturing thread, whose step does none of them."""


def batch_bucket(rows: int, max_batch: int) -> int:
    """The captured batch size that serves ``rows`` running sequences (the next power of
    two, at most ``max_batch``); the rows past ``rows`` compute on idle slots and are ignored."""
    size = 1
    while size < rows:
        size *= 2
    return min(size, max_batch)


def graph_plan(max_batch: int) -> list[tuple[int, int]]:
    """Every (batch bucket, sampling mode) a decode step can ask for: what the runner
    captures at load, so no capture happens while requests are being served."""
    buckets = sorted({batch_bucket(n, max_batch) for n in range(1, max_batch + 1)})
    return [(rows, mode) for rows in buckets for mode in SAMPLING_MODES]


class HFDetokenizer:
    """Incremental detokenization over a small window of tokens (the approach of TGI and
    vLLM): decode the tokens since the last emitted offset with one token of context before
    it, and emit the new text once it does not end in a partial character."""

    def __init__(self, tokenizer: Any, lock: threading.Lock) -> None:
        self._tokenizer = tokenizer
        self._lock = lock
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def _texts(self) -> tuple[str, str]:
        with self._lock:
            before = self._tokenizer.decode(self._ids[self._prefix : self._read], skip_special_tokens=True)
            after = self._tokenizer.decode(self._ids[self._prefix :], skip_special_tokens=True)
        return str(before), str(after)

    def push(self, token: int) -> str:
        self._ids.append(token)
        before, after = self._texts()
        if len(after) > len(before) and not after.endswith(_REPLACEMENT):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        before, after = self._texts()
        self._prefix = self._read = len(self._ids)
        return after[len(before) :] if len(after) > len(before) else ""


@dataclass(frozen=True)
class _Graph:
    graph: Any
    tokens: torch.Tensor


class LocalChatRunner(StepBatchedChatRunner):
    """Serves one causal LM directory with torch. ``max_batch``/``max_queue`` None: derived
    from the device at load (see :mod:`appliance.models.sizing`); ``dtype`` None: bfloat16 on
    a GPU that supports it, else float32; ``cuda_graphs`` None: on for CUDA devices."""

    def __init__(
        self,
        name: str,
        model_dir: Path,
        *,
        device: str = "cpu",
        max_batch: int | None = 8,
        max_queue: int | None = 64,
        request_timeout_s: float = 120.0,
        default_max_tokens: int = 512,
        observer: InputObserver | None = None,
        dtype: torch.dtype | None = None,
        cuda_graphs: bool | None = None,
        max_context: int | None = None,
    ) -> None:
        super().__init__(
            name,
            max_batch=max_batch or 8,
            max_queue=max_queue or 64,
            request_timeout_s=request_timeout_s,
            default_max_tokens=default_max_tokens,
            observer=observer,
        )
        self._dir = model_dir
        self._device = torch.device(device)
        self._derive_batch = max_batch is None
        self._derive_queue = max_queue is None
        self._dtype = dtype
        self._use_graphs = self._device.type == "cuda" if cuda_graphs is None else cuda_graphs
        self._max_context = max_context
        self._tok_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._eos: set[int] = set()
        self._pad_id = 0
        self._cache_arg = "cache"
        # Worker-side state, set in _load.
        self._cache: SlotCache | None = None
        self._slots: list[GenSeq | None] = []
        self._host_len: list[int] = []
        self._graphs: dict[tuple[int, int], _Graph] = {}
        self._graph_pool: Any = None

    @property
    def dtype(self) -> torch.dtype | None:
        """The weights' dtype once loaded."""
        return self._dtype

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @property
    def max_queue(self) -> int:
        return self._max_queue

    # ---------------------------------------------------------------- loading

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(self._dir))
        if tokenizer.chat_template is None:
            raise InvalidInput(f"model {self.name!r} has no chat template; it cannot serve chat")
        dtype = self._dtype or sizing.default_dtype(self._device)
        model = AutoModelForCausalLM.from_pretrained(str(self._dir), dtype=dtype)
        model.to(self._device).eval()  # type: ignore[arg-type]  # transformers wraps .to with a decorator mypy misreads
        config = model.config
        _check_architecture(self.name, config)
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos = set(eos) if isinstance(eos, list) else {int(eos)}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._eos)
        self._pad_id = int(pad)
        context = int(getattr(config, "max_position_embeddings", 2048) or 2048)
        self._context = min(context, self._max_context) if self._max_context else context
        self._tokenizer = tokenizer
        self._model = model
        self._dtype = dtype
        # transformers 5.24 renamed the cache argument; older 5.x releases (some GPU images) take the old name
        forward = inspect.signature(type(model).forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"

        heads = int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        layers = int(config.num_hidden_layers)
        per_token = SlotCache.bytes_per_token(layers=layers, kv_heads=kv_heads, head_dim=head_dim, dtype=dtype)
        if self._device.type == "cuda":
            # A GPU gets its whole cache up front (no reallocation under captured graphs),
            # so the context per slot is capped and the slot count follows from memory.
            self._context = min(self._context, sizing.GPU_CONTEXT_CAP)
            limits = sizing.chat_limits(
                sizing.device_memory(self._device), kv_bytes_per_token=per_token, context=self._context
            )
        else:
            limits = sizing.ChatLimits(max_batch=8, max_queue=64)
        if self._derive_batch:
            self._max_batch = limits.max_batch
        if self._derive_queue:
            self._max_queue = limits.max_queue
        initial = self._context if self._device.type == "cuda" else GROW_STEP
        self._cache = SlotCache(
            layers=layers,
            slots=self._max_batch,
            kv_heads=kv_heads,
            head_dim=head_dim,
            capacity=initial,
            max_capacity=self._context,
            dtype=dtype,
            device=self._device,
        )
        slots = self._max_batch
        self._next = torch.zeros(slots, dtype=torch.long, device=self._device)
        self._lengths = torch.zeros(slots, dtype=torch.long, device=self._device)
        self._temperature = torch.zeros(slots, dtype=torch.float32, device=self._device)
        self._top_p = torch.ones(slots, dtype=torch.float32, device=self._device)
        self._seeds = torch.zeros(slots, dtype=torch.long, device=self._device)
        self._slots = [None] * slots
        self._host_len = [0] * slots
        self._check_cache_calls(layers)
        if self._use_graphs:
            self._capture_all()
        log.info(
            "chat model loaded",
            extra={
                "model": self.name,
                "device": str(self._device),
                "dtype": str(dtype).removeprefix("torch."),
                "max_batch": self._max_batch,
                "max_queue": self._max_queue,
                "context": self._context,
                "cuda_graphs": self._use_graphs,
            },
        )

    def _check_cache_calls(self, layers: int) -> None:
        """Run one token through the slot cache and make sure every layer wrote to it (a
        layer that keeps its own state would answer wrongly from the second token on)."""
        assert self._cache is not None
        calls: list[int] = []
        update = self._cache.update

        def counting(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            calls.append(1)
            return update(*args, **kwargs)

        self._cache.update = counting  # type: ignore[method-assign]
        try:
            with torch.inference_mode():
                write = torch.zeros((1, 1), dtype=torch.long, device=self._device)
                self._cache.target(slice(0, 1), write, 1)
                mask = torch.zeros((1, 1, 1, 1), dtype=self._dtype, device=self._device)
                self._model(
                    input_ids=torch.tensor([[self._pad_id]], device=self._device),
                    attention_mask=mask,
                    position_ids=write,
                    use_cache=True,
                    logits_to_keep=1,
                    **{self._cache_arg: self._cache},
                )
        finally:
            del self._cache.update
        if len(calls) != layers:
            raise NotSupportedYet(f"model {self.name!r} uses a cache layout the batched runner does not support")

    # ---------------------------------------------------------------- text

    def _template(self, messages: list[dict[str, str]]) -> str:
        with self._tok_lock:
            text = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(text)

    def _encode(self, prompt: str) -> list[int]:
        with self._tok_lock:
            return list(self._tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def _detokenizer(self) -> Detokenizer:
        return HFDetokenizer(self._tokenizer, self._tok_lock)

    def _is_end(self, token: int) -> bool:
        return token in self._eos

    def _worker_context(self) -> contextlib.AbstractContextManager[object]:
        return torch.inference_mode()

    # ---------------------------------------------------------------- the engine

    def _forward(self, running: list[GenSeq], joining: list[GenSeq]) -> list[int]:
        assert self._cache is not None
        n = len(running)
        assert all(seq.slot == i for i, seq in enumerate(sorted(running, key=lambda s: s.slot)))
        parts: list[torch.Tensor] = []
        order = sorted(running, key=lambda s: s.slot)
        if joining:
            for offset, seq in enumerate(joining):
                self._assign(seq, n + offset)
            parts.append(self._prefill(joining, n))
        if running:
            parts.insert(0, self._decode(n, order))
        tokens: list[int] = torch.cat(parts).tolist()  # the one host copy of this step
        by_slot = {seq.slot: token for seq, token in zip(order + joining, tokens, strict=True)}
        return [by_slot[seq.slot] for seq in running + joining]

    def _assign(self, seq: GenSeq, slot: int) -> None:
        seq.slot = slot
        self._slots[slot] = seq
        request = seq.request
        self._temperature[slot] = 0.0 if seq.greedy else request.temperature
        self._top_p[slot] = request.top_p
        self._seeds[slot] = seq.seed

    def _prefill(self, seqs: list[GenSeq], first_slot: int) -> torch.Tensor:
        """Prefill ``seqs`` into slots ``first_slot...``; their first tokens (on the device)."""
        out: list[torch.Tensor] = []
        group: list[GenSeq] = []
        for seq in seqs:  # groups whose attention masks stay within the budget
            width = max(len(s.prompt_ids) for s in [*group, seq])
            if group and (len(group) + 1) * width * width > _PREFILL_BUDGET:
                out.append(self._prefill_group(group, first_slot))
                first_slot += len(group)
                group = []
            group.append(seq)
        out.append(self._prefill_group(group, first_slot))
        return torch.cat(out)

    def _prefill_group(self, seqs: list[GenSeq], first_slot: int) -> torch.Tensor:
        assert self._cache is not None
        lengths = [len(s.prompt_ids) for s in seqs]
        width = max(lengths)
        if self._cache.reserve(width + 1):
            self._graphs.clear()
        k = len(seqs)
        ids = torch.full((k, width), self._pad_id, dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, : lengths[row]] = torch.tensor(seq.prompt_ids)
        ids = ids.to(self._device)
        sizes = torch.tensor(lengths, device=self._device)
        positions = torch.arange(width, device=self._device).expand(k, width)
        causal = positions.unsqueeze(2) >= positions.unsqueeze(1)  # [k, query, key]
        valid = positions.unsqueeze(1) < sizes.view(k, 1, 1)
        mask = self._additive(causal & valid).unsqueeze(1)
        rows = slice(first_slot, first_slot + k)
        self._cache.target(rows, positions, width)
        last = sorted({n - 1 for n in lengths})
        result = self._model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=torch.tensor(last, device=self._device),
            **{self._cache_arg: self._cache},
        )
        pick = torch.tensor([last.index(n - 1) for n in lengths], device=self._device)
        logits = result.logits[torch.arange(k, device=self._device), pick]
        self._lengths[rows] = sizes
        for offset, n in enumerate(lengths):
            self._host_len[first_slot + offset] = n
        tokens = sample(
            logits,
            temperature=self._temperature[rows],
            top_p=self._top_p[rows],
            seeds=self._seeds[rows],
            steps=self._lengths[rows],
            use_top_p=any(s.request.top_p < 1 and not s.greedy for s in seqs),
            greedy_only=all(s.greedy for s in seqs),
        )
        self._next[rows] = tokens
        self._count(k, prefill=True)
        return tokens

    def _decode(self, n: int, seqs: list[GenSeq]) -> torch.Tensor:
        """One decode step for slots ``0..n-1``; their new tokens (on the device)."""
        assert self._cache is not None
        if self._cache.reserve(max(self._host_len[:n]) + 1):
            self._graphs.clear()
        # The sampling mode is known on the host from the requests: 0 greedy only, 1 sampled
        # without top-p, 2 with top-p somewhere (each mode is its own captured graph).
        mode = 0 if all(s.greedy for s in seqs) else 2 if any(s.request.top_p < 1 and not s.greedy for s in seqs) else 1
        tokens = None
        if self._use_graphs:
            tokens = self._replay(n, mode)
        if tokens is None:
            tokens = self._decode_step(n, max(self._host_len[:n]) + 1, mode)
        self._lengths[:n] += 1
        for slot in range(n):
            self._host_len[slot] += 1
        self._next[:n] = tokens
        self._count(n, prefill=False)
        return tokens

    def _decode_step(self, rows: int, view: int, mode: int) -> torch.Tensor:
        """The decode step as a fixed sequence of tensor operations on persistent buffers
        (what a CUDA graph captures): no host values but ``rows``, ``view`` and the mode."""
        assert self._cache is not None
        lengths = self._lengths[:rows]
        write = lengths.unsqueeze(1)
        keys = torch.arange(view, device=self._device)
        mask = self._additive(keys.unsqueeze(0) <= write).view(rows, 1, 1, view)
        self._cache.target(slice(0, rows), write, view)
        result = self._model(
            input_ids=self._next[:rows].unsqueeze(1),
            attention_mask=mask,
            position_ids=write,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_arg: self._cache},
        )
        return sample(
            result.logits[:, -1],
            temperature=self._temperature[:rows],
            top_p=self._top_p[:rows],
            seeds=self._seeds[:rows],
            steps=lengths + 1,
            use_top_p=mode == 2,
            greedy_only=mode == 0,
        )

    def _additive(self, allowed: torch.Tensor) -> torch.Tensor:
        """A boolean attention pattern as the additive float mask every attention kernel takes."""
        assert self._dtype is not None
        zero = torch.zeros((), dtype=self._dtype, device=self._device)
        return torch.where(allowed, zero, torch.finfo(self._dtype).min)

    # ---------------------------------------------------------------- CUDA graphs

    def _capture_all(self) -> None:
        """Capture the decode step for every key of :func:`graph_plan` (at load); on any
        failure the runner decodes eagerly from then on."""
        started = time.perf_counter()
        with torch.inference_mode():
            for key in graph_plan(self._max_batch):
                if not self._try_capture(key):
                    return
        log.info(
            "cuda graphs captured",
            extra={"model": self.name, "graphs": len(self._graphs), "seconds": round(time.perf_counter() - started, 1)},
        )

    def _try_capture(self, key: tuple[int, int]) -> bool:
        try:
            self._graphs[key] = self._capture(*key)
        except Exception:
            log.warning("CUDA graph capture failed for model %s; decoding eagerly", self.name, exc_info=True)
            self._use_graphs = False
            self._graphs.clear()
            return False
        return True

    def _replay(self, n: int, mode: int) -> torch.Tensor | None:
        """Replay the captured decode step for ``n`` rows; None when graphs are off here.
        A key missing from the load-time capture (none should be) is captured now."""
        key = (batch_bucket(n, self._max_batch), mode)
        if key not in self._graphs and not self._try_capture(key):
            return None
        captured = self._graphs[key]
        captured.graph.replay()
        return captured.tokens[:n]

    def _capture(self, rows: int, mode: int) -> _Graph:
        assert self._cache is not None
        view = self._cache.capacity
        current = torch.cuda.current_stream(self._device)
        side = torch.cuda.Stream(self._device)  # type: ignore[no-untyped-call]
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up runs outside the graph (they write only where the step will)
                self._decode_step(rows, view, mode)
        current.wait_stream(side)
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool, **CAPTURE_OPTIONS):
            tokens = self._decode_step(rows, view, mode)
        return _Graph(graph, tokens)

    # ---------------------------------------------------------------- slots

    def _release(self, seq: GenSeq) -> None:
        """Free ``seq``'s slot: the last occupied slot moves into it, so the running
        sequences stay in slots ``0..n-1`` (one row copied, not the batch)."""
        slot = seq.slot
        if slot < 0 or self._cache is None or self._slots[slot] is not seq:
            return
        seq.slot = -1
        last = max(i for i, s in enumerate(self._slots) if s is not None)
        if slot != last:
            moved = self._slots[last]
            assert moved is not None
            self._cache.move(last, slot, self._host_len[last])
            for tensor in (self._next, self._lengths, self._temperature, self._top_p, self._seeds):
                tensor[slot] = tensor[last]
            self._host_len[slot] = self._host_len[last]
            self._slots[slot] = moved
            moved.slot = slot
        self._slots[last] = None
        self._host_len[last] = 0
        self._lengths[last] = 0
        self._next[last] = 0

    def _reset(self) -> None:
        for seq in self._slots:
            if seq is not None:
                seq.slot = -1
        self._slots = [None] * len(self._slots)
        self._host_len = [0] * len(self._host_len)
        if self._cache is not None:
            self._lengths.zero_()
            self._next.zero_()


def _check_architecture(name: str, config: Any) -> None:
    """Refuse models whose attention is not plain full attention over a key/value cache."""
    layer_types = getattr(config, "layer_types", None) or []
    sliding = getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
    if sliding or any(t != "full_attention" for t in layer_types):
        raise NotSupportedYet(f"model {name!r} uses a cache layout the batched runner does not support")
