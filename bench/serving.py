"""Serving benchmark: the appliance over real HTTP against the raw models, in one run.

    .venv/bin/python -m bench.serving            # about 2-3 minutes on 2 cores
    .venv/bin/python -m bench.serving --quick    # about 1.5 minutes, noisier
    .venv/bin/python -m bench.serving --json     # the same figures as JSON

On a host where torch sees CUDA it runs the GPU comparison of :mod:`bench.serving_gpu`
instead (random-init weights, configs from ``--gpu-assets``).

What one run measures, each against a baseline measured in the same run:

- embeddings: requests/s of 32 concurrent clients sending one short text each, through
  HTTP (auth + policy + privacy + model + audit) vs the in-process batched runner (the
  target is >= 90 %) and vs sentence-transformers ``encode`` in batches of 32; the same
  load once more from a second tenant whose policy detects pattern types only (no NER),
  which shows what the NER model costs in that ratio;
- chat: aggregate completion tokens/s through HTTP (streamed, SSE) at 1 and at 8
  concurrent streams vs raw transformers ``generate()`` on one stream (the target is >= 3x
  at 8 streams), and the in-process step-batched runner at the same concurrency;
- p50/p99 latency of each;
- the appliance's own overhead per request: the same small call timed sequentially through
  HTTP and against the in-process runner; the difference is HTTP + auth + policy +
  privacy + audit. ``/healthz`` (no auth) and ``/v1/models`` (auth + policy, no model)
  split it further.

The appliance is a real ``appliance serve`` subprocess on 127.0.0.1 (``init`` with a bench
tenant whose policy lifts the per-minute rate limit, so the limiter does not cap the
load). The load generators run on asyncio in this process, so on a small box client and
server share the cores, as they would with a co-located app. For embeddings the client is
a minimal HTTP/1.1 keep-alive client on asyncio streams (one connection per simulated
client; see ``_KeepAlive``), not httpx: httpx spent about 3.5 ms of CPU per request here,
a large share of the 2 cores the server needs, while the in-process baseline's "client" is
a function call. Its CPU per request is printed (``client_cpu_ms_per_request``) with the
server's (``server_cpu_ms_per_request``, all threads, from /proc) and the server's mean
batch sizes (``mean_privacy_batch``, ``mean_audit_batch``, from /metrics); the runner row
prints the CPU per request of the in-process baseline, client included. CPU per request
stays meaningful on a busy machine, where requests/s do not.
Chat and the sequential overhead calls still use httpx. The first run converts SmolLM2
into ``.bench-data/models`` (about 25 s); later runs reuse it. Nothing leaves loopback;
every phase is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx
import torch

from appliance.models import llamacpp
from appliance.models.base import ChatMessage, ChatRequest
from appliance.models.chat import LocalChatRunner
from appliance.models.embeddings import LocalEmbeddingRunner
from appliance.models.generation import StepBatchedChatRunner
from appliance.models.llamacpp import LlamaCppChatRunner
from appliance.models.manager import configure_torch_threads
from appliance.models.store import PACKAGE_SCHEME, SMOLLM2_PACKAGE, ModelStore, minilm_directory
from bench.live import CLI, appliance_env, free_port, run_cli, wait_until_ready

DEFAULT_STORE = Path(".bench-data/models")
CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"
SENTENCES = [
    f"Sentence {i}: the quarterly report for region {i % 7} shows {i * 3} new customers and steady growth."
    for i in range(512)
]
PROMPTS = [
    "Write a long story about a lighthouse keeper.",
    "Explain how rain forms, in detail.",
    "Describe a busy market in the morning.",
    "Write a long letter to a friend about a trip to the mountains.",
    "Tell me about the history of bread.",
    "Describe how a train works, step by step.",
    "Write a story about a cat who learns to fly.",
    "Explain why the sky is blue, at length.",
]
STEP_GROUP = 32
"""Requests per batch in the batched step timings (as many as the HTTP phase's clients)."""
OVERHEAD_TEXT = "The quarterly report shows steady growth in every region."
"""The small call timed for the per-request overhead (no personal data in it)."""


@dataclass
class Throughput:
    name: str
    units: str
    per_second: float
    seconds: float
    count: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _latency(name: str, latencies: list[float], **extra: Any) -> Throughput:
    """A sequential-latency row: ``per_second`` is calls/s of one client."""
    total = sum(latencies)
    return Throughput(
        name,
        "calls/s",
        len(latencies) / total,
        total,
        len(latencies),
        _percentile(latencies, 0.5) * 1000,
        _percentile(latencies, 0.99) * 1000,
        dict(extra),
    )


# ---------------------------------------------------------------- embeddings, in process


def raw_embeddings(model_dir: Path, batch: int = 32, seconds: float = 6.0) -> Throughput:
    """sentence-transformers ``encode`` in one thread: the best the model can do."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    model.encode(SENTENCES[:batch], batch_size=batch)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = SENTENCES[done % len(SENTENCES) :][:batch] or SENTENCES[:batch]
        model.encode(chunk, batch_size=batch)
        done += len(chunk)
    elapsed = time.perf_counter() - started
    return Throughput(f"raw encode, batch {batch}", "sentences/s", done / elapsed, elapsed, done)


async def _embed_clients(runner: LocalEmbeddingRunner, clients: int, seconds: float) -> tuple[list[float], float]:
    latencies: list[float] = []
    started = time.perf_counter()
    stop_at = started + seconds

    async def client(i: int) -> None:
        n = i
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await runner.embed([SENTENCES[n % len(SENTENCES)]])
            latencies.append(time.perf_counter() - t0)
            n += clients

    await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies, time.perf_counter() - started


def batched_embeddings(runner: LocalEmbeddingRunner, clients: int = 32, seconds: float = 6.0) -> Throughput:
    """``clients`` concurrent one-sentence requests through the dynamic batcher."""
    before = runner.stats
    cpu_started = time.process_time()
    latencies, elapsed = asyncio.run(_embed_clients(runner, clients, seconds))
    cpu = time.process_time() - cpu_started
    after = runner.stats
    passes = after.forward_passes - before.forward_passes
    return Throughput(
        f"runner, {clients} concurrent 1-text requests",
        "requests/s",
        len(latencies) / elapsed,
        elapsed,
        len(latencies),
        _percentile(latencies, 0.5) * 1000,
        _percentile(latencies, 0.99) * 1000,
        {
            "mean_batch": round(len(latencies) / max(passes, 1), 1),
            "cpu_ms_per_request": round(cpu * 1000 / max(len(latencies), 1), 2),
        },
    )


def sequential_runner_embed(runner: LocalEmbeddingRunner, calls: int) -> list[float]:
    async def go() -> list[float]:
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await runner.embed([OVERHEAD_TEXT])
            out.append(time.perf_counter() - t0)
        return out

    return asyncio.run(go())


# ---------------------------------------------------------------- chat, in process


def raw_generate(model_dir: Path, tokens: int = 48, repeats: int = 2) -> Throughput:
    """transformers ``generate()``, one stream, greedy, fixed length: the single-stream baseline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    messages = [{"role": "user", "content": PROMPTS[0]}]
    inputs: Any = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    runs: list[float] = []
    by_threads: dict[str, float] = {}
    cores = torch.get_num_threads()
    # One thread and every core: on a machine other work shares, torch's threads wait for
    # each other and one thread can be much faster; the faster is the (strictest) baseline.
    try:
        for threads in sorted({1, cores}):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                model.generate(**inputs, max_new_tokens=4, do_sample=False)
                for _ in range(repeats):
                    started = time.perf_counter()
                    model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
                    runs.append(time.perf_counter() - started)
            by_threads[f"tokens_per_s_{threads}_threads"] = round(tokens / min(runs[-repeats:]), 1)
    finally:
        torch.set_num_threads(cores)
    best = min(runs)  # the fastest run: the strictest baseline for the ratios below
    return Throughput(
        f"raw generate(), 1 stream, best of {len(runs)}",
        "tokens/s",
        tokens / best,
        best,
        tokens,
        _percentile(runs, 0.5) * 1000,
        max(runs) * 1000,
        by_threads,
    )


async def _chat_streams(
    runner: StepBatchedChatRunner, streams: int, tokens: int, rounds: int
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    total = 0

    async def one(i: int) -> None:
        nonlocal total
        request = ChatRequest([ChatMessage("user", PROMPTS[i % len(PROMPTS)])], temperature=0, max_tokens=tokens)
        started = time.perf_counter()
        result = await runner.complete(request)
        latencies.append(time.perf_counter() - started)
        total += result.usage.completion_tokens

    for r in range(rounds):
        await asyncio.gather(*(one(r * streams + i) for i in range(streams)))
    return total, latencies


def batched_chat(runner: StepBatchedChatRunner, streams: int, tokens: int = 48, rounds: int = 1) -> Throughput:
    """``streams`` concurrent greedy requests through the step-batched runner."""
    before = runner.stats
    started = time.perf_counter()
    total, latencies = asyncio.run(_chat_streams(runner, streams, tokens, rounds))
    elapsed = time.perf_counter() - started
    after = runner.stats
    return Throughput(
        f"runner, {streams} concurrent stream{'s' if streams > 1 else ''}",
        "tokens/s",
        total / elapsed,
        elapsed,
        total,
        _percentile(latencies, 0.5) * 1000,
        _percentile(latencies, 0.99) * 1000,
        {"forward_passes": after.forward_passes - before.forward_passes},
    )


class RawLlama:
    """llama-cpp-python's own ``Llama.generate`` on one stream, greedy: the single-stream
    baseline of the CPU engine, with ``threads`` for decoding and prefill alike.

    Used as a user would: consecutive calls on one ``Llama`` reuse the cache of the prompt
    start they share with the previous call (llama-cpp-python does that by itself), as the
    appliance's engine shares prompt prefixes."""

    def __init__(self, gguf: Path, threads: int) -> None:
        from llama_cpp import Llama

        self.threads = threads
        self.llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
        template = llamacpp._compile_template(str(self.llm.metadata["tokenizer.chat_template"]))
        self.prompts = [
            self.llm.tokenize(
                template.render(messages=[{"role": "user", "content": p}], add_generation_prompt=True).encode(),
                add_bos=False,
                special=True,
            )
            for p in PROMPTS
        ]
        self.once(self.prompts[1], 4)

    def once(self, ids: list[int], limit: int) -> tuple[int, float, float]:
        """(tokens, seconds to the first, seconds in all)."""
        started = time.perf_counter()
        first, n = 0.0, 0
        for token in self.llm.generate(ids, temp=0.0, top_k=1):
            if n == 0:
                first = time.perf_counter() - started
            n += 1
            if n >= limit or self.llm.token_eos() == token:
                break
        return n, first, time.perf_counter() - started

    def tokens_per_s(self, tokens: int) -> float:
        n, _, elapsed = self.once(self.prompts[0], tokens)
        return n / elapsed

    def first_tokens(self, calls: int, offset: int = 0) -> list[float]:
        """Seconds to the first token over the bench's prompts in turn (different user
        messages behind the same system turn), as the engine and HTTP rows measure it."""
        return [self.once(self.prompts[(offset + i) % len(self.prompts)], 1)[1] for i in range(calls)]


def _median(values: list[float]) -> float:
    return _percentile(values, 0.5)


def llamacpp_comparison(
    app: LiveAppliance, store: Path, gguf: Path, tokens: int, rounds: int, threads: int
) -> dict[str, Throughput]:
    """The CPU engine's acceptance figures, measured in interleaved rounds.

    Each round measures raw llama.cpp (one thread and every core), the engine in this
    process (the server's thread count) and the live appliance over HTTP, back to back, so
    every contender sees the same share of a machine that other work may be using; each
    figure is the median over the rounds. The raw baseline is the faster thread count."""
    raws = [RawLlama(gguf, t) for t in sorted({1, len(os.sched_getaffinity(0))})]
    # What the server runs: the shipped GGUF re-encoded as models.llamacpp_weights (default q8_0).
    served = ModelStore(store).gguf_as(gguf, "q8_0")
    same_weights = RawLlama(served, 1)
    engine = LlamaCppChatRunner(CHAT_MODEL, served, max_batch=8, max_queue=64, threads=threads or None)
    engine.warmup()
    samples: dict[str, list[float]] = {}

    def add(key: str, *values: float) -> None:
        samples.setdefault(key, []).extend(values)

    try:
        batched_chat(engine, 8, 4)  # warm
        for r in range(rounds):
            for raw in raws:
                add(f"raw_{raw.threads}", raw.tokens_per_s(tokens))
                add(f"raw_first_{raw.threads}", *raw.first_tokens(4, 4 * r))
            add("raw_q8", same_weights.tokens_per_s(tokens))
            add("raw_q8_first", *same_weights.first_tokens(4, 4 * r))
            add("engine_1", batched_chat(engine, 1, tokens).per_second)
            add("engine_8", batched_chat(engine, 8, tokens).per_second)
            add("engine_first", runner_first_token(engine, 4))
            add("http_1", http_chat(app, 1, tokens).per_second)
            add("http_8", http_chat(app, 8, tokens).per_second)
            add("http_first", http_first_token(app, 4))
    finally:
        engine.close()
    medians = {k: _median(v) for k, v in samples.items()}
    best = max(raws, key=lambda raw: medians[f"raw_{raw.threads}"])
    raw_first = min(medians[f"raw_first_{raw.threads}"] for raw in raws)
    per_threads = {f"tokens_per_s_{raw.threads}_threads": round(medians[f"raw_{raw.threads}"], 1) for raw in raws}
    per_threads.update(
        {f"first_token_ms_{raw.threads}_threads": round(medians[f"raw_first_{raw.threads}"] * 1000, 1) for raw in raws}
    )

    def row(name: str, key: str, streams: int, **extra: Any) -> Throughput:
        rate = medians[key]
        return Throughput(name, "tokens/s", rate, streams * tokens / rate, streams * tokens, None, None, dict(extra))

    raw_tps = medians[f"raw_{best.threads}"]
    out = {
        "llamacpp_raw": row(
            f"raw llama.cpp Llama.generate(), 1 stream, median of {rounds}",
            f"raw_{best.threads}",
            1,
            threads=best.threads,
            first_token_p50_ms=round(raw_first * 1000, 1),
            **per_threads,
        ),
        "llamacpp_raw_q8": row(
            f"raw llama.cpp on the engine's q8_0 re-encoding, 1 stream, median of {rounds}",
            "raw_q8",
            1,
            threads=1,
            first_token_p50_ms=round(medians["raw_q8_first"] * 1000, 1),
        ),
        "llamacpp_1": row(
            "llama.cpp engine in process, 1 stream",
            "engine_1",
            1,
            threads=engine.threads,
            first_token_p50_ms=round(medians["engine_first"] * 1000, 1),
        ),
        "llamacpp_8": row("llama.cpp engine in process, 8 concurrent streams", "engine_8", 8, threads=engine.threads),
        "chat_http_1": row(
            "HTTP, 1 stream (SSE)", "http_1", 1, first_text_seq_p50_ms=round(medians["http_first"] * 1000, 1)
        ),
        "chat_http_8": row("HTTP, 8 concurrent streams (SSE)", "http_8", 8),
    }
    for key in ("llamacpp_raw_q8", "llamacpp_1", "llamacpp_8", "chat_http_1", "chat_http_8"):
        out[key].extra["vs_raw_llamacpp"] = round(out[key].per_second / raw_tps, 2)
    return out


def runner_first_token(runner: StepBatchedChatRunner, calls: int = 8) -> float:
    """p50 seconds from a call to its first text, one stream at a time (in process), over
    the bench's prompts in turn."""

    async def go() -> list[float]:
        out = []
        for i in range(calls):
            request = ChatRequest([ChatMessage("user", PROMPTS[i % len(PROMPTS)])], temperature=0, max_tokens=4)
            started = time.perf_counter()
            stream = runner.stream(request)
            async for chunk in stream:
                if chunk.text:
                    out.append(time.perf_counter() - started)
                    break
            await stream.aclose()
        return out

    return _percentile(asyncio.run(go()), 0.5)


def sequential_runner_chat(runner: StepBatchedChatRunner, calls: int) -> list[float]:
    request = ChatRequest([ChatMessage("user", OVERHEAD_TEXT)], temperature=0, max_tokens=1)

    async def go() -> list[float]:
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await runner.complete(request)
            out.append(time.perf_counter() - t0)
        return out

    return asyncio.run(go())


# ---------------------------------------------------------------- the live appliance


@dataclass
class LiveAppliance:
    base_url: str
    app_key: str
    log: Path
    patterns_key: str
    pid: int
    """A second tenant's key: its policy detects pattern types only, so NER never runs."""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.app_key}"}

    def as_tenant(self, key: str) -> LiveAppliance:
        return dataclasses.replace(self, app_key=key)


BENCH_TENANT = "bench"
PATTERNS_TENANT = "bench-patterns"
PATTERN_TYPES = "[EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, US_SSN, IP_ADDRESS]"


def _bench_policy() -> str:
    """The shipped default policy with the per-minute limit lifted (the limiter would cap the load)."""
    text = (Path(__file__).resolve().parent.parent / "policies" / "default.yaml").read_text()
    if "requests_per_minute: 600" not in text:
        raise RuntimeError("policies/default.yaml changed; update bench.serving._bench_policy")
    return text.replace("requests_per_minute: 600", "requests_per_minute: 1000000")


def _patterns_policy() -> str:
    """:func:`_bench_policy` detecting only pattern types: what a policy without NER costs."""
    text = _bench_policy()
    if "\n  allow_list: []" not in text:
        raise RuntimeError("policies/default.yaml changed; update bench.serving._patterns_policy")
    ner_rules = ("    PERSON:", "    DATE_TIME:", "    LOCATION:")  # rules for undetected types are refused
    text = "\n".join(line for line in text.splitlines() if not line.startswith(ner_rules)) + "\n"
    return text.replace("\n  allow_list: []", f"\n  detect: {PATTERN_TYPES}\n  allow_list: []")


@contextmanager
def live_appliance(
    store: Path, start_timeout_s: float = 240.0, server_threads: int = 0, llamacpp_threads: int = 0
) -> Iterator[LiveAppliance]:
    """``appliance init`` + ``policy apply`` + ``appliance serve`` in a subprocess on loopback."""
    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env = appliance_env(
            tmp,
            store,
            APPLIANCE_MODELS__TORCH_THREADS=str(server_threads),
            APPLIANCE_MODELS__LLAMACPP_THREADS=str(llamacpp_threads),
        )
        (tmp / "policy.yaml").write_text(_bench_policy())
        (tmp / "patterns.yaml").write_text(_patterns_policy())
        cli = partial(run_cli, env, timeout_s=120)

        info = json.loads(cli("init", "--demo-tenant", BENCH_TENANT, "--json"))
        cli("policy", "apply", BENCH_TENANT, str(tmp / "policy.yaml"), "-m", "bench: no rate limit")
        cli("tenant", "create", PATTERNS_TENANT)
        cli("policy", "apply", PATTERNS_TENANT, str(tmp / "patterns.yaml"), "-m", "bench: pattern types only")
        patterns_key = json.loads(cli("apikey", "create", "--role", "app", "--tenant", PATTERNS_TENANT, "--json"))
        port = free_port()
        log = tmp / "server.log"
        with log.open("w") as fh:
            proc = subprocess.Popen(
                [*CLI, "serve", "--port", str(port)], env=env, stdout=fh, stderr=subprocess.STDOUT
            )  # with warm-up: the default models are loaded before the port opens
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(base, proc, log, start_timeout_s)
            yield LiveAppliance(base, info["demo"]["app_api_key"], log, patterns_key["api_key"], proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _client(app: LiveAppliance, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=app.base_url,
        headers=app.headers,
        timeout=120,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


class _KeepAlive:
    """The embeddings load generator: one HTTP/1.1 keep-alive connection on asyncio streams.

    httpx costs about 3.5 ms of CPU per request on this box, a third of what the server
    spends, and the load generator shares the server's 2 cores; a hand-written request and
    a Content-Length read cost a small fraction of that, so the figure measures the
    appliance rather than the client. It speaks exactly what the bench needs (POST, JSON,
    Content-Length responses) and checks the status line of every answer.
    """

    def __init__(self, app: LiveAppliance) -> None:
        url = httpx.URL(app.base_url)
        self._host, self._port = url.host, url.port or 80
        self._head = (
            f"Host: {self._host}:{self._port}\r\nAuthorization: Bearer {app.app_key}\r\n"
            "Content-Type: application/json\r\nAccept: application/json\r\n"
        ).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: dict[str, Any]) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        body = json.dumps(payload).encode()
        self._writer.write(
            b"POST " + path.encode() + b" HTTP/1.1\r\n" + self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        status_line = await self._reader.readline()
        status = int(status_line.split(b" ", 2)[1])
        length = None
        close = False
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length is None:
            raise RuntimeError(f"answer {status} without Content-Length")
        data = await self._reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._reader = self._writer = None


async def _http_embed(http: _KeepAlive, text: str) -> int:
    status, body = await http.post("/v1/embeddings", {"model": EMBED_MODEL, "input": text, "encoding_format": "base64"})
    if status == 200 and b'"embedding"' not in body:
        raise RuntimeError("an embeddings answer without an embedding")
    return status


def _batch_totals(app: LiveAppliance) -> dict[str, tuple[float, float]]:
    """(requests, passes) per batching stage so far, from the server's /metrics."""
    totals: dict[str, list[float]] = {}
    for line in httpx.get(f"{app.base_url}/metrics", timeout=10).text.splitlines():
        for suffix, slot in (("_sum{", 0), ("_count{", 1)):
            if line.startswith("appliance_batch_size" + suffix):
                stage = line.split('stage="', 1)[1].split('"', 1)[0]
                totals.setdefault(stage, [0.0, 0.0])[slot] = float(line.rsplit(" ", 1)[1])
    return {stage: (v[0], v[1]) for stage, v in totals.items()}


def http_embeddings(app: LiveAppliance, clients: int = 32, seconds: float = 6.0, label: str = "") -> Throughput:
    """``clients`` concurrent one-text requests through the whole appliance, each client on
    its own keep-alive connection (see :class:`_KeepAlive`)."""

    async def go() -> tuple[list[float], Counter[int], float, float]:
        latencies: list[float] = []
        refused: Counter[int] = Counter()
        conns = [_KeepAlive(app) for _ in range(clients)]
        try:
            # Open every connection and wake every worker thread first; not counted.
            await asyncio.gather(*(_http_embed(c, SENTENCES[i]) for i, c in enumerate(conns)))
            started = time.perf_counter()
            cpu_started = time.process_time()
            stop_at = started + seconds

            async def client(i: int) -> None:
                n = i
                while time.perf_counter() < stop_at:
                    t0 = time.perf_counter()
                    status = await _http_embed(conns[i], SENTENCES[n % len(SENTENCES)])
                    if status == 200:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        refused[status] += 1
                    n += clients

            await asyncio.gather(*(client(i) for i in range(clients)))
            return latencies, refused, time.perf_counter() - started, time.process_time() - cpu_started
        finally:
            for c in conns:
                await c.close()

    before = _batch_totals(app)
    server_cpu_started = _process_cpu_s(app.pid)
    latencies, refused, elapsed, client_cpu = asyncio.run(go())
    server_cpu = _process_cpu_s(app.pid) - server_cpu_started
    after = _batch_totals(app)
    extra: dict[str, Any] = {}
    for stage, (n, passes) in after.items():
        n0, passes0 = before.get(stage, (0.0, 0.0))
        extra[f"mean_{stage}_batch"] = round((n - n0) / max(passes - passes0, 1), 1)
    extra["server_cpu_ms_per_request"] = round(server_cpu * 1000 / max(len(latencies), 1), 2)
    extra["client_cpu_ms_per_request"] = round(client_cpu * 1000 / max(len(latencies), 1), 2)
    if refused:
        extra["non_200"] = dict(refused)
    return Throughput(
        f"HTTP, {clients} concurrent 1-text requests{label}",
        "requests/s",
        len(latencies) / elapsed,
        elapsed,
        len(latencies),
        _percentile(latencies, 0.5) * 1000,
        _percentile(latencies, 0.99) * 1000,
        extra,
    )


async def _http_chat_one(http: httpx.AsyncClient, prompt: str, tokens: int) -> tuple[int, float, float]:
    """One streamed completion: (completion tokens, seconds to the first text, seconds in all)."""
    body = {
        "model": CHAT_MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    first: float | None = None
    usage = 0
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            raise RuntimeError(f"chat answered {r.status_code}: {r.text[:300]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if first is None and any((c.get("delta") or {}).get("content") for c in event.get("choices") or []):
                first = time.perf_counter() - t0
            if event.get("usage"):
                usage = int(event["usage"]["completion_tokens"])
    total = time.perf_counter() - t0
    return usage, first if first is not None else total, total


def http_chat(app: LiveAppliance, streams: int, tokens: int = 48, rounds: int = 1) -> Throughput:
    """``streams`` concurrent streamed (SSE) greedy completions through the whole appliance."""

    async def go() -> tuple[int, list[float], list[float], float]:
        latencies: list[float] = []
        firsts: list[float] = []
        total = 0
        async with _client(app, streams) as http:
            await _http_chat_one(http, "Say hi.", 2)  # a warm connection; not counted
            started = time.perf_counter()
            for r in range(rounds):
                results = await asyncio.gather(
                    *(_http_chat_one(http, PROMPTS[(r * streams + i) % len(PROMPTS)], tokens) for i in range(streams))
                )
                for n, first, whole in results:
                    total += n
                    firsts.append(first)
                    latencies.append(whole)
            return total, latencies, firsts, time.perf_counter() - started

    total, latencies, firsts, elapsed = asyncio.run(go())
    return Throughput(
        f"HTTP, {streams} concurrent stream{'s' if streams > 1 else ''} (SSE)",
        "tokens/s",
        total / elapsed,
        elapsed,
        total,
        _percentile(latencies, 0.5) * 1000,
        _percentile(latencies, 0.99) * 1000,
        {"first_text_p50_ms": round(_percentile(firsts, 0.5) * 1000)},
    )


def http_first_token(app: LiveAppliance, calls: int = 8) -> float:
    """p50 seconds to the first streamed text through the whole appliance, one call at a
    time, over the bench's prompts in turn."""

    async def go() -> list[float]:
        async with _client(app, 1) as http:
            await _http_chat_one(http, "Say hi.", 2)  # a warm connection; not counted
            return [(await _http_chat_one(http, PROMPTS[i % len(PROMPTS)], 4))[1] for i in range(calls)]

    return _percentile(asyncio.run(go()), 0.5)


def http_sequential(app: LiveAppliance, calls: int) -> dict[str, list[float]]:
    """One client, one call at a time: /healthz, /v1/models, 1-text embeddings, 1-token chat."""

    async def go() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"healthz": [], "models": [], "embed": [], "chat": []}
        chat = {
            "model": CHAT_MODEL,
            "messages": [{"role": "user", "content": OVERHEAD_TEXT}],
            "temperature": 0,
            "max_tokens": 1,
        }
        embed = {"model": EMBED_MODEL, "input": OVERHEAD_TEXT, "encoding_format": "base64"}
        calls_by_name: dict[str, Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]] = {
            "healthz": lambda h: h.get("/healthz"),
            "models": lambda h: h.get("/v1/models"),
            "embed": lambda h: h.post("/v1/embeddings", json=embed),
            "chat": lambda h: h.post("/v1/chat/completions", json=chat),
        }
        async with _client(app, 1) as http:
            for name, call in calls_by_name.items():
                (await call(http)).raise_for_status()  # warm; not counted
                n = calls if name != "chat" else max(calls // 2, 5)
                for _ in range(n):
                    t0 = time.perf_counter()
                    r = await call(http)
                    out[name].append(time.perf_counter() - t0)
                    r.raise_for_status()
        return out

    return asyncio.run(go())


# ---------------------------------------------------------------- the pipeline's steps, in process


def pipeline_steps(store: Path, calls: int) -> dict[str, list[float]]:
    """Each step the appliance adds to a model call, timed alone (sequential, in this process).

    The same services the server builds, on a throwaway SQLite database: where the
    per-request overhead measured over HTTP goes.
    """
    import base64
    from datetime import timedelta

    from appliance.config import Settings
    from appliance.crypto.keyring import MasterKeyring, new_key
    from appliance.db import migrate
    from appliance.roles import Role
    from appliance.services.api_keys import ApiKeyService
    from appliance.services.audit import PreparedEntry
    from appliance.services.container import build_services
    from appliance.services.principal import Principal
    from appliance.services.privacy import AnonymizeCall

    with tempfile.TemporaryDirectory(prefix="appliance-bench-steps-") as tmp_name:
        tmp = Path(tmp_name)
        master = new_key()
        settings = Settings(
            data_dir=tmp,
            dev_mode=True,
            keys={"dev_master_key": base64.b64encode(master).decode()},
            models={"store_dir": store.resolve()},
        )
        services = build_services(settings, keyring=MasterKeyring(master))
        try:
            migrate.upgrade(services.engine)
            operator = Principal.local_operator()
            services.tenants.create(operator, BENCH_TENANT, "Bench")
            key = services.api_keys.create(operator, role=Role.APP, name="bench", tenant=BENCH_TENANT).api_key
            principal = services.api_keys.authenticate(key)
            tenant_id = principal.tenant_id or ""
            policy = services.policies.effective(tenant_id).policy
            ttl = timedelta(hours=policy.retention.vault_ttl_hours)
            services.privacy.warm_up()
            facts = {"entities": [], "inputs": 1, "prompt_tokens": 12}
            uncached = ApiKeyService(services.sessions, services.data_keys, services.audit, cache_ttl_s=0)
            group = [AnonymizeCall(tenant_id, [SENTENCES[i]], policy.pii, ttl=ttl) for i in range(STEP_GROUP)]

            def entry() -> PreparedEntry:
                return services.audit.prepare(
                    "embeddings", actor=principal, tenant_id=tenant_id, object=EMBED_MODEL, latency_ms=1.0, facts=facts
                )

            # name -> (one call, how many requests that call serves): figures are per request.
            steps: dict[str, tuple[Callable[[], object], int]] = {
                "auth: API key check, remembered": (lambda: services.api_keys.authenticate(key), 1),
                "auth: API key check, database (a miss)": (lambda: uncached.authenticate(key), 1),
                "policy + visible models, remembered": (lambda: services.inference.visible_models(principal), 1),
                "privacy: detect + anonymize 1 text alone": (
                    lambda: services.privacy.anonymize(tenant_id, [OVERHEAD_TEXT], policy.pii, ttl=ttl),
                    1,
                ),
                f"privacy: {STEP_GROUP} requests in one batch, per request": (
                    lambda: services.privacy.anonymize_many(group),
                    STEP_GROUP,
                ),
                "audit: append one entry alone": (lambda: services.audit.record_many([entry()]), 1),
                f"audit: {STEP_GROUP} entries in one commit, per entry": (
                    lambda: services.audit.record_many([entry() for _ in range(STEP_GROUP)]),
                    STEP_GROUP,
                ),
            }
            out: dict[str, list[float]] = {}
            for name, (step, per) in steps.items():
                step()  # warm; not counted
                out[name] = []
                for _ in range(max(calls // per, 5)):
                    t0 = time.perf_counter()
                    step()
                    out[name].append((time.perf_counter() - t0) / per)
            return out
        finally:
            services.close()


# ---------------------------------------------------------------- the run


def run(store: Path, quick: bool = False, server_threads: int = 0, llamacpp_threads: int = 0) -> dict[str, Throughput]:
    # The in-process baselines use every core (the fastest they can be, so the strictest
    # baselines); the server uses its own setting, models.torch_threads.
    threads = configure_torch_threads(len(os.sched_getaffinity(0)))
    seconds = 3.0 if quick else 6.0
    tokens = 24 if quick else 48
    rounds = 1 if quick else 2
    calls = 15 if quick else 40
    results: dict[str, Throughput] = {}
    from bench import serving_gpu

    serving_gpu.prepare_assets(DEFAULT_STORE.parent / "gpu")  # what a GPU host needs (5 MB, no weights)
    minilm = minilm_directory()
    smol = ModelStore(store).ensure_smollm2()  # converted once, before the server reads the same store

    with live_appliance(store, server_threads=server_threads, llamacpp_threads=llamacpp_threads) as app:
        # In-process baselines first, while the appliance sits idle.
        results["embed_raw"] = raw_embeddings(minilm, 32, seconds)
        embedder = LocalEmbeddingRunner(EMBED_MODEL, minilm, max_batch=64)
        embedder.warmup()
        try:
            results["embed_runner"] = batched_embeddings(embedder, 32, seconds)
            runner_embed_seq = sequential_runner_embed(embedder, calls)
        finally:
            embedder.close()

        cpu_engine = llamacpp.available()
        if cpu_engine:  # the engine the server runs the default chat model with on this host
            gguf = ModelStore(store).gguf_file(PACKAGE_SCHEME + SMOLLM2_PACKAGE)
            assert gguf is not None
            results.update(llamacpp_comparison(app, store, gguf, tokens, 2 if quick else 3, llamacpp_threads))
        results["generate_raw"] = raw_generate(smol, tokens)
        # The torch runner at the thread count a server gives it (models.torch_threads); the
        # raw generate() baseline above took the faster of one thread and every core.
        runner_threads = configure_torch_threads(server_threads or None)
        chat = LocalChatRunner(CHAT_MODEL, smol, max_batch=8, max_queue=64)
        chat.warmup()
        try:
            results["chat_1"] = batched_chat(chat, 1, tokens)
            results["chat_8"] = batched_chat(chat, 8, tokens, rounds=rounds)
            runner_chat_seq = sequential_runner_chat(chat, max(calls // 2, 5))
        finally:
            chat.close()
            configure_torch_threads(threads)
        for key in ("chat_1", "chat_8"):
            results[key].extra["torch_threads"] = runner_threads

        # The same work through the live appliance.
        results["embed_http"] = http_embeddings(app, 32, seconds)
        results["embed_http_patterns"] = http_embeddings(
            app.as_tenant(app.patterns_key), 32, seconds, ", no-NER policy"
        )
        if not cpu_engine:
            results["chat_http_1"] = http_chat(app, 1, tokens)
            results["chat_http_8"] = http_chat(app, 8, tokens, rounds=rounds)
            results["chat_http_1"].extra["first_text_seq_p50_ms"] = round(http_first_token(app) * 1000, 1)
        for key in ("chat_http_1", "chat_http_8"):
            results[key].extra["engine"] = "llama.cpp" if cpu_engine else "torch"
        seq = http_sequential(app, calls)

    steps = pipeline_steps(store, calls)

    raw_tps = results["generate_raw"].per_second
    for key in ("chat_1", "chat_8", "chat_http_1", "chat_http_8"):
        results[key].extra["vs_raw_generate"] = round(results[key].per_second / raw_tps, 2)
    results["embed_runner"].extra["vs_raw_encode"] = round(
        results["embed_runner"].per_second / results["embed_raw"].per_second, 2
    )
    for key in ("embed_http", "embed_http_patterns"):
        results[key].extra["vs_runner"] = round(results[key].per_second / results["embed_runner"].per_second, 2)
        results[key].extra["vs_raw_encode"] = round(results[key].per_second / results["embed_raw"].per_second, 2)
    results["embed_raw"].extra["torch_threads"] = threads

    p50 = {name: _percentile(values, 0.5) * 1000 for name, values in seq.items()}
    runner_embed_p50 = _percentile(runner_embed_seq, 0.5) * 1000
    runner_chat_p50 = _percentile(runner_chat_seq, 0.5) * 1000
    results["seq_healthz"] = _latency("HTTP /healthz (no auth, no model)", seq["healthz"])
    results["seq_models"] = _latency("HTTP /v1/models (auth + policy)", seq["models"])
    results["seq_embed_runner"] = _latency("runner, 1 text, sequential", runner_embed_seq)
    results["seq_embed_http"] = _latency(
        "HTTP embeddings, 1 text, sequential",
        seq["embed"],
        overhead_ms=round(p50["embed"] - runner_embed_p50, 1),
    )
    results["seq_chat_runner"] = _latency("runner chat, max_tokens=1, sequential", runner_chat_seq)
    results["seq_chat_http"] = _latency(
        "HTTP chat, max_tokens=1, sequential",
        seq["chat"],
        overhead_ms=round(p50["chat"] - runner_chat_p50, 1),
    )
    for i, (name, values) in enumerate(steps.items()):
        results[f"step_{i}"] = _latency(name, values)
    return results


SECTIONS = (
    ("Embeddings (all-minilm-l6-v2)", ("embed_raw", "embed_runner", "embed_http", "embed_http_patterns")),
    (
        "Chat (smollm2-135m-instruct): llama.cpp engine (the server's on this CPU when the extra is installed)",
        ("llamacpp_raw", "llamacpp_raw_q8", "llamacpp_1", "llamacpp_8", "chat_http_1", "chat_http_8"),
    ),
    (
        "Chat: the torch runner in process (the engine of GPU hosts and Hugging Face models)",
        ("generate_raw", "chat_1", "chat_8"),
    ),
    (
        "Per-request overhead (one client, sequential; overhead = HTTP p50 - runner p50)",
        ("seq_healthz", "seq_models", "seq_embed_runner", "seq_embed_http", "seq_chat_runner", "seq_chat_http"),
    ),
    (
        "Where the overhead goes (each step in process, sequential; batched steps per request)",
        tuple(f"step_{i}" for i in range(7)),
    ),
)


def verdicts(results: dict[str, Throughput]) -> list[str]:
    embed = results["embed_http"].per_second / results["embed_runner"].per_second
    patterns = results["embed_http_patterns"].per_second / results["embed_runner"].per_second
    torch_chat = results["chat_8"].per_second / results["generate_raw"].per_second
    embed_raw = results["embed_http"].per_second / results["embed_raw"].per_second
    runner_raw = results["embed_runner"].per_second / results["embed_raw"].per_second
    embed_ms = results["seq_embed_http"].extra["overhead_ms"]
    chat_ms = results["seq_chat_http"].extra["overhead_ms"]
    lines = []
    if "llamacpp_raw" in results:
        raw = results["llamacpp_raw"]
        speed = results["chat_http_8"].per_second / raw.per_second
        first_raw = raw.extra["first_token_p50_ms"]
        first_http = results["chat_http_1"].extra["first_text_seq_p50_ms"]
        first_engine = results["llamacpp_1"].extra["first_token_p50_ms"]
        first_q8 = results["llamacpp_raw_q8"].extra["first_token_p50_ms"]
        lines += [
            f"chat HTTP at 8 streams (llama.cpp engine) vs raw llama.cpp single stream: {speed:.2f}x "
            f"(target >= 1.5x): " + ("met" if speed >= 1.5 else "NOT met"),
            f"first token, single stream: HTTP {first_http} ms, engine in process {first_engine} ms, raw llama.cpp "
            f"{first_raw} ms: HTTP {first_http / first_raw:.2f}x (target <= 1.2x): "
            + ("met" if first_http <= 1.2 * first_raw else "NOT met")
            + f", engine {first_engine / first_raw:.2f}x",
            f"first token against raw llama.cpp on the same q8_0 re-encoding the engine runs ({first_q8} ms): "
            f"HTTP {first_http / first_q8:.2f}x (target <= 1.2x): "
            + ("met" if first_http <= 1.2 * first_q8 else "NOT met")
            + f", engine {first_engine / first_q8:.2f}x",
        ]
    else:
        lines.append("llama.cpp engine: the llamacpp extra is not installed, so the server ran chat on torch")
    return [
        *lines,
        f"embeddings HTTP vs in-process batched runner: {embed:.0%} (target >= 90%): "
        + ("met" if embed >= 0.9 else "NOT met")
        + f" (a policy that detects no NER type: {patterns:.0%})",
        f"embeddings vs raw sentence-transformers encode (batches of 32): HTTP {embed_raw:.0%}, "
        f"in-process batched runner {runner_raw:.0%}",
        f"torch runner at 8 streams vs raw generate() single stream: {torch_chat:.2f}x (target >= 3x): "
        + ("met" if torch_chat >= 3 else "NOT met"),
        f"appliance overhead per request (HTTP + auth + policy + privacy + audit): "
        f"{embed_ms} ms (embeddings), {chat_ms} ms (chat)",
    ]


def print_table(results: dict[str, Throughput]) -> None:
    header = f"{'measurement':50} {'rate':>9} {'unit':12} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}  notes"
    for title, keys in SECTIONS:
        print(f"\n{title}")
        print(header)
        print("-" * len(header))
        for key in keys:
            if key not in results:
                continue
            r = results[key]
            p50 = f"{r.p50_ms:.1f}" if r.p50_ms is not None else "-"
            p99 = f"{r.p99_ms:.1f}" if r.p99_ms is not None else "-"
            notes = ", ".join(f"{k}={v}" for k, v in r.extra.items())
            print(f"{r.name:50} {r.per_second:9.1f} {r.units:12} {r.count:5} {p50:>8} {p99:>8}  {notes}")
    print()
    for line in verdicts(results):
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="model store (SmolLM2 is converted here)")
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--server-torch-threads", type=int, default=0, help="the server's models.torch_threads (0: its default)"
    )
    parser.add_argument(
        "--server-llamacpp-threads",
        type=int,
        default=0,
        help="the server's models.llamacpp_threads (0: its default, half the cores)",
    )
    parser.add_argument(
        "--gpu-assets",
        type=Path,
        default=Path(".bench-data/gpu"),
        help="configs and tokenizers for the GPU comparison (written here when CUDA is absent; read on a GPU host)",
    )
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    if torch.cuda.is_available():  # a GPU host: the comparison of bench/serving_gpu.py instead
        from bench import serving_gpu

        if not (args.gpu_assets / "smollm2").is_dir():
            serving_gpu.prepare_assets(args.gpu_assets)
        print(json.dumps(serving_gpu.run(args.gpu_assets), indent=2))
        return
    started = time.perf_counter()
    results = run(args.store, args.quick, args.server_torch_threads, args.server_llamacpp_threads)
    if args.json:
        out: dict[str, Any] = {k: dataclasses.asdict(v) for k, v in results.items()}
        out["verdicts"] = verdicts(results)
        print(json.dumps(out, indent=2))
    else:
        print_table(results)
        print(
            f"(total {time.perf_counter() - started:.0f} s, {len(os.sched_getaffinity(0))} cores, "
            f"torch {torch.__version__}, {'quick' if args.quick else 'full'} run)"
        )


if __name__ == "__main__":
    main()
