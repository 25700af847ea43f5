"""The README's Python example, timed against a real quickstart server, with baselines.

    .venv/bin/python -m bench.readme_example            # about 2-3 minutes on 2 cores
    .venv/bin/python -m bench.readme_example --json

One run measures:

- the fresh server's first answer (one chat with other words, over HTTP): what the first
  caller after a start waits, and what warms the server up as a running one would be;
- the README's Python block exactly as written (only the port changed), as a fresh
  ``python -c`` process each time, against the warm server: wall seconds including the
  interpreter and the ``openai`` import, how many runs stayed within issue 18's 10 s on 2
  cores (``tests/e2e/test_demo_server.py`` asserts the same limit), whether the answer holds
  the restored name and address, and its length;
- the same call from this process through the official ``openai`` client (the request alone);
- baseline, in process: the local SmolLM2 runner on the anonymized prompt the model sees,
  with the built-in sampling defaults (what the server adds on top is the difference), and
  with OpenAI's defaults (temperature 1, top_p 1, up to 512 tokens), which is what the
  example got before the model had defaults of its own.

The server is ``appliance init --demo-tenant demo`` then ``appliance serve`` (models warmed
up first, as ``scripts/serve-demo`` does) on a free loopback port. The first run converts
SmolLM2 into ``.bench-data/models`` (about 25 s); later runs reuse it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""


from bench.live import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
STORE = Path(os.environ.get("APPLIANCE_BENCH_MODEL_STORE", ROOT / ".bench-data" / "models"))
SEEN_BY_MODEL = "Complete the sentence: Thank you, <PERSON_1>! We will send the invoice to <EMAIL_ADDRESS_1>"
WARM_UP = "Complete the sentence: Hello, Maria Lopez! Your order"
LIMIT_S = 10.0


def readme_code() -> str:
    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    return code


@contextmanager
def quickstart() -> Iterator[tuple[str, str]]:
    """(base URL, demo app key) of a fresh `init --demo-tenant demo` + `serve`."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env.update(
            APPLIANCE_DATA_DIR=f"{tmp}/data",
            APPLIANCE_CONFIG=f"{tmp}/a.toml",
            APPLIANCE_MODELS__STORE_DIR=str(STORE),
        )
        Path(f"{tmp}/a.toml").write_text("")
        cli = [sys.executable, "-m", "appliance.cli"]
        init = subprocess.run(
            [*cli, "init", "--demo-tenant", "demo", "--json"], env=env, capture_output=True, text=True
        )
        if init.returncode != 0:
            raise SystemExit(init.stderr)
        key = json.loads(init.stdout)["demo"]["app_api_key"]
        port = free_port()
        with Path(f"{tmp}/server.log").open("w") as log:
            proc = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_until_ready(base, proc, Path(f"{tmp}/server.log"), 300)
            except RuntimeError as e:
                raise SystemExit(f"the quickstart server did not start: {e}") from None
            yield base, key
        finally:
            proc.terminate()
            proc.wait(30)


def first_answer(base: str, key: str) -> dict[str, Any]:
    """The fresh server's first chat (other words than the README's), timed."""
    import httpx

    started = time.perf_counter()
    response = httpx.post(
        f"{base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": WARM_UP}]},
        timeout=120,
    )
    response.raise_for_status()
    return {"seconds": round(time.perf_counter() - started, 2)}


def as_written(base: str, key: str, runs: int) -> dict[str, Any]:
    code = readme_code().replace("http://127.0.0.1:8080", base)
    seconds, answers = [], []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "KEY": key}, capture_output=True, text=True
        )
        seconds.append(time.perf_counter() - started)
        answers.append(out.stdout.strip() if out.returncode == 0 else f"(failed: {out.stderr.strip()[-200:]})")
    restored = sum("Anna Berg" in a and "anna.berg@example.com" in a for a in answers)
    return {
        "runs": runs,
        "p50_s": round(statistics.median(seconds), 2),
        "max_s": round(max(seconds), 2),
        "within_limit": f"{sum(s < LIMIT_S for s in seconds)}/{runs} under {LIMIT_S:.0f} s",
        "restored": f"{restored}/{runs}",
        "longest_answer_chars": max(len(a) for a in answers),
        "answer": answers[0],
    }


def in_process_client(base: str, key: str, runs: int) -> dict[str, Any]:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key=key)
    content = "Complete the sentence: Thank you, Anna Berg! We will send the invoice to anna.berg@example.com"
    seconds, tokens = [], []
    for _ in range(runs):
        started = time.perf_counter()
        r = client.chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": content}]
        )
        seconds.append(time.perf_counter() - started)
        tokens.append(r.usage.completion_tokens if r.usage else 0)
    return {"runs": runs, "p50_s": round(statistics.median(seconds), 2), "completion_tokens": tokens}


def runner_baseline(runs: int, temperature: float, top_p: float, max_tokens: int) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    from appliance.models import ModelStore, configure_torch_threads
    from appliance.models.base import ChatMessage, ChatRequest
    from appliance.models.chat import LocalChatRunner

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    configure_torch_threads()
    runner = LocalChatRunner("smollm2", ModelStore(STORE).ensure_smollm2(), default_max_tokens=max_tokens)
    runner.warmup()
    seconds, tokens, texts = [], [], []
    try:
        for seed in range(runs):
            request = ChatRequest(
                [ChatMessage("user", SEEN_BY_MODEL)],
                temperature=temperature,
                top_p=top_p,
                max_tokens=max_tokens,
                seed=seed,
            )
            started = time.perf_counter()
            result = asyncio.run(runner.complete(request))
            seconds.append(time.perf_counter() - started)
            tokens.append(result.usage.completion_tokens)
            texts.append(result.text)
    finally:
        runner.close()
    tokens_kept = sum("<PERSON_1>" in t and "<EMAIL_ADDRESS_1>" in t for t in texts)
    return {
        "runs": runs,
        "sampling": f"temperature {temperature}, top_p {top_p}, max {max_tokens}",
        "p50_s": round(statistics.median(seconds), 2),
        "max_s": round(max(seconds), 2),
        "completion_tokens": tokens,
        "answers_with_both_tokens": f"{tokens_kept}/{runs}",
        "answer": texts[0][:160],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from appliance.models.registry import SMOLLM2_DEFAULTS

    results: dict[str, Any] = {}
    with quickstart() as (base, key):
        results["first_answer_of_a_fresh_server"] = first_answer(base, key)
        results["readme_example_as_written"] = as_written(base, key, args.runs)
        results["openai_client_in_process"] = in_process_client(base, key, args.runs)
    results["runner_with_builtin_defaults"] = runner_baseline(
        args.runs,
        SMOLLM2_DEFAULTS["default_temperature"],
        SMOLLM2_DEFAULTS["default_top_p"],
        int(SMOLLM2_DEFAULTS["default_max_tokens"]),
    )
    results["runner_with_openai_defaults"] = runner_baseline(min(args.runs, 3), 1.0, 1.0, 512)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, row in results.items():
        print(f"{name}:")
        for k, v in row.items():
            print(f"    {k}: {v}")


if __name__ == "__main__":
    main()
