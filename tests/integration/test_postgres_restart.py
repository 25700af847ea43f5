"""PostgreSQL restarted for real under the appliance: a clean restart and a crash.

The shared test server (127.0.0.1:5432) serves other test processes at the same time and is
never stopped; test_fault_injection.py only terminates its backends. This module starts a
PRIVATE PostgreSQL 15 cluster of its own (``initdb`` into a fresh directory, trust auth,
loopback only, ``fsync`` on) and restarts it while the appliance serves:

- ``pg_ctl restart -m fast`` and a crash (``pg_ctl stop -m immediate``, then ``start``: real
  crash recovery from the WAL) while eight clients create keys over HTTP: every answer is a
  201 or a clear 503 problem, the pool reconnects on its own, every acknowledged key is
  stored and the audit chain verifies;
- with the server down, ``/readyz`` says not ready and a write answers a 503 at once (no
  hang); with it back, ``/readyz`` is ready again and writes succeed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from appliance.roles import Role
from appliance.services.audit import audit_log_of
from appliance.services.principal import Principal
from tests.support import free_port, list_every, live_stack, make_services, make_settings

pytestmark = pytest.mark.postgres

PG_BIN = Path(os.environ.get("APPLIANCE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PROBLEM = "application/problem+json"
CLEAR_503 = {"database-unavailable", "database-busy", "audit-unavailable"}
"""The 503 problems a lost or refused database connection may honestly give."""
ANSWER_WITHIN_S = 5.0
"""A write with the server down must answer within this (a refused loopback connection fails
at once; the app's own pool timeout, 30 s by default, is the outer bound it must stay under)."""
RECONNECT_WITHIN_S = 15.0
"""Once the server is back, the pool must serve a write within this."""


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of this module's own, run by the ``postgres`` OS user under root."""

    root: Path
    port: int
    as_owner: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def _run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        # Output goes to a file, never a pipe: a postmaster started here would inherit the
        # pipe and keep it open long after pg_ctl exits.
        out = self.root / "ctl.out"
        with out.open("w") as fh:
            done = subprocess.run(
                [*self.as_owner, *args],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                text=True,
            )
        return subprocess.CompletedProcess(done.args, done.returncode, out.read_text(), "")

    def ctl(self, *args: str, timeout: float = 30) -> None:
        done = self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "20", *args, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed:\n{done.stdout}\n{self.log_tail()}")

    def restart_fast(self) -> None:
        self.ctl("restart", "-m", "fast")

    def crash(self) -> None:
        """SIGQUIT to the postmaster: every backend exits without a checkpoint, as in a crash."""
        self.ctl("stop", "-m", "immediate")

    def start(self) -> None:
        self.ctl("start")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True, connect_timeout=5
        )

    def running(self) -> bool:
        status = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status", timeout=10)
        return status.returncode == 0

    def new_database(self, name: str) -> str:
        if not self.running():  # a failed test before this one may have left it stopped
            self.start()
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


def _start_private_cluster() -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL server binaries are not in {PG_BIN}")
    as_root = os.geteuid() == 0
    if as_root and shutil.which("runuser") is None:
        pytest.skip("runuser (util-linux) is needed to run PostgreSQL as the postgres user")
    # Under /tmp itself, not pytest's root-only (0700) temp tree, which postgres cannot enter.
    root = Path(tempfile.mkdtemp(prefix="appliance-pg-"))
    if as_root:
        try:
            shutil.chown(root, "postgres", "postgres")
        except LookupError:
            shutil.rmtree(root)
            pytest.skip("there is no postgres OS user to run a private PostgreSQL as")
    pg = PrivatePostgres(root, free_port(), ["runuser", "-u", "postgres", "--"] if as_root else [])
    started = False
    try:
        init = pg._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(pg.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",  # initdb's own files: the server's fsync below is what is under test
            "--no-instructions",
            timeout=60,
        )
        if init.returncode != 0:
            if not as_root:
                pytest.skip(f"initdb cannot run here: {init.stdout.strip()[-500:]}")
            raise RuntimeError("initdb failed:\n" + init.stdout)
        with (pg.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# appliance test: a private, loopback-only, durable cluster\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {pg.port}\n"
                f"unix_socket_directories = '{root}'\n"
                "fsync = on\n"
                "synchronous_commit = on\n"
                "full_page_writes = on\n"
                "shared_buffers = 16MB\n"
                "max_connections = 80\n"
                "logging_collector = off\n"
            )
        pg.start()
        started = True
        yield pg
    finally:
        if started:
            with contextlib.suppress(RuntimeError):  # a failed test may have left it stopped
                pg.ctl("stop", "-m", "immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL 15 cluster of this module's own, on a free loopback port."""
    yield from _start_private_cluster()


def _clear_503(r: httpx.Response) -> str:
    """The response is a clear 503 problem; -> its slug."""
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body = r.json()
    slug = str(body["type"]).removeprefix("urn:appliance:problem:")
    assert slug in CLEAR_503, body
    assert body["status"] == 503
    assert "Traceback" not in r.text and "psycopg" not in r.text and ".py" not in r.text, r.text
    assert "127.0.0.1" not in r.text and "postgres" not in r.text.lower(), r.text
    return slug


def _write_succeeds_within(client: httpx.Client, path: str, seconds: float) -> tuple[float, list[int]]:
    """Retry one key creation until it is a 201 -> (seconds taken, statuses before it)."""
    t0 = time.monotonic()
    seen: list[int] = []
    while True:
        r = client.post(path, json={"role": "app", "name": f"retry-{len(seen)}"}, timeout=10)
        if r.status_code == 201:
            return time.monotonic() - t0, seen
        _clear_503(r)
        seen.append(r.status_code)
        if time.monotonic() - t0 > seconds:
            raise AssertionError(f"no write succeeded within {seconds} s of the server's return: {seen}")
        time.sleep(0.2)


def _unhandled(caplog: pytest.LogCaptureFixture) -> list[tuple[object, object, object]]:
    return [
        (getattr(r, "error_type", None), getattr(r, "driver_code", None), getattr(r, "frames", None))
        for r in caplog.records
        if r.getMessage() == "unhandled error"
    ]


def test_when_postgresql_restarts_and_crashes_under_load_then_answers_are_clear_and_nothing_acknowledged_is_lost(
    private_pg: PrivatePostgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Eight clients create keys while the server is restarted (``-m fast``) and then crashed
    (``-m immediate``) and started again, which replays the WAL: each call answers 201 or a
    clear 503 problem (never a 500), a write succeeds soon after each return without any
    help from outside, and every acknowledged key is stored under a verifiable audit chain."""
    url = private_pg.new_database("restart_under_load")
    with live_stack(make_services(make_settings(tmp_path / "data", url))) as s:
        tenant = s.tenant("pgrestart")
        admin_key = s.key(Role.TENANT_ADMIN, tenant)
        keys = f"/admin/v1/tenants/{tenant}/keys"
        answers: list[httpx.Response] = []
        failures: list[BaseException] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client(n: int) -> None:
            with httpx.Client(base_url=s.base_url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=40) as c:
                i = 0
                while not stop.is_set():
                    try:
                        r = c.post(keys, json={"role": "app", "name": f"c{n}-{i}"})
                    except httpx.HTTPError as exc:  # a hang or a dropped HTTP connection
                        with lock:
                            failures.append(exc)
                        return
                    with lock:
                        answers.append(r)
                    i += 1

        def acknowledged_so_far() -> int:
            with lock:
                return sum(r.status_code == 201 for r in answers)

        workers = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(8)]
        for w in workers:
            w.start()
        timings: dict[str, float] = {}
        try:
            time.sleep(0.7)
            before = acknowledged_so_far()
            assert before > 0, "no key was created before the restart"
            t0 = time.monotonic()
            private_pg.restart_fast()
            timings["restart"] = time.monotonic() - t0
            time.sleep(0.7)
            private_pg.crash()
            time.sleep(0.5)  # the clients keep writing to a server that is down
            t0 = time.monotonic()
            private_pg.start()  # crash recovery
            timings["recovery"] = time.monotonic() - t0
            time.sleep(0.7)
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=60)
        assert not any(w.is_alive() for w in workers), "a client was still waiting 60 s after the last restart"
        assert not failures, failures
        statuses = {r.status_code for r in answers}
        assert statuses <= {201, 503}, (sorted(statuses), _unhandled(caplog), [r.text for r in answers][-3:])
        slugs = {_clear_503(r) for r in answers if r.status_code == 503}
        assert acknowledged_so_far() > before, "no key was created once the restarts began"
        assert "database system was not properly shut down" in private_pg.log.read_text(), private_pg.log_tail()

        admin = s.client(admin_key)
        took, _ = _write_succeeds_within(admin, keys, RECONNECT_WITHIN_S)
        acknowledged = {r.json()["key"]["name"] for r in answers if r.status_code == 201}
        stored = {k["name"] for k in list_every(admin, keys)}
        assert acknowledged <= stored, sorted(acknowledged - stored)
        refused = {json.loads(r.request.content)["name"] for r in answers if r.status_code == 503}
        stored_anyway = refused & stored  # committed, but the connection broke before the answer
        verified = audit_log_of(s.services).verify(Principal.local_operator())
        assert verified.ok, verified.detail
        assert not _unhandled(caplog), _unhandled(caplog)
        print(  # for the report: what the clients saw
            f"answers={len(answers)} acknowledged={len(acknowledged)} 503s={sum(r.status_code == 503 for r in answers)}"
            f" slugs={sorted(slugs)} restart={timings['restart']:.2f}s recovery={timings['recovery']:.2f}s"
            f" first write after={took:.2f}s stored despite a 503={len(stored_anyway)}"
        )


def test_while_postgresql_is_down_readyz_says_not_ready_and_writes_answer_503_at_once(
    private_pg: PrivatePostgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the server stopped, ``/readyz`` answers 503 ``not-ready`` (liveness stays 200) and a
    write answers a clear 503 within seconds, not after a hang; once the server is started
    again, ``/readyz`` is ready and a write succeeds without a restart of the appliance."""
    url = private_pg.new_database("down_then_back")
    with live_stack(make_services(make_settings(tmp_path / "data", url))) as s:
        tenant = s.tenant("pgdown")
        admin = s.client(s.key(Role.TENANT_ADMIN, tenant))
        probe = s.client()
        keys = f"/admin/v1/tenants/{tenant}/keys"
        assert admin.post(keys, json={"role": "app", "name": "before"}).status_code == 201
        assert probe.get("/readyz").status_code == 200
        pool_timeout_s = s.services.settings.database.pool_timeout_s
        bound = min(ANSWER_WITHIN_S, pool_timeout_s)

        private_pg.crash()
        try:
            t0 = time.monotonic()
            ready = probe.get("/readyz", timeout=pool_timeout_s + 5)
            readyz_s = time.monotonic() - t0
            assert ready.status_code == 503, ready.text
            assert ready.headers["content-type"].startswith(PROBLEM)
            assert ready.json()["type"] == "urn:appliance:problem:not-ready", ready.text
            assert "127.0.0.1" not in ready.text and "psycopg" not in ready.text
            assert readyz_s < bound, f"/readyz took {readyz_s:.2f} s with the database down"
            assert probe.get("/healthz").status_code == 200  # the process itself is alive

            for i in range(3):  # every attempt, not just the first, answers at once
                t0 = time.monotonic()
                r = admin.post(keys, json={"role": "app", "name": f"down-{i}"}, timeout=pool_timeout_s + 5)
                write_s = time.monotonic() - t0
                assert r.status_code == 503, (r.status_code, r.text, _unhandled(caplog))
                assert _clear_503(r) == "database-unavailable", r.text
                assert r.headers.get("retry-after"), r.headers
                assert write_s < bound, f"a write took {write_s:.2f} s to fail with the database down"
        finally:
            private_pg.start()

        deadline = time.monotonic() + RECONNECT_WITHIN_S
        while (ready := probe.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, f"/readyz not ready {RECONNECT_WITHIN_S} s after the restart"
            time.sleep(0.2)
        assert ready.json() == {"status": "ready", "database": "ok", "migrations": "current"}
        print(f"readyz down={readyz_s:.2f}s write down={write_s:.2f}s")
        _write_succeeds_within(admin, keys, RECONNECT_WITHIN_S)
        names = {k["name"] for k in list_every(admin, keys)}
        assert "before" in names and not any(n.startswith("down-") for n in names), names
        assert not _unhandled(caplog), _unhandled(caplog)
