"""README command 1's flow: init with a demo tenant, `appliance serve` (models warmed up as
`serve-demo` does), then real clients, the README's own Python example among them."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import appliance_process

README = Path(__file__).parents[2] / "README.md"


@dataclass
class Served:
    base_url: str
    app_key: str
    operator_key: str
    log: Path
    pid: int


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with appliance_process(tmp_path_factory.mktemp("served"), ready_within_s=120, warmup=True) as proc:
        yield Served(proc.base_url, proc.init["demo"]["app_api_key"], proc.init["operator_api_key"], proc.log, proc.pid)


def test_official_openai_client_lists_models_with_the_demo_key(served: Served) -> None:
    with openai.OpenAI(base_url=f"{served.base_url}/v1", api_key=served.app_key) as client:  # closes its sockets
        page = client.models.list()
    assert page.object == "list"


def test_official_openai_client_gets_a_typed_auth_error_with_a_bad_key(served: Served) -> None:
    bad_key = "apl_0000000000000000_" + "x" * 43
    with (
        openai.OpenAI(base_url=f"{served.base_url}/v1", api_key=bad_key, max_retries=0) as client,
        pytest.raises(openai.AuthenticationError) as info,
    ):
        client.models.list()
    assert "API key" in str(info.value)


def test_logs_are_json_with_request_ids_and_hold_no_secrets(served: Served) -> None:
    httpx.get(f"{served.base_url}/v1/models", headers={"Authorization": f"Bearer {served.app_key}"})
    time.sleep(0.3)
    lines = [json.loads(line) for line in served.log.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "appliance.access"]
    assert access
    assert all(line["request_id"] for line in access)
    text = served.log.read_text()
    for secret in (served.app_key, served.operator_key, served.app_key.split("_", 2)[2]):
        assert secret not in text


def _readme_python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert len(blocks) == 1, "the README holds one Python example"
    return blocks[0]


README_BUDGET_S = 10.0
"""Issue 18: the README's Python example answers "within 10 s on 2 cores"."""

DISTURBED_CORES = 0.5
"""An attempt counts as disturbed when processes other than the server, the example and this
test used more than this many cores on average while it ran (a quarter of a 2-core box)."""


@dataclass(frozen=True)
class CpuSeconds:
    """CPU seconds used so far by the machine (busy time, including what the hypervisor stole),
    by the server process (all its threads), by this process's finished children and by this
    process; the difference between two readings says who used the machine in between."""

    machine: float
    server: float
    children: float
    own: float

    @classmethod
    def now(cls, server_pid: int) -> CpuSeconds:
        tick = os.sysconf("SC_CLK_TCK")
        user, nice, system, _idle, _iowait, irq, softirq, steal = (
            int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        )
        # /proc/PID/stat: after the ")" closing the command name, utime and stime are the 12th and 13th fields.
        utime, stime = (int(x) for x in Path(f"/proc/{server_pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13])
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            machine=(user + nice + system + irq + softirq + steal) / tick,
            server=(utime + stime) / tick,
            children=children.ru_utime + children.ru_stime,
            own=own.ru_utime + own.ru_stime,
        )

    def others_since(self, before: CpuSeconds) -> float:
        """CPU seconds that neither the server, nor a child of this process, nor this process used."""
        ours = (self.server - before.server) + (self.children - before.children) + (self.own - before.own)
        return max(0.0, (self.machine - before.machine) - ours)


@dataclass(frozen=True)
class Attempt:
    seconds: float
    others_cores: float  # what other processes used meanwhile, on average
    answer: str

    @property
    def disturbed(self) -> bool:
        return self.others_cores > DISTURBED_CORES

    def __str__(self) -> str:
        return f"{self.seconds:.1f} s while other processes used {self.others_cores:.2f} cores"


def _run_readme_example(served: Served) -> Attempt:
    code = _readme_python_example().replace("http://127.0.0.1:8080", served.base_url)  # the test's free port
    env = {**os.environ, "KEY": served.app_key}
    before = CpuSeconds.now(served.pid)
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    seconds = time.monotonic() - started
    others = CpuSeconds.now(served.pid).others_since(before)
    assert run.returncode == 0, run.stderr
    answer = run.stdout.strip()
    assert "<PERSON" not in answer and "<EMAIL_ADDRESS" not in answer, answer  # every placeholder restored
    assert len(answer) < 400, answer  # brief: the model's defaults keep it from rambling
    return Attempt(seconds, others / seconds, answer)


def _restores_both(answer: str) -> bool:
    return "Anna Berg" in answer and "anna.berg@example.com" in answer


@pytest.mark.slow
def test_the_readme_python_example_answers_briefly_with_the_name_and_address_restored_within_10_s(
    served: Served,
) -> None:
    """Issue 18's acceptance, measured as an operator meets it: a running server is warm, so
    one chat with other words goes first; then the README's block runs as written (only the
    port changed) in a fresh interpreter, whose start and ``openai`` import count too.

    The limit is fixed at 10 s. The suite shares a 2-core box between two pytest workers, so
    one retry is allowed, and only when the first attempt was slow *and* provably disturbed:
    processes other than the server, the example and this test used more than half a core on
    average while it ran (busy time from /proc/stat less the server's /proc/PID/stat and this
    process's rusage). A slow attempt on a quiet machine fails at once; the retry must pass the
    same limit.
    """
    warm = httpx.post(
        f"{served.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {served.app_key}"},
        json={
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "Complete the sentence: Hello, Maria Lopez! Your order"}],
        },
        timeout=60,
    )
    assert warm.status_code == 200, warm.text
    first = _run_readme_example(served)
    print(f"README example: {first}, including the interpreter and the openai import")
    # The example sets no seed, so the model samples: now and then it words the sentence
    # without repeating the name. Up to two more answers may show the name and address
    # restored; none may ever hold a placeholder (checked on each).
    answers = [first.answer]
    while not _restores_both(answers[-1]) and len(answers) < 3:
        answers.append(_run_readme_example(served).answer)
    assert _restores_both(answers[-1]), answers
    if first.seconds < README_BUDGET_S:
        return
    assert first.disturbed, f"the README example took {first} on a quiet machine (limit {README_BUDGET_S:.0f} s)"
    second = _run_readme_example(served)
    print(f"README example, retried after a disturbed first attempt: {second}")
    assert second.seconds < README_BUDGET_S, (
        f"the README example took {first}, then {second} (limit {README_BUDGET_S:.0f} s)"
    )


def test_a_fresh_start_warns_of_nothing_and_says_where_it_listens(served: Served) -> None:
    rows = [json.loads(line) for line in served.log.read_text().splitlines() if line.startswith("{")]
    assert not [r for r in rows if r["level"] in ("WARNING", "ERROR", "CRITICAL")], "start-up warnings"
    assert "Recognizer not added" not in served.log.read_text()
    assert not [line for line in served.log.read_text().splitlines() if not line.startswith("{")], "non-JSON lines"
    (banner,) = [r for r in rows if r["logger"] == "appliance.start"]
    assert banner["listening"] == served.base_url
    assert banner["database"].startswith("sqlite:///") and banner["database"].endswith("appliance.db")
    assert any(m.startswith("smollm2-135m-instruct (chat, loaded)") for m in banner["models"])
    assert banner["data_dir"] and banner["pii_model"]


DEV_TOML = Path(__file__).parents[2] / "scripts" / "dev.toml"
CONSOLE_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO \[[^\]]*\] [\w.]+: \S")
"""A console log line at INFO: time, level, [request id], logger: message."""


@pytest.mark.slow
def test_a_fresh_start_in_the_console_format_prints_info_lines_and_the_banner_only(tmp_path: Path) -> None:
    """What `serve-demo` shows an operator (its settings file, models warmed up): no warning,
    traceback or progress bar, nothing but log records and the start banner; an access line
    carries method, route, status and duration."""
    with appliance_process(tmp_path, ready_within_s=120, warmup=True, config=DEV_TOML) as proc:
        deadline = time.monotonic() + 10
        while " GET /readyz 200 " not in proc.log.read_text():  # appliance_process polled it
            assert time.monotonic() < deadline, proc.log.read_text()
            time.sleep(0.1)
        text = proc.log.read_text()
    assert "\r" not in text and "%|" not in text, "a progress bar"
    assert "Traceback" not in text
    lines = text.splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith("appliance ") and " listening on " in line]
    assert lines[start].endswith(f" listening on {proc.base_url}")
    banner = start + 1
    while banner < len(lines) and lines[banner].startswith("  "):  # models, PII NER, database, data dir
        banner += 1
    assert banner - start >= 4, lines[start:banner]
    stray = [line for i, line in enumerate(lines) if not start <= i < banner and not CONSOLE_RECORD.match(line)]
    assert not stray, stray  # a WARNING or ERROR record, a library's print, a progress bar's line
    assert re.search(r" INFO \[[0-9a-f]{32}\] appliance\.access: GET /readyz 200 \d+(\.\d+)? ms$", text, re.M), text


def test_sigusr1_writes_every_threads_stack_to_the_log_and_the_server_keeps_serving(served: Served) -> None:
    """Kept last in the module: the dump is the one output of the server that is not JSON."""
    os.kill(served.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while "most recent call first" not in served.log.read_text():
        assert time.monotonic() < deadline, "no stack dump in the log"
        time.sleep(0.1)
    # The dump is written a frame at a time, the main thread (uvicorn's) last: read it once
    # the log has stopped growing, not as soon as it begins.
    dump = served.log.read_text()
    while True:
        time.sleep(0.5)
        now = served.log.read_text()
        if now == dump or time.monotonic() > deadline:
            break
        dump = now
    assert dump.count("most recent call first") >= 2  # every thread, not only the main one
    assert 'File "' in dump and "uvicorn" in dump  # code locations, which is all it holds
    assert httpx.get(f"{served.base_url}/healthz", timeout=5).status_code == 200
