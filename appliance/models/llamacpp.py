"""The CPU chat engine: a GGUF model run by llama.cpp (``llama-cpp-python``), batched.

Where torch pays Python and dispatch overhead for every layer of every step, llama.cpp runs
a whole quantized forward pass in C: on the 2-core development box it decodes SmolLM2 about
ten times faster than the torch runner. This runner keeps llama.cpp's speed and adds what a
single ``Llama`` object lacks, concurrency: every running request is one *sequence* in one
llama.cpp context (its own id, its own KV cache stream), and each worker step puts the next
token of every running sequence, plus the prompts of requests that just arrived, into one
``llama_decode`` call. That is continuous batching with llama.cpp's own batch API, not a
lock around a single stream: N streams cost about one forward pass per token, and a request
joins between two steps.

Each sequence has a cache stream of its own (``kv_unified`` off) rather than cells in one
cache shared by all: llama.cpp sums attention over cache cells in cell order, so in a shared
cache a sequence's numbers depended on where other requests' cells had been (a running
greedy answer could change when others joined and left). In its own stream a sequence's
cell i holds its position i, whoever else runs.

Everything around the engine (queue, deadlines, cancellation, stop strings, streaming,
the observer seam) is :class:`~appliance.models.generation.StepBatchedChatRunner`, shared
with the torch runner, so policy, privacy, audit and pseudonym restoration see the same
runner interface.

The prompt is rendered with the chat template stored in the GGUF file (Jinja, sandboxed,
as transformers renders it), tokenized by llama.cpp with special tokens parsed, and the
answer is decoded token piece by token piece through an incremental UTF-8 decoder.
Sampling runs in llama.cpp (greedy, or temperature, top-p and a seeded draw per sequence).

``llama-cpp-python`` compiles llama.cpp at install time, so it is the optional extra
``.[llamacpp]``; ``scripts/_setup.sh`` builds it once (with AMX off: the AMX kernels of
recent llama.cpp builds crash on multi-token batches) and caches the wheel. Without it,
GGUF models are served by the torch runner after conversion.
"""

from __future__ import annotations

import codecs
import ctypes
import importlib.util
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError, InvalidInput, Overloaded
from appliance.models.base import InputObserver
from appliance.models.generation import Detokenizer, GenSeq, StepBatchedChatRunner

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 4096
"""Most tokens one sequence may hold unless the model option ``max_context`` says otherwise
(never more than the model was trained on)."""
MIN_SHARED_PREFIX = 8
"""Prompt tokens two requests must share before the second copies the first's cache cells."""
BATCH_TOKENS = 2048
"""Most tokens one ``llama_decode`` call takes; longer prompts are prefilled in pieces."""

_LEVELS = {3: logging.WARNING, 4: logging.ERROR}
"""ggml log levels worth passing on (1 debug and 2 info are every tensor and buffer at load)."""
_init_lock = threading.Lock()
_initialized = False
_log_callback: Any = None


def available() -> bool:
    """Whether the ``llamacpp`` extra is installed (without importing it)."""
    return importlib.util.find_spec("llama_cpp") is not None


def _backend() -> Any:
    """The ``llama_cpp`` module, initialized once per process, its log routed to ours."""
    global _initialized, _log_callback
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError(
            "the llama.cpp engine needs the optional extra: pip install -e '.[llamacpp]' (scripts/_setup.sh builds it)"
        ) from None
    with _init_lock:
        if not _initialized:

            @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
            def route(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
                if level in _LEVELS and b"n_ctx_seq" not in text:  # expected: a stream is one request's context
                    log.log(_LEVELS[level], "llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

            _log_callback = route  # ctypes keeps only a raw pointer: the callback must stay alive
            llama_cpp.llama_log_set(route, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _initialized = True
    return llama_cpp


WEIGHT_TYPES = {"q8_0": 7, "f16": 1}
"""GGUF file types the engine can re-encode weights to (llama.cpp's ``LLAMA_FTYPE_MOSTLY_*``)."""


def requantize(source: Path, target: Path, weights: str) -> None:
    """Write ``source``'s model to ``target`` with its weights re-encoded as ``weights``.

    llama.cpp's kernels differ a lot by weight type: for Q4_1 (the shipped SmolLM2) a batch
    of 8 tokens cost about 4.8 single-token steps on this CPU, for Q8_0 about the same ratio
    but every step a quarter faster, and Q8_0 holds each Q4_1 value almost exactly (256
    levels per block against 16). F16 holds them exactly, at twice Q8_0's bytes per step."""
    ll = _backend()
    params = ll.llama_model_quantize_default_params()
    params.ftype = WEIGHT_TYPES[weights]
    params.allow_requantize = True
    params.nthread = len(os.sched_getaffinity(0))
    status = ll.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise ConfigError(f"llama.cpp could not re-encode {source.name} as {weights} ({status})")


def system_info() -> str:
    """llama.cpp's build features (``AVX512 = 1 | AMX_INT8 = 0 | ...``), for checks and logs."""
    return str(_backend().llama_print_system_info().decode())


class _PieceDetokenizer:
    """Token pieces are bytes; an incremental UTF-8 decoder holds back split characters."""

    def __init__(self, runner: LlamaCppChatRunner) -> None:
        self._runner = runner
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return str(self._utf8.decode(self._runner.piece(token)))

    def flush(self) -> str:
        return str(self._utf8.decode(b"", final=True))


class LlamaCppChatRunner(StepBatchedChatRunner):
    """Serves one GGUF chat model with llama.cpp on the CPU. ``threads`` None: half the cores.

    Half, as for torch: the request path (HTTP, PII detection, audit) needs the other half,
    and llama.cpp's threads wait for each other at every operation, so one that loses its
    core to the request path stalls the others (on 2 busy cores, two threads took up to 20x
    longer per step than one)."""

    def __init__(
        self,
        name: str,
        gguf: Path,
        *,
        threads: int | None = None,
        max_batch: int = 8,
        max_queue: int = 64,
        request_timeout_s: float = 120.0,
        default_max_tokens: int = 512,
        observer: InputObserver | None = None,
        max_context: int | None = None,
    ) -> None:
        super().__init__(
            name,
            max_batch=max_batch,
            max_queue=max_queue,
            request_timeout_s=request_timeout_s,
            default_max_tokens=default_max_tokens,
            observer=observer,
        )
        self._gguf = gguf
        self._threads = threads or max(1, len(os.sched_getaffinity(0)) // 2)
        self._max_context = max_context
        self._ll: Any = None
        self._model: Any = None
        self._ctx: Any = None
        self._vocab: Any = None
        self._memory: Any = None
        self._batch: Any = None
        self._template_source = ""
        self._specials: dict[str, str] = {}
        self._samplers: dict[int, Any] = {}
        self._free_slots: list[int] = []
        self._pieces: dict[int, bytes] = {}
        self._prefix: list[int] = []
        self._prefix_seq = max_batch
        self._stats_shared_tokens = 0

    @property
    def threads(self) -> int:
        return self._threads

    # ---------------------------------------------------------------- loading

    def _load(self) -> None:
        ll = _backend()
        self._ll = ll
        if not self._gguf.is_file():
            raise ConfigError(f"GGUF file {self._gguf} is missing")
        params = ll.llama_model_default_params()
        params.n_gpu_layers = 0
        model = ll.llama_model_load_from_file(str(self._gguf).encode(), params)
        if not model:
            raise InvalidInput(f"model {self.name!r}: {self._gguf.name} could not be loaded as a GGUF model")
        self._model = model
        template = ll.llama_model_chat_template(model, None)
        if not template:
            raise InvalidInput(f"model {self.name!r} has no chat template; it cannot serve chat")
        self._template_source = template.decode("utf-8")
        self._vocab = ll.llama_model_get_vocab(model)
        trained = int(ll.llama_model_n_ctx_train(model)) or DEFAULT_CONTEXT
        self._context = min(trained, self._max_context or DEFAULT_CONTEXT)
        context = ll.llama_context_default_params()
        # One stream of a full context per sequence, plus one for the shared prompt prefix.
        context.n_ctx = self._context * (self._max_batch + 1)
        context.n_batch = BATCH_TOKENS
        context.n_ubatch = min(512, BATCH_TOKENS)
        context.n_seq_max = self._max_batch + 1  # the last id holds the shared prefix
        context.n_threads = self._threads
        context.n_threads_batch = self._threads
        # A cache stream per sequence: its numbers cannot depend on other requests' cells.
        context.kv_unified = False
        context.no_perf = True
        ctx = ll.llama_init_from_model(model, context)
        if not ctx:
            raise ConfigError(f"model {self.name!r}: llama.cpp could not create a context of {context.n_ctx} tokens")
        self._ctx = ctx
        self._memory = ll.llama_get_memory(ctx)
        self._batch = ll.llama_batch_init(BATCH_TOKENS, 0, 1)
        self._free_slots = list(range(self._max_batch))
        self._specials = {
            "bos_token": self.piece(ll.llama_vocab_bos(self._vocab), special=True).decode("utf-8", "replace"),
            "eos_token": self.piece(ll.llama_vocab_eos(self._vocab), special=True).decode("utf-8", "replace"),
        }
        self._jinja = _compile_template(self._template_source)
        # One tiny pass, so the first request does not pay for llama.cpp's lazy set-up.
        self._decode([(self._specials_token(), 0, 0, True)])
        ll.llama_memory_clear(self._memory, True)
        log.info(
            "chat model loaded",
            extra={
                "model": self.name,
                "engine": "llama.cpp",
                "threads": self._threads,
                "max_batch": self._max_batch,
                "context": self._context,
            },
        )

    def _specials_token(self) -> int:
        bos = int(self._ll.llama_vocab_bos(self._vocab))
        return bos if bos >= 0 else 0

    def close(self) -> None:
        """Stop the worker, then free llama.cpp's context and model. Idempotent."""
        super().close()
        if self._thread is not None and self._thread.is_alive():
            return  # a step is still running: leave the memory to the process
        ll, self._ll = self._ll, None
        if ll is None:
            return
        for sampler in self._samplers.values():
            ll.llama_sampler_free(sampler)
        self._samplers.clear()
        if self._batch is not None:
            ll.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            ll.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            ll.llama_model_free(self._model)
            self._model = None

    # ---------------------------------------------------------------- text

    def _template(self, messages: list[dict[str, str]]) -> str:
        return str(self._jinja.render(messages=messages, add_generation_prompt=True, **self._specials))

    def _encode(self, prompt: str) -> list[int]:
        if self._ll is None:  # closed while this call was on its way in
            raise Overloaded("model is shutting down", status=503)
        data = prompt.encode("utf-8")
        size = len(data) + 16
        tokens = (self._ll.llama_token * size)()
        n = self._ll.llama_tokenize(self._vocab, data, len(data), tokens, size, False, True)
        if n < 0:  # more tokens than bytes cannot happen, but llama.cpp reports it this way
            raise InvalidInput("the prompt could not be tokenized")
        return list(tokens[:n])

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes of one token (control tokens render empty unless ``special``)."""
        if not special:
            cached = self._pieces.get(token)
            if cached is not None:
                return cached
        buffer = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self._vocab, token, buffer, 64, 0, special)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self._vocab, token, buffer, -n, 0, special)
        data = bytes(buffer.raw[:n])
        if not special:
            self._pieces[token] = data
        return data

    def _detokenizer(self) -> Detokenizer:
        return _PieceDetokenizer(self)

    def _is_end(self, token: int) -> bool:
        return bool(self._ll.llama_vocab_is_eog(self._vocab, token))

    # ---------------------------------------------------------------- the engine

    def _forward(self, running: list[GenSeq], joining: list[GenSeq]) -> list[int]:
        # (sequence id, position, token, owner if its logits are wanted), in sequence id order:
        # with a cache stream per sequence, llama.cpp splits a batch into micro-batches of
        # consecutive sequence ids (each a forward pass of its own), so newcomers take the
        # lowest free slot and the ids go in order.
        entries: list[tuple[int, int, int, GenSeq | None]] = []
        for seq in running:
            position = len(seq.prompt_ids) + len(seq.out_ids) - 1
            entries.append((seq.slot, position, seq.out_ids[-1], seq))
        for seq in joining:
            self._assign(seq)
            shared = self._share_prefix(seq)
            last = len(seq.prompt_ids) - 1
            for position in range(shared, len(seq.prompt_ids)):
                entries.append((seq.slot, position, seq.prompt_ids[position], seq if position == last else None))
        gaps = self._gaps({entry[0] for entry in entries})
        entries.extend((slot, 0, self._specials_token(), None) for slot in gaps)
        entries.sort(key=lambda entry: (entry[0], entry[1]))
        items = [(token, position, slot, owner is not None) for slot, position, token, owner in entries]
        owners = [owner for _, _, _, owner in entries]
        drawn: dict[int, int] = {}
        passes = 0
        for start in range(0, len(items), BATCH_TOKENS):
            chunk = items[start : start + BATCH_TOKENS]
            self._decode(chunk)
            passes += 1
            for index, owner in enumerate(owners[start : start + BATCH_TOKENS]):
                if owner is not None:
                    drawn[owner.slot] = int(self._ll.llama_sampler_sample(self._samplers[owner.slot], self._ctx, index))
        for slot in gaps:
            self._ll.llama_memory_seq_rm(self._memory, slot, -1, -1)
        if joining and not self._prefix:
            self._keep_prefix(joining[0])
        # A pass that carries running sequences counts as a decode step of the whole batch
        # (newcomers' prompts ride along); one with newcomers only as a prefill.
        self._count(len(running) + len(joining), prefill=not running, passes=passes)
        return [drawn[seq.slot] for seq in running + joining]

    @staticmethod
    def _gaps(busy: set[int]) -> list[int]:
        """Free slots between busy ones, each given a throwaway token for the step.

        A finished request in the middle would split the next steps in two micro-batches,
        and each costs about a whole pass (6 sequences around two free slots: 98 ms a step
        against 55 ms in one micro-batch). A throwaway token costs one row of the pass and
        lands in a free stream, emptied right after, so nothing that runs sees it."""
        return [slot for slot in range(min(busy, default=0), max(busy, default=0)) if slot not in busy]

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of (token, position, sequence id, wants logits) items."""
        batch = self._batch
        for i, (token, position, seq_id, logits) in enumerate(items):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = logits
        batch.n_tokens = len(items)
        status = self._ll.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    def _share_prefix(self, seq: GenSeq) -> int:
        """Give ``seq`` the cached prompt prefix it starts with (cells copied into its
        stream); how many of its prompt tokens need no prefill.

        Chat prompts start alike (the template's system turn): the cache keeps the common
        start of recent prompts under its own sequence id, narrowed to what the next prompt
        shares, or replaced when a prompt shares too little. At least the last prompt token
        is always computed, for its logits.

        llama.cpp copies between streams only whole (``p0``, ``p1`` = -1; a range aborts the
        process), at the next ``llama_decode``: a memory copy of the prefix stream, about a
        tenth of what computing SmolLM2's system turn costs. The copy is then cut to the
        shared length, so the cells keep index = position and the stream's next free cell is
        the next position, as in a stream filled from empty."""
        prompt = seq.prompt_ids
        common = 0
        limit = min(len(self._prefix), len(prompt) - 1)
        while common < limit and self._prefix[common] == prompt[common]:
            common += 1
        if common < MIN_SHARED_PREFIX:
            if self._prefix:
                self._ll.llama_memory_seq_rm(self._memory, self._prefix_seq, -1, -1)
                self._prefix = []
            return 0
        if common < len(self._prefix):
            self._ll.llama_memory_seq_rm(self._memory, self._prefix_seq, common, -1)
            self._prefix = self._prefix[:common]
        self._ll.llama_memory_seq_cp(self._memory, self._prefix_seq, seq.slot, -1, -1)
        self._ll.llama_memory_seq_rm(self._memory, seq.slot, common, -1)
        with self._cond:
            self._stats_shared_tokens += common
        return common

    def _keep_prefix(self, seq: GenSeq) -> None:
        """Remember ``seq``'s prompt (all but its last token) as the shared prefix."""
        keep = len(seq.prompt_ids) - 1
        if keep >= MIN_SHARED_PREFIX:
            self._ll.llama_memory_seq_cp(self._memory, seq.slot, self._prefix_seq, -1, -1)  # whole: see _share_prefix
            self._ll.llama_memory_seq_rm(self._memory, self._prefix_seq, keep, -1)
            self._prefix = list(seq.prompt_ids[:keep])

    @property
    def shared_prefix_tokens(self) -> int:
        """Prompt tokens taken from the shared prefix instead of computed, since load."""
        with self._cond:
            return self._stats_shared_tokens

    def _assign(self, seq: GenSeq) -> None:
        ll = self._ll
        seq.slot = min(self._free_slots)  # the lowest: running ids stay consecutive (see _forward)
        self._free_slots.remove(seq.slot)
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        request = seq.request
        if seq.greedy:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        else:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(request.temperature))
            if request.top_p < 1:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(request.top_p, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seq.seed & 0xFFFFFFFF))
        self._samplers[seq.slot] = chain

    def _release(self, seq: GenSeq) -> None:
        slot, seq.slot = seq.slot, -1
        if slot < 0 or self._ll is None:
            return
        self._ll.llama_memory_seq_rm(self._memory, slot, -1, -1)
        sampler = self._samplers.pop(slot, None)
        if sampler is not None:
            self._ll.llama_sampler_free(sampler)
        self._free_slots.append(slot)

    def _reset(self) -> None:
        if self._ll is None:
            return
        self._ll.llama_memory_clear(self._memory, True)
        self._prefix = []
        for sampler in self._samplers.values():
            self._ll.llama_sampler_free(sampler)
        self._samplers.clear()
        self._free_slots = list(range(self._max_batch))


def _compile_template(source: str) -> Any:
    """A chat template compiled the way transformers compiles it (sandboxed Jinja)."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise InvalidInput(f"the chat template refused the messages: {message}")

    def strftime_now(fmt: str) -> str:
        return datetime.now(UTC).strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateError as exc:
        raise InvalidInput(f"the model's chat template does not compile: {exc}") from None
