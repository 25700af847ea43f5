"""Serving benchmark, in-process parts: raw model speed vs the appliance's batched runners.

    .venv/bin/python -m bench.serving            # about 1-2 minutes on 2 cores
    .venv/bin/python -m bench.serving --json     # the same figures as JSON

Each measurement is a function returning a small dataclass, so the HTTP measurements
(requests through the API with auth + privacy + audit) can be added beside them and
compared against the same raw baselines. The first run converts SmolLM2 into
``.bench-data/models`` (about 25 s); later runs reuse it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from appliance.models.base import ChatMessage, ChatRequest
from appliance.models.chat import LocalChatRunner
from appliance.models.embeddings import LocalEmbeddingRunner
from appliance.models.manager import configure_torch_threads
from appliance.models.store import ModelStore, minilm_directory

DEFAULT_STORE = Path(".bench-data/models")
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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------- embeddings


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


async def _embed_clients(runner: LocalEmbeddingRunner, clients: int, seconds: float) -> tuple[int, list[float]]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client(i: int) -> None:
        n = i
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await runner.embed([SENTENCES[n % len(SENTENCES)]])
            latencies.append(time.perf_counter() - started)
            n += clients

    await asyncio.gather(*(client(i) for i in range(clients)))
    return len(latencies), latencies


def batched_embeddings(runner: LocalEmbeddingRunner, clients: int = 32, seconds: float = 6.0) -> Throughput:
    """``clients`` concurrent one-sentence requests through the dynamic batcher."""
    before = runner.stats
    count, latencies = asyncio.run(_embed_clients(runner, clients, seconds))
    after = runner.stats
    passes = after.forward_passes - before.forward_passes
    return Throughput(
        f"runner, {clients} concurrent 1-text requests",
        "requests/s",
        count / seconds,
        seconds,
        count,
        _percentile(latencies, 0.5) * 1000,
        _percentile(latencies, 0.99) * 1000,
        {"mean_batch": round(count / max(passes, 1), 1)},
    )


# ---------------------------------------------------------------- chat


def raw_generate(model_dir: Path, tokens: int = 48) -> Throughput:
    """transformers ``generate()``, one stream, greedy, fixed length: the single-stream baseline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    messages = [{"role": "user", "content": PROMPTS[0]}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=4, do_sample=False)
        started = time.perf_counter()
        model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        elapsed = time.perf_counter() - started
    return Throughput("raw generate(), 1 stream", "tokens/s", tokens / elapsed, elapsed, tokens)


async def _chat_streams(runner: LocalChatRunner, streams: int, tokens: int, rounds: int) -> tuple[int, list[float]]:
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


def batched_chat(runner: LocalChatRunner, streams: int, tokens: int = 48, rounds: int = 1) -> Throughput:
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


# ---------------------------------------------------------------- report


def run(store: Path, quick: bool = False) -> dict[str, Throughput]:
    threads = configure_torch_threads()
    seconds = 3.0 if quick else 6.0
    tokens = 24 if quick else 48
    results: dict[str, Throughput] = {}
    minilm = minilm_directory()
    results["embed_raw"] = raw_embeddings(minilm, 32, seconds)
    embedder = LocalEmbeddingRunner("all-minilm-l6-v2", minilm, max_batch=64)
    embedder.warmup()
    try:
        results["embed_runner"] = batched_embeddings(embedder, 32, seconds)
    finally:
        embedder.close()

    smol = ModelStore(store).ensure_smollm2()
    results["generate_raw"] = raw_generate(smol, tokens)
    chat = LocalChatRunner("smollm2-135m-instruct", smol, max_batch=8, max_queue=64)
    chat.warmup()
    try:
        results["chat_1"] = batched_chat(chat, 1, tokens)
        results["chat_8"] = batched_chat(chat, 8, tokens, rounds=1 if quick else 2)
    finally:
        chat.close()
    results["chat_8"].extra["vs_raw_single_stream"] = round(
        results["chat_8"].per_second / results["generate_raw"].per_second, 2
    )
    results["embed_runner"].extra["vs_raw"] = round(
        results["embed_runner"].per_second / results["embed_raw"].per_second, 2
    )
    results["embed_raw"].extra["torch_threads"] = threads
    return results


def print_table(results: dict[str, Throughput]) -> None:
    print(f"{'measurement':44} {'rate':>12} {'unit':12} {'p50 ms':>8} {'p99 ms':>8}  notes")
    for r in results.values():
        p50 = f"{r.p50_ms:.0f}" if r.p50_ms is not None else "-"
        p99 = f"{r.p99_ms:.0f}" if r.p99_ms is not None else "-"
        notes = ", ".join(f"{k}={v}" for k, v in r.extra.items())
        print(f"{r.name:44} {r.per_second:12.1f} {r.units:12} {p50:>8} {p99:>8}  {notes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE, help="model store (SmolLM2 is converted here)")
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    results = run(args.store, args.quick)
    if args.json:
        print(json.dumps({k: dataclasses.asdict(v) for k, v in results.items()}, indent=2))
    else:
        print_table(results)
        print(f"(total {time.perf_counter() - started:.0f} s, {os.cpu_count()} cpus, torch {torch.__version__})")


if __name__ == "__main__":
    main()
