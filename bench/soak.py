"""Soak: many clients mixing chat, embeddings and admin calls against one live appliance, for
minutes, to show that nothing fails that should not and that memory stays flat.

    .venv/bin/python -m bench.soak                          # 50 clients, 600 s
    .venv/bin/python -m bench.soak --clients 20 --duration 180
    .venv/bin/python -m bench.soak --json                   # the figures as JSON too
    .venv/bin/python -m bench.soak --duration 90 --every 10 # a short run with denser samples
    .venv/bin/python -m bench.soak --keep-log soak.log      # keep the server's log

The script starts the appliance itself on its embedded defaults (``appliance init
--demo-tenant soak`` in a temporary data directory: SQLite, a development master key, the
default offline models; then ``appliance serve``, which loads the models before it listens)
on 127.0.0.1, and stops it afterwards. One change to the defaults: the soak tenant's policy
lifts the per-minute request limit (600), or the soak would measure the limiter. Each client
loops until the time is up, choosing per call:

    45 %  POST /v1/embeddings             one short sentence with a name and an e-mail address
    15 %  POST /v1/chat/completions       a short prompt, max_tokens 8 (SmolLM2 on the CPU)
    40 %  admin (tenant admin and operator keys): list keys, read the audit trail, read the
          policy and the tenant, create and revoke an app key

Printed at the end: requests and errors per kind, p50/p95 latency per kind, requests/s, and
the server's RSS (from /proc) at the start, the middle and the end, with the peak, every 30 s
(``--every``), and its least-squares growth over the second half in MiB per
minute, and the answers and errors per 30 s.

Memory by owner: at the same moments the script scrapes the server's ``/metrics`` (public)
for the process-memory gauges (``appliance/services/metrics.py``) and prints a table of start,
middle, end and second-half growth (MiB/min) for RSS split four ways that add up to it:
SQLite's heap (``sqlite3_memory_used``: the pooled connections' page caches, schemas,
statements), the rest of glibc malloc's in-use memory (SQLite allocates through malloc, so its
heap is counted once, here apart), malloc's free-but-held memory (fragmentation, retained
arenas), and what lies outside malloc (RSS less everything malloc took: Python's small objects,
thread stacks, mapped model files, libraries; malloc's free figure can count pages that are not
resident, which makes this row an underestimate). Growth that levels off in the SQLite row is
page caches filling; growth in the free row with the in-use rows flat is fragmentation; steady
growth in an in-use row is a leak. Below them: malloc's in-use total, its total from the
system, and SQLite's peak. A scrape that fails leaves that sample's gauges out. Last, RSS split
by what backs it (``/proc/PID/smaps_rollup``): anonymous pages, where a leak shows, and
file-backed pages (model weights mapped from disk, libraries), which grow only until every
page of the files in use has been touched once.

When fewer than 10 answers arrive in 30 s while the clients wait, the script
sends the server SIGUSR1 once (``appliance serve`` then writes every thread's stack to its
log) so a stuck server shows where it waits. An
"error" is any answer that is not 2xx, except 429/503 carrying Retry-After (the appliance
shedding load as documented), which are counted apart as "shed"; a transport failure
(connection refused or reset, timeout) is an error too. The exit status is 1 when there was
any error, so a CI job can run a short soak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.live import CLI, appliance_env, free_port, run_cli, wait_until_ready

TENANT = "soak"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    base_url: str
    pid: int
    operator_key: str
    app_key: str
    admin_key: str
    log: Path


def _policy() -> str:
    text = (REPO / "policies" / "default.yaml").read_text()
    if "requests_per_minute: 600" not in text:
        raise RuntimeError("policies/default.yaml changed; update bench.soak._policy")
    return text.replace("requests_per_minute: 600", "requests_per_minute: 1000000")


@contextmanager
def live_server(store: Path, start_timeout_s: float = 300.0) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="appliance-soak-") as tmp_name:
        tmp = Path(tmp_name)
        env = appliance_env(tmp, store)
        (tmp / "policy.yaml").write_text(_policy())
        info = json.loads(run_cli(env, "init", "--demo-tenant", TENANT, "--json"))
        run_cli(env, "policy", "apply", TENANT, str(tmp / "policy.yaml"), "-m", "soak: no per-minute limit")
        admin = json.loads(run_cli(env, "apikey", "create", "--role", "tenant_admin", "--tenant", TENANT, "--json"))
        port = free_port()
        log = tmp / "server.log"
        with log.open("w") as fh:
            proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, stdout=fh, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(base, proc, log, start_timeout_s)
            yield Server(base, proc.pid, info["operator_api_key"], info["demo"]["app_api_key"], admin["api_key"], log)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def server_errors(log: Path, limit: int = 20) -> list[str]:
    """The server's ERROR and WARNING log lines (JSON; they name the error type and where, never
    content), less the development-mode warning every start prints."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if ('"level": "ERROR"' in line or '"level": "WARNING"' in line) and "DEV MODE" not in line:
            out.append(line[:1500])
    return out[:limit]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def resident_split_mib(pid: int) -> dict[str, float]:
    """RSS split by what backs the pages (``/proc/PID/smaps_rollup``): anonymous memory
    (malloc, Python's heap, stacks; what a leak grows) and file-backed pages (mapped model
    weights and libraries, which grow as pages are first touched and stop at the files' size).
    Empty where the kernel has no smaps_rollup."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    kib = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            kib[key] = int(rest.split()[0])
    if "Rss" not in kib or "Anonymous" not in kib:
        return {}
    return {"anonymous": kib["Anonymous"] / 1024, "file_backed": (kib["Rss"] - kib["Anonymous"]) / 1024}


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    shed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    samples: list[str] = field(default_factory=list)
    shed_samples: list[str] = field(default_factory=list)
    origin: float = field(default_factory=time.monotonic)
    last_answer: float = field(default_factory=time.monotonic)
    recent: deque[float] = field(default_factory=deque)
    answers_per_30s: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    errors_per_30s: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def record(self, kind: str, started: float, r: httpx.Response | None, what: str = "") -> None:
        now = time.monotonic()
        self.latencies[kind].append(now - started)
        bucket = int((now - self.origin) // 30) * 30
        if r is not None:
            self.last_answer = now
            self.answers_per_30s[bucket] += 1
            self.recent.append(now)
            while self.recent and self.recent[0] < now - STALL_S:
                self.recent.popleft()
        if r is not None and r.is_success:
            return
        if r is not None and r.status_code in (429, 503) and "retry-after" in r.headers:
            self.shed[kind] += 1
            if len(self.shed_samples) < 5:  # kept apart, so shed answers never crowd out the errors
                self.shed_samples.append(f"{kind} (shed): {r.status_code} {r.text[:200]}")
            return
        self.errors[kind] += 1
        self.errors_per_30s[bucket] += 1
        if len(self.samples) < 10:
            detail = f"{r.status_code} {r.text[:200]}" if r is not None else what
            self.samples.append(f"{kind}: {detail}")


SENTENCES = [
    "Please send the invoice to anna.berg@example.com before Friday.",
    "Jonas Meier called about his refund for order 4471.",
    "The meeting with Sara Lind moved to Tuesday at 10.",
    "My card was charged twice, reach me at +46 70 123 45 67.",
]


async def _call(http: httpx.AsyncClient, kind: str, server: Server, rng: random.Random) -> httpx.Response:
    app = {"Authorization": f"Bearer {server.app_key}"}
    admin = {"Authorization": f"Bearer {server.admin_key}"}
    op = {"Authorization": f"Bearer {server.operator_key}"}
    if kind == "embeddings":
        body = {"model": "all-minilm-l6-v2", "input": rng.choice(SENTENCES)}
        return await http.post("/v1/embeddings", json=body, headers=app)
    if kind == "chat":
        body = {"messages": [{"role": "user", "content": rng.choice(SENTENCES)}], "max_tokens": 8}
        return await http.post("/v1/chat/completions", json={"model": "smollm2-135m-instruct", **body}, headers=app)
    pick = rng.random()
    if pick < 0.3:
        return await http.get(f"/admin/v1/tenants/{TENANT}/keys", headers=admin)
    if pick < 0.55:
        return await http.get("/admin/v1/audit", params={"limit": 20}, headers=op)
    if pick < 0.75:
        return await http.get(f"/admin/v1/tenants/{TENANT}/policy", headers=admin)
    if pick < 0.85:
        return await http.get(f"/admin/v1/tenants/{TENANT}", headers=admin)
    r = await http.post(f"/admin/v1/tenants/{TENANT}/keys", json={"role": "app", "name": "soak"}, headers=admin)
    if r.status_code == 201:
        return await http.delete(f"/admin/v1/tenants/{TENANT}/keys/{r.json()['key']['id']}", headers=admin)
    return r


def _kind(rng: random.Random) -> str:
    x = rng.random()
    return "embeddings" if x < 0.45 else "chat" if x < 0.60 else "admin"


async def _client(n: int, server: Server, until: float, tally: Tally) -> None:
    rng = random.Random(n)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as http:
        while time.monotonic() < until:
            kind = _kind(rng)
            started = time.monotonic()
            try:
                r = await _call(http, kind, server, rng)
            except httpx.HTTPError as exc:
                tally.record(kind, started, None, type(exc).__name__)
                await asyncio.sleep(0.1)
                continue
            tally.record(kind, started, r)
            if r.status_code in (429, 503):
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))


SERIES_EVERY_S = 30.0


STALL_S = 30.0
STALL_ANSWERS = 10
"""Fewer answers than this in the last STALL_S seconds while 50 clients wait: the server is stuck
(a few requests may still trickle out, each after a 10 s lock timeout)."""


MEMORY_GAUGES = {
    "sqlite_heap": "appliance_sqlite_heap_bytes",
    "sqlite_heap_highwater": "appliance_sqlite_heap_highwater_bytes",
    "malloc_in_use": "appliance_malloc_in_use_bytes",
    "malloc_free": "appliance_malloc_free_bytes",
    "malloc_arena": "appliance_malloc_arena_bytes",
}
"""The server's memory by owner, from /metrics (appliance/services/metrics.py), in MiB here."""


async def memory_sample(http: httpx.AsyncClient, pid: int) -> dict[str, float]:
    """RSS and the memory gauges of one /metrics scrape (read by the server as it answers), in
    MiB, with the split derived from them: SQLite's heap is part of malloc's in-use memory
    (SQLite allocates with malloc), so RSS = SQLite heap + the rest of malloc in use + malloc
    free + what lies outside malloc. A failed scrape gives RSS alone."""
    sample = {"rss": rss_mib(pid), **resident_split_mib(pid)}
    try:
        r = await http.get("/metrics", timeout=30)
    except httpx.HTTPError:
        return sample
    wanted = {metric: key for key, metric in MEMORY_GAUGES.items()}
    for line in r.text.splitlines() if r.is_success else ():
        name, _, value = line.partition(" ")
        if name in wanted:
            sample[wanted[name]] = float(value) / (1 << 20)
    if "malloc_in_use" in sample and "sqlite_heap" in sample:
        sample["malloc_in_use_not_sqlite"] = sample["malloc_in_use"] - sample["sqlite_heap"]
    if "malloc_arena" in sample:
        sample["outside_malloc"] = sample["rss"] - sample["malloc_arena"]
    return sample


async def _watch(
    server: Server,
    started: float,
    duration: float,
    rss: dict[str, float],
    memory: dict[str, Any],
    tally: Tally,
    every: float,
) -> None:
    pid = server.pid
    dumped = False
    memory_series: list[tuple[float, dict[str, float]]] = memory.setdefault("series", [])
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        memory["start"] = await memory_sample(http, pid)
        rss["start"] = rss["peak"] = memory["start"]["rss"]
        memory_series.append((0.0, memory["start"]))
        middle_done = False
        while time.monotonic() < started + duration:
            await asyncio.sleep(1)
            now = rss_mib(pid)
            rss["peak"] = max(rss["peak"], now)
            elapsed = time.monotonic() - started
            if elapsed - memory_series[-1][0] >= every:
                memory_series.append((round(elapsed), await memory_sample(http, pid)))
            stuck = sum(1 for t in tally.recent if t >= time.monotonic() - STALL_S) < STALL_ANSWERS
            if not dumped and elapsed > 2 * STALL_S and stuck:
                # Every thread's stack into the server's log (faulthandler on SIGUSR1, see serve).
                os.kill(pid, signal.SIGUSR1)
                rss["stall_dumped_at_s"] = round(elapsed)
                dumped = True
            if not middle_done and elapsed >= duration / 2:
                rss["middle"] = now
                memory["middle"] = await memory_sample(http, pid)
                middle_done = True
        memory["end"] = await memory_sample(http, pid)
    rss["end"] = memory["end"]["rss"]
    series = [(t, sample["rss"]) for t, sample in memory_series]
    rss["second_half_slope_mib_per_min"] = _slope([p for p in series if p[0] >= duration / 2])


MEMORY_ROWS = {
    "rss": "RSS",
    "sqlite_heap": "  SQLite heap",
    "malloc_in_use_not_sqlite": "  malloc in use, not SQLite",
    "malloc_free": "  malloc free (held)",
    "outside_malloc": "  outside malloc",
    "malloc_in_use": "malloc in use (all)",
    "malloc_arena": "malloc from the system",
    "sqlite_heap_highwater": "SQLite heap peak",
    "anonymous": "RSS, anonymous pages",
    "file_backed": "RSS, file-backed pages",
}
"""The memory table's rows: the indented four add up to RSS, at every moment and in growth;
so do the last two (from smaps_rollup), split by what backs the pages instead of by owner."""


def memory_summary(memory: dict[str, Any], duration: float) -> dict[str, dict[str, float | None]]:
    """Per figure: start, middle and end (MiB, None where the scrape failed) and the
    least-squares growth over the second half in MiB per minute, from the series' samples that
    have the figure (with RSS read at the same moments, so the indented rows' growths add up
    to RSS's when no scrape failed)."""
    out: dict[str, dict[str, float | None]] = {}
    for key in MEMORY_ROWS:
        points = [(t, sample[key]) for t, sample in memory.get("series", []) if key in sample]
        row: dict[str, float | None] = {}
        for moment in ("start", "middle", "end"):
            value = memory.get(moment, {}).get(key)
            row[moment] = None if value is None else round(value, 1)
        row["second_half_slope_mib_per_min"] = round(_slope([p for p in points if p[0] >= duration / 2]), 3)
        out[key] = row
    return out


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares growth in MiB per minute (0 with fewer than 3 points): flat memory is
    a slope near 0 once the caches have filled, whatever the start-up growth was."""
    if len(points) < 3:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_m = sum(m for _, m in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in points)
    return 60 * cov / var if var else 0.0


async def soak(server: Server, clients: int, duration: float, every: float = SERIES_EVERY_S) -> dict[str, Any]:
    tally = Tally()
    rss: dict[str, float] = {}
    memory: dict[str, Any] = {}
    started = tally.origin = tally.last_answer = time.monotonic()
    until = started + duration
    await asyncio.gather(
        _watch(server, started, duration, rss, memory, tally, every),
        *(_client(n, server, until, tally) for n in range(clients)),
    )
    wall = time.monotonic() - started
    kinds: dict[str, Any] = {}
    for kind, lat in sorted(tally.latencies.items()):
        ordered = sorted(lat)
        kinds[kind] = {
            "requests": len(lat),
            "errors": tally.errors[kind],
            "shed": tally.shed[kind],
            "p50_ms": round(1000 * ordered[len(ordered) // 2], 1),
            "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1),
        }
    total = sum(k["requests"] for k in kinds.values())
    return {
        "clients": clients,
        "duration_s": round(wall, 1),
        "requests": total,
        "requests_per_s": round(total / wall, 1),
        "errors": sum(k["errors"] for k in kinds.values()),
        "shed": sum(k["shed"] for k in kinds.values()),
        "kinds": kinds,
        "rss_mib": {k: round(v, 1) for k, v in rss.items()},
        "rss_series_mib": [[t, round(sample["rss"], 1)] for t, sample in memory["series"]],
        "memory_mib": memory_summary(memory, duration),
        "memory_series_mib": [[t, {k: round(v, 2) for k, v in sample.items()}] for t, sample in memory["series"]],
        "answers_per_30s": dict(sorted(tally.answers_per_30s.items())),
        "errors_per_30s": dict(sorted(tally.errors_per_30s.items())),
        "error_samples": tally.samples,
        "shed_samples": tally.shed_samples,
    }


def print_report(result: dict[str, Any]) -> None:
    print(
        f"soak: {result['clients']} clients for {result['duration_s']} s: {result['requests']} requests "
        f"({result['requests_per_s']}/s), {result['errors']} errors, {result['shed']} shed (429/503 + Retry-After)"
    )
    print(f"{'kind':<12}{'requests':>10}{'errors':>8}{'shed':>6}{'p50 ms':>10}{'p95 ms':>10}")
    for kind, k in result["kinds"].items():
        print(f"{kind:<12}{k['requests']:>10}{k['errors']:>8}{k['shed']:>6}{k['p50_ms']:>10}{k['p95_ms']:>10}")
    r = result["rss_mib"]
    print(f"server RSS MiB: start {r.get('start')}, middle {r.get('middle')}, end {r.get('end')}, peak {r.get('peak')}")
    print(f"  growth over the second half: {r.get('second_half_slope_mib_per_min')} MiB/min")
    print("  every sample:", " ".join(f"{int(t)}s:{m}" for t, m in result["rss_series_mib"]))
    print(f"{'memory MiB (from /metrics)':<30}{'start':>9}{'middle':>9}{'end':>9}{'2nd-half MiB/min':>18}")
    for key, label in MEMORY_ROWS.items():
        row = result["memory_mib"][key]
        cells = "".join(f"{'-' if row[m] is None else row[m]:>9}" for m in ("start", "middle", "end"))
        print(f"{label:<30}{cells}{row['second_half_slope_mib_per_min']:>18}")
    print("answers per 30 s:", " ".join(f"{t}s:{n}" for t, n in result["answers_per_30s"].items()))
    if result["errors_per_30s"]:
        print("errors per 30 s:", " ".join(f"{t}s:{n}" for t, n in result["errors_per_30s"].items()))
    if "stall_dumped_at_s" in r:
        at = r["stall_dumped_at_s"]
        print(f"under {STALL_ANSWERS} answers in {STALL_S:.0f} s at {at} s: thread stacks are in the server log")
    for line in [*result["error_samples"], *result["shed_samples"]]:
        print("  sample:", line)
    for line in result.get("server_errors", []):
        print("  server log:", line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--store", type=Path, default=REPO / ".bench-data" / "models", help="model store directory")
    parser.add_argument(
        "--every", type=float, default=SERIES_EVERY_S, help="seconds between memory samples (default 30)"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep-log", type=Path, help="copy the server's log here (it holds no request content)")
    args = parser.parse_args()
    args.store.mkdir(parents=True, exist_ok=True)
    with live_server(args.store) as server:
        result = asyncio.run(soak(server, args.clients, args.duration, args.every))
        result["server_errors"] = server_errors(server.log)
        if args.keep_log is not None:
            shutil.copyfile(server.log, args.keep_log)
    print_report(result)
    if args.json:
        print(json.dumps(result, indent=2))
    sys.exit(1 if result["errors"] else 0)


if __name__ == "__main__":
    main()
