"""Fault injection: what a failing datacenter does to the appliance, for real.

- a sealed model's blob file corrupted on disk, and a model whose files do not load;
- the audit trail that cannot be written (its table renamed away): every write fails closed;
- another process holding SQLite's write lock past the lock timeout;
- a blob write past a file-size limit (``RLIMIT_FSIZE``: the kernel's own ``EFBIG``, which
  the appliance treats like ``ENOSPC``);
- a server process whose data directory fills up (the same limit, set on the process before
  it starts) while clients write, then SIGKILLed mid-write; a fresh start over the same
  files finds a consistent database, an intact audit chain and every acknowledged write.

Each fault must end in a clear RFC 9457 problem (never a 500 ``internal-error``) and leave
everything stored before it readable. Killing the worker and key rotation mid-step is tested
in test_finetune_worker_kill.py and test_key_rotation_kill.py.
"""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from appliance.errors import AuditBusy, StorageFull
from appliance.roles import Role
from appliance.services.audit import audit_log_of
from appliance.services.paging import every
from appliance.services.principal import Principal
from tests.finetune_support import OP, add_tickets, finetune_tenant, tickets_jsonl
from tests.support import (
    MODEL_STORE,
    Stack,
    _pg_admin,
    free_port,
    list_every,
    live_stack,
    make_services,
    make_settings,
    postgres_database,
    renamed_audit_table,
)

PROBLEM = "application/problem+json"


def _blob_files(data_dir: Path) -> set[Path]:
    return {p for p in (data_dir / "blobs").rglob("*") if p.is_file()}


def _clear_problem(r: httpx.Response, status: int, slug: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["type"] == f"urn:appliance:problem:{slug}", body
    assert "Traceback" not in r.text and "/blobs/" not in r.text and ".py" not in r.text


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("faults")
    with live_stack(make_services(make_settings(tmp / "data", f"sqlite:///{tmp / 'faults.db'}"))) as s:
        yield s


@dataclass
class Owned:
    tenant: str
    tenant_id: str
    dataset: str
    app: httpx.Client


def _tenant_with_a_dataset(stack: Stack, prefix: str) -> Owned:
    tenant = finetune_tenant(stack.services, prefix=prefix)
    dataset = add_tickets(stack.services, tenant).id
    tenant_id = stack.services.tenants.get(OP, tenant).id
    return Owned(tenant, tenant_id, dataset, stack.client(stack.key(Role.APP, tenant)))


def _register(stack: Stack, owned: Owned, name: str, weights: Path) -> set[Path]:
    """Register ``weights`` as the tenant's trained classifier ``name``; its new blob files."""
    data_dir = stack.services.settings.data_dir
    before = _blob_files(data_dir)
    stack.services.model_registry.add_version(
        owned.tenant_id, name, "classifier", weights, card={}, job_id=None, dataset_id=None
    )
    return _blob_files(data_dir) - before


def test_when_a_sealed_model_file_is_corrupted_then_calling_it_is_a_clear_problem_and_the_rest_reads(
    stack: Stack, tmp_path: Path
) -> None:
    owned = _tenant_with_a_dataset(stack, "corrupt")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text('{"labels": ["a", "b"]}')
    (weights / "model.safetensors").write_bytes(os.urandom(4096))
    files = _register(stack, owned, "flipped", weights)
    biggest = max(files, key=lambda p: p.stat().st_size)  # the weights file's blob
    raw = bytearray(biggest.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    biggest.write_bytes(bytes(raw))

    for _ in range(2):  # the second call does not find a half-loaded model either
        r = owned.app.post("/v1/classifications", json={"model": "flipped", "input": "refund please"})
        _clear_problem(r, 500, "integrity-error")
        assert "verification" in r.json()["detail"]
    # Everything else of the tenant still reads: its dataset's blob decrypts, its listing answers.
    assert stack.services.datasets.load(owned.tenant_id, owned.dataset).rows
    admin = stack.client(stack.key(Role.TENANT_ADMIN, owned.tenant))
    assert admin.get(f"/admin/v1/tenants/{owned.tenant}/datasets/{owned.dataset}").status_code == 200
    assert admin.get(f"/admin/v1/tenants/{owned.tenant}/models/flipped/card").status_code == 200


def test_when_a_models_files_do_not_load_then_the_call_is_503_model_unavailable(stack: Stack, tmp_path: Path) -> None:
    owned = _tenant_with_a_dataset(stack, "noload")
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text("{not a model config")
    _register(stack, owned, "not-a-model", weights)
    r = owned.app.post("/v1/classifications", json={"model": "not-a-model", "input": "refund please"})
    _clear_problem(r, 503, "model-unavailable")
    assert "not-a-model" in r.json()["detail"]


def _write_requests(stack: Stack, owned: Owned) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(role, method, path, request kwargs): writes that each must record an audit entry."""
    t = owned.tenant
    return [
        ("tenant_admin", "POST", f"/admin/v1/tenants/{t}/keys", {"json": {"role": "app", "name": "never"}}),
        (
            "tenant_admin",
            "POST",
            f"/admin/v1/tenants/{t}/datasets",
            {"params": {"name": "never", "format": "jsonl"}, "content": tickets_jsonl()},
        ),
        ("tenant_admin", "DELETE", f"/admin/v1/tenants/{t}/datasets/{owned.dataset}", {}),
        ("compliance", "POST", f"/admin/v1/tenants/{t}/policy", {"json": {"document": "extends: default\nname: x\n"}}),
        ("operator", "POST", "/admin/v1/tenants", {"json": {"name": f"never-{t}"}}),
    ]


def _state(stack: Stack, owned: Owned) -> dict[str, Any]:
    op = stack.client(stack.operator_key)
    t = owned.tenant
    listings = {
        path: list_every(op, path)
        for path in (f"/admin/v1/tenants/{t}/datasets", f"/admin/v1/tenants/{t}/policy/versions")
    }
    listings["tenants"] = op.get("/admin/v1/tenants").json()
    listings["keys"] = list_every(op, f"/admin/v1/tenants/{t}/keys", include_revoked="true")
    return {  # a key's last use moves with the calls themselves: not stored state
        path: [{k: v for k, v in item.items() if k != "last_used_at"} for item in items]
        for path, items in listings.items()
    }


def test_when_the_audit_trail_cannot_be_written_then_every_write_fails_closed_with_503(stack: Stack) -> None:
    owned = _tenant_with_a_dataset(stack, "noaudit")
    keys = {
        "tenant_admin": stack.key(Role.TENANT_ADMIN, owned.tenant),
        "compliance": stack.key(Role.COMPLIANCE),
        "operator": stack.operator_key,
    }
    before = _state(stack, owned)
    blobs_before = _blob_files(stack.services.settings.data_dir)
    undo = renamed_audit_table(stack.services)
    try:
        answers = [
            (method, path, stack.client(keys[role]).request(method, path, **kw))
            for role, method, path, kw in _write_requests(stack, owned)
        ]
    finally:
        undo()
    for method, path, r in answers:
        assert r.status_code == 503, (method, path, r.text)
        _clear_problem(r, 503, "audit-unavailable")
    # Nothing happened that the trail does not show: no key, dataset, policy or tenant more or less.
    assert _state(stack, owned) == before
    assert _blob_files(stack.services.settings.data_dir) == blobs_before
    assert audit_log_of(stack.services).verify(Principal.local_operator()).ok


def test_when_a_blob_write_hits_the_file_size_limit_then_storage_full_and_no_file_is_left(stack: Stack) -> None:
    owned = _tenant_with_a_dataset(stack, "efbig")
    data_dir = stack.services.settings.data_dir
    before = _blob_files(data_dir)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # Python ignores SIGXFSZ: writes get EFBIG
    try:
        with pytest.raises(StorageFull):
            stack.services.blobs.put(owned.tenant_id, "dataset", os.urandom(256 * 1024))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert _blob_files(data_dir) == before  # the temp file is gone, no row was written
    assert stack.services.datasets.load(owned.tenant_id, owned.dataset).rows


def test_when_another_process_holds_the_write_lock_then_writes_are_503_database_busy_and_work_after(
    tmp_path: Path,
) -> None:
    """A stuck writer (another process, a backup tool) holds SQLite's write lock past the lock
    timeout: the writes that needed it get a retryable 503, reads go on, nothing is half-done."""
    settings = make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'busy.db'}")
    settings = settings.model_copy(update={"database": settings.database.model_copy(update={"lock_timeout_s": 0.2})})
    with live_stack(make_services(settings)) as s:
        tenant = s.tenant("busy")
        admin = s.client(s.key(Role.TENANT_ADMIN, tenant))
        app = s.client(s.key(Role.APP, tenant))
        keys = f"/admin/v1/tenants/{tenant}/keys"
        assert admin.post(keys, json={"role": "app", "name": "before"}).status_code == 201
        listed = list_every(admin, keys)
        locker = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            created = admin.post(keys, json={"role": "app", "name": "while-locked"})
            anonymized = app.post("/v1/privacy/anonymize", json={"text": "Call Anna Berg at anna.berg@example.com"})
            exported = s.client(s.operator_key).post("/admin/v1/audit/export", json={})  # writes a checkpoint
            read = admin.get(keys)
            with pytest.raises(AuditBusy):  # the trail's own write fails closed, and says a retry may work
                s.services.audit.record("tenant.read", actor=Principal.local_operator())
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        for r in (created, anonymized):
            _clear_problem(r, 503, "database-busy")
            assert r.headers["retry-after"] == "1"
        assert exported.status_code == 503, exported.text
        assert exported.headers["retry-after"] == "1"
        assert read.status_code == 200
        assert [k["id"] for k in list_every(admin, keys)] == [k["id"] for k in listed]
        assert admin.post(keys, json={"role": "app", "name": "after"}).status_code == 201
        assert audit_log_of(s.services).verify(Principal.local_operator()).ok


# -- a whole server: the disk fills up, then SIGKILL, then a fresh start ----------------------

FSIZE_LIMIT = 400_000
"""Bytes any one file of the server may reach: start-up fits; a few dozen writes later the
SQLite write-ahead log does not, so the data directory is full while clients still write."""


def _serve(tmp: Path, settings: Any, url: str) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    (tmp / "a.toml").write_text("")
    env.update(
        APPLIANCE_CONFIG=str(tmp / "a.toml"),
        APPLIANCE_DATA_DIR=str(settings.data_dir),
        APPLIANCE_DATABASE__URL=url,
        APPLIANCE_DEV_MODE="true",
        APPLIANCE_KEYS__DEV_MASTER_KEY=settings.keys.dev_master_key,
        APPLIANCE_MODELS__STORE_DIR=str(MODEL_STORE),
    )

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "serve", "--port", str(port), "--no-warmup"],
        env=env,
        stdout=subprocess.DEVNULL,  # a log file would hit the limit too
        stderr=subprocess.DEVNULL,
        preexec_fn=limited,  # only setrlimit, before exec
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the limited server did not become ready")
        time.sleep(0.1)


def test_when_the_disk_fills_and_the_server_is_killed_mid_write_then_a_restart_finds_every_acknowledged_write(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'full.db'}"
    settings = make_settings(tmp_path / "data", url)
    svc = make_services(settings)
    tenant = finetune_tenant(svc, prefix="full")
    admin = svc.api_keys.create(OP, role=Role.TENANT_ADMIN, name="admin", tenant=tenant).api_key
    add_tickets(svc, tenant, name="before")
    svc.close()

    proc, base = _serve(tmp_path, settings, url)
    acknowledged: dict[str, list[str]] = {"keys": [], "datasets": []}
    refused: list[httpx.Response] = []
    stop = threading.Event()
    lock = threading.Lock()

    def writer(n: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 5 == 0:
                        r = c.post(
                            f"/admin/v1/tenants/{tenant}/datasets",
                            params={"name": f"d{n}-{i}", "format": "jsonl"},
                            content=tickets_jsonl(),
                        )
                        kind, ident = "datasets", "id"
                    else:
                        r = c.post(f"/admin/v1/tenants/{tenant}/keys", json={"role": "app", "name": f"k{n}-{i}"})
                        kind, ident = "keys", "key"
                except httpx.TransportError:
                    return  # the server was killed under this request: neither acknowledged nor refused
                with lock:
                    if r.status_code == 201:
                        body = r.json()
                        acknowledged[kind].append(body[ident]["id"] if kind == "keys" else body[ident])
                    else:
                        refused.append(r)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # run until the disk is full, and a little past it
            with lock:
                if len(refused) >= 6:
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # writers are still sending: this kill lands mid-write
        proc.wait(10)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        if proc.poll() is None:
            proc.kill()

    assert acknowledged["keys"], "no write succeeded before the disk was full"
    assert refused, "the disk never filled up"
    for r in refused:  # a full disk is a clear 507 (or the trail's 503), never an internal error
        assert r.status_code in (503, 507), r.text
        assert r.headers["content-type"].startswith(PROBLEM)
        assert r.json()["type"] in ("urn:appliance:problem:storage-full", "urn:appliance:problem:audit-unavailable")

    # Start again over the same files, without the limit: what `appliance serve` builds.
    svc = make_services(settings)
    try:
        with svc.engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        assert svc.schema.readiness() is None
        verified = audit_log_of(svc).verify(Principal.local_operator())
        assert verified.ok, verified.detail
        tenant_id = svc.tenants.get(OP, tenant).id
        listed = {k.id for k in every(lambda cursor: svc.api_keys.list(OP, tenant, cursor=cursor))}
        assert set(acknowledged["keys"]) <= listed
        for ref in ["before", *acknowledged["datasets"]]:  # every stored dataset decrypts in full
            assert len(svc.datasets.load(tenant_id, svc.datasets.get(OP, tenant, ref).id).rows) == 12
        for d in every(
            lambda cursor: svc.datasets.list(OP, tenant, cursor=cursor)
        ):  # and no listed dataset lost its blob
            assert svc.datasets.load(tenant_id, d.id).rows
        svc.api_keys.create(OP, role=Role.APP, name="after", tenant=tenant)  # and it writes again
    finally:
        svc.close()


# -- PostgreSQL drops every connection mid-traffic (what a restart or failover does) ------------


@pytest.mark.postgres
def test_when_postgresql_drops_every_connection_mid_traffic_then_requests_fail_clearly_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every server-side connection of the appliance's database is terminated, three times,
    while eight clients create keys: each call answers 201 or a clear 503 problem (never a
    500), the pool reconnects on its own, and exactly the acknowledged keys are stored under
    a verifiable audit chain. Terminating the backends is what a PostgreSQL restart or a
    failover does to the appliance; the shared test server itself keeps running."""
    with postgres_database() as url:
        name = url.rsplit("/", 1)[1]
        with live_stack(make_services(make_settings(tmp_path / "data", url))) as s:
            tenant = s.tenant("pgdrop")
            admin_key = s.key(Role.TENANT_ADMIN, tenant)
            keys = f"/admin/v1/tenants/{tenant}/keys"
            answers: list[httpx.Response] = []
            lock = threading.Lock()
            stop = threading.Event()

            def client(n: int) -> None:
                with s.client(admin_key) as c:
                    i = 0
                    while not stop.is_set():
                        r = c.post(keys, json={"role": "app", "name": f"c{n}-{i}"})
                        with lock:
                            answers.append(r)
                        i += 1

            workers = [threading.Thread(target=client, args=(n,)) for n in range(8)]
            for w in workers:
                w.start()
            try:
                for _ in range(3):
                    time.sleep(0.7)
                    with _pg_admin() as pg:
                        pg.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = %s AND pid <> pg_backend_pid()",
                            (name,),
                        )
                time.sleep(0.7)
            finally:
                stop.set()
                for w in workers:
                    w.join(timeout=60)
            statuses = {r.status_code for r in answers}
            unhandled = [
                (getattr(r, "error_type", None), getattr(r, "driver_code", None), getattr(r, "frames", None))
                for r in caplog.records
                if r.getMessage() == "unhandled error"
            ]
            assert statuses <= {201, 503}, (sorted(statuses), unhandled)
            assert 201 in statuses
            for r in answers:
                if r.status_code == 503:
                    assert r.headers["content-type"].startswith(PROBLEM)
                    assert "Traceback" not in r.text and "psycopg" not in r.text
            acknowledged = {r.json()["key"]["name"] for r in answers if r.status_code == 201}
            admin = s.client(admin_key)
            assert admin.post(keys, json={"role": "app", "name": "after"}).status_code == 201
            stored = {k["name"] for k in list_every(admin, keys)} - {"test", "after"}
            assert acknowledged <= stored
            assert audit_log_of(s.services).verify(Principal.local_operator()).ok
