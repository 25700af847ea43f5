"""Stock Presidio vs the appliance's detector: same process, same texts, same spaCy model.

- stock: ``AnalyzerEngine(nlp_engine=<explicit spaCy config>).analyze(text)`` per text,
  every spaCy component running, every predefined recognizer, default threshold;
- appliance: :class:`appliance.privacy.detection.Detector`, NER-only pipeline, one
  ``nlp.pipe`` pass per request, gated recognizers; measured both one text per call and
  in request-sized batches of 32 (a chat request with history, a dataset chunk).

Prints texts/s, p50/p99 latency per call and the throughput ratio, plus recall on the
scored types for both (from the corpus labels), so speed is never bought with recall.

Runs with the oneDNN kernel caches ``appliance serve`` sets (the environment's values win).

Usage: ``python -m bench.pii_speed [N_TEXTS] [--name-model DIR]`` (default 800 texts; about
three minutes on 2 cores; ``--name-model``: a retrained name model in place of the shipped one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence

os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from appliance.models.onednn import bound_onednn_caches
from bench.pii_corpus import build_corpus
from bench.pii_quality import SCORED, appliance_predictor, score, stock_predictor

BATCH = 32
ROUNDS = 3


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _timed(calls: Sequence[Sequence[str]], fn: Callable[[Sequence[str]], object]) -> tuple[float, list[float]]:
    latencies = []
    start = time.perf_counter()
    for chunk in calls:
        t0 = time.perf_counter()
        fn(chunk)
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - start, latencies


def _line(name: str, n_texts: int, total: float, lat: list[float]) -> float:
    rate = n_texts / total
    print(
        f"{name:34s} {rate:9.1f} texts/s   p50 {1000 * statistics.median(lat):7.2f} ms"
        f"   p99 {1000 * _pct(lat, 0.99):7.2f} ms per call"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n_texts", type=int, nargs="?", default=800)
    parser.add_argument("--name-model", default=None, help="a retrained name model's directory")
    args = parser.parse_args()
    # The kernel caches `appliance serve` runs with (appliance/models/onednn.py); set before
    # the first model runs. Torch's defaults: ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024 LRU_CACHE_CAPACITY=1024.
    caps = bound_onednn_caches()
    print("oneDNN caches: " + ", ".join(f"{k}={v}" for k, v in caps.items()))
    n = args.n_texts
    corpus = build_corpus()
    step = max(1, len(corpus) // n)
    sample = corpus[::step][:n]
    texts = [s.text for s in sample]
    print(f"{len(texts)} texts from the seeded corpus, mean {statistics.mean(map(len, texts)):.0f} chars")

    stock = stock_predictor(threshold=None)
    ours = appliance_predictor(args.name_model, shared_requests=True)
    stock(texts[:20])  # warm-up: lazy loads, caches
    ours(texts[:20])

    singles = [[t] for t in texts]
    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    # Rounds alternate stock and appliance and each keeps its fastest round, so a burst of
    # other work on a shared machine slows one round, not one side of the comparison.
    runs: dict[str, tuple[float, list[float]]] = {}
    for _ in range(ROUNDS):
        for name, calls, fn in (("stock", singles, stock), ("one", singles, ours), ("batch", batches, ours)):
            total, lat = _timed(calls, fn)
            if name not in runs or total < runs[name][0]:
                runs[name] = (total, lat)

    print(f"\nbest of {ROUNDS} alternating rounds")
    r_stock = _line("stock presidio, per text", len(texts), *runs["stock"])
    r_one = _line("appliance, one text per call", len(texts), *runs["one"])
    r_batch = _line(f"appliance, {BATCH} texts per call", len(texts), *runs["batch"])
    print(f"\nthroughput ratio: {r_one / r_stock:.2f}x one per call, {r_batch / r_stock:.2f}x batched (target >= 2x)")

    s_stock, s_ours = score(sample, stock(texts)), score(sample, ours(texts))
    print(f"\n{'recall':15s} {'stock':>7s} {'appliance':>9s}")
    for t in SCORED:
        a, b = s_stock.get(t), s_ours.get(t)
        if a is None or b is None:
            continue
        print(f"{t:15s} {a.recall:7.3f} {b.recall:9.3f}")


if __name__ == "__main__":
    main()
