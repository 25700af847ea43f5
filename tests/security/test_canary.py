"""Canary: unique strings sent through every path that stores something must not appear in
any byte at rest: the SQLite file (and its -wal/-shm), a ``pg_dump`` of the PostgreSQL
database, the blob directory, and the log output captured while they ran.

To cover a new storing path, add a function to ``STORING_PATHS``: it receives the context
and a fresh canary string and stores that string the way real callers do.
"""

from __future__ import annotations

import binascii
import io
import json
import logging
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from appliance.crypto.blobs import MIN_SEGMENT_SIZE, BlobStore
from appliance.db.models import Pseudonym
from appliance.roles import Role
from appliance.services.container import Services
from appliance.services.principal import Principal
from tests.support import running_server
from tests.unit.crypto.factories import create_sealed_rows

OP = Principal.local_operator()


@dataclass
class Ctx:
    services: Services
    http: httpx.Client  # authenticated as operator
    tenant_id: str
    tenant_slug: str
    app_key: str
    compliance_key: str
    stored: list[str] = field(default_factory=list)
    samples: dict[str, bytes] = field(default_factory=dict)
    """Plaintext bytes a storing path produced (checkpoint slices) that must not be at rest either."""


StoringPath = Callable[[Ctx, str], None]


def sealed_columns(ctx: Ctx, canary: str) -> None:
    create_sealed_rows(ctx.services, ctx.tenant_id, canary.encode())


def blob_store_small(ctx: Ctx, canary: str) -> None:
    store = BlobStore(ctx.services.settings.blob_dir, ctx.services.data_keys, ctx.services.sessions)
    store.put(ctx.tenant_id, "dataset", canary.encode())


def blob_store_streamed_across_segments(ctx: Ctx, canary: str) -> None:
    store = BlobStore(
        ctx.services.settings.blob_dir, ctx.services.data_keys, ctx.services.sessions, segment_size=MIN_SEGMENT_SIZE
    )
    line = (canary + "\n").encode()
    store.put(ctx.tenant_id, "dataset", (line for _ in range(3 * MIN_SEGMENT_SIZE // len(line) + 2)))


def policy_via_http(ctx: Ctx, canary: str) -> None:
    preset = ctx.http.get("/admin/v1/policy-tools/presets/default")
    document = preset.text if preset.status_code == 200 else ""
    if not document:
        document = (Path(__file__).parents[2] / "policies" / "default.yaml").read_text()
    body = {"document": f"{document}\n# {canary}\n", "comment": f"approved by {canary}"}
    r = ctx.http.post(
        f"/admin/v1/tenants/{ctx.tenant_slug}/policy",
        json=body,
        headers={"Authorization": f"Bearer {ctx.compliance_key}"},
    )
    assert r.status_code in (200, 201), r.text


def rejected_requests_via_http(ctx: Ctx, canary: str) -> None:
    """Bodies that are refused must not be stored or logged either."""
    app = httpx.Client(base_url=str(ctx.http.base_url), headers={"Authorization": f"Bearer {ctx.app_key}"})
    with app:
        for client, method, path, body in (
            (app, "POST", "/v1/chat/completions", {"model": "x", "messages": [{"role": "user", "content": canary}]}),
            (app, "POST", "/v1/embeddings", {"model": "x", "input": canary}),
            (app, "POST", "/v1/classifications", {"model": "x", "input": canary}),
            (ctx.http, "POST", f"/admin/v1/tenants/{ctx.tenant_slug}/keys", {"role": canary, "name": canary}),
            (ctx.http, "POST", f"/admin/v1/tenants/{ctx.tenant_slug}/policy", {"document": canary}),
            (ctx.http, "GET", f"/admin/v1/tenants/{canary}", None),
        ):
            r = client.request(method, path, json=body)
            assert r.status_code < 500, (path, r.status_code)
    r = httpx.get(f"{ctx.http.base_url}/v1/models", headers={"Authorization": f"Bearer apl_{canary}"})
    assert r.status_code == 401


def pseudonymized_model_input_via_http(ctx: Ctx, canary: str) -> None:
    """A served call whose input holds an e-mail address: the pseudonym vault keeps the
    original (sealed) so answers can be restored, and the audit trail counts it."""
    app = httpx.Client(base_url=str(ctx.http.base_url), headers={"Authorization": f"Bearer {ctx.app_key}"}, timeout=120)
    with app:
        r = app.post(
            "/v1/embeddings",
            json={"model": "all-minilm-l6-v2", "input": f"Please write to {canary.lower()}@example.org today."},
        )
    assert r.status_code == 200, r.text
    with ctx.services.sessions() as s:  # the original really went into the vault
        assert s.scalar(select(func.count()).select_from(Pseudonym).where(Pseudonym.tenant_id == ctx.tenant_id))


def finetune_dataset_job_and_checkpoints(ctx: Ctx, canary: str) -> None:
    """A dataset whose rows and labels hold the canary, uploaded over HTTP and trained by the
    worker with a sealed checkpoint after every step: neither a row, a label (also in the
    trained model's config) nor a byte of any checkpoint may be found at rest, and the
    worker's scratch directory is empty afterwards."""
    from appliance.services.finetune_queue import DbJobStore
    from appliance.training import train
    from appliance.training.worker import Worker

    services = ctx.services
    policy = "extends: default\nfinetune:\n  allowed: true\n"
    compliance = {"Authorization": f"Bearer {ctx.compliance_key}"}
    r = ctx.http.post(f"/admin/v1/tenants/{ctx.tenant_slug}/policy", json={"document": policy}, headers=compliance)
    assert r.status_code in (200, 201), r.text
    admin_key = services.api_keys.create(OP, role=Role.TENANT_ADMIN, name="canary admin", tenant=ctx.tenant_slug)
    admin = {"Authorization": f"Bearer {admin_key.api_key}"}
    rows = "".join(json.dumps({"text": f"{canary} ticket {i}", "label": f"{canary}-{i % 2}"}) + "\n" for i in range(12))
    up = ctx.http.post(
        f"/admin/v1/tenants/{ctx.tenant_slug}/datasets?name=canary",
        content=rows.encode(),
        headers={**admin, "content-type": "application/jsonl"},
    )
    assert up.status_code == 201, up.text
    body = {"dataset": "canary", "task": "classifier", "output_model": "canary-clf", "target_epsilon": 1.0}
    job = ctx.http.post(
        f"/admin/v1/tenants/{ctx.tenant_slug}/finetune/jobs", json={**body, "epochs": 2, "batch_size": 4}, headers=admin
    )
    assert job.status_code == 201, job.text
    training = services.settings.training.model_copy(update={"checkpoint_every_steps": 1})
    store = DbJobStore(
        services.sessions,
        services.blobs,
        services.audit,
        services.privacy_budget,
        services.datasets,
        policies=services.policies.effective,
        registry=lambda: services.model_registry,
        store=lambda: services.model_store,
        training=training,
    )
    keep = store.checkpoint

    def recording(claimed: Any, step: int, state: bytes) -> None:
        middle = len(state) // 2
        ctx.samples[f"checkpoint {step} [64 bytes]"] = state[middle : middle + 64]
        keep(claimed, step, state)

    store.checkpoint = recording  # type: ignore[method-assign]
    scratch = services.settings.data_dir / "scratch"
    outcomes: list[str] = []
    Worker(store, train, lease_s=30, poll_s=0.1, scratch=scratch).run(
        once=True, on_job=lambda _j, o: outcomes.append(o)
    )
    assert outcomes == ["succeeded"]
    assert len(ctx.samples) >= 2
    assert not any(scratch.iterdir()), "the worker left plaintext model files behind"


STORING_PATHS: list[StoringPath] = [
    sealed_columns,
    blob_store_small,
    blob_store_streamed_across_segments,
    policy_via_http,
    rejected_requests_via_http,
    pseudonymized_model_input_via_http,
    finetune_dataset_job_and_checkpoints,
]


def _needles(canary: str) -> list[bytes]:
    raw = canary.encode()
    return [raw, raw.lower(), canary.encode("utf-16-le"), binascii.hexlify(raw)]


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Everything logged (any logger, DEBUG and up, with extras) while the test runs."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    # The test's own HTTP client logs the URLs it requests; the server's logs are what count.
    handler.addFilter(lambda record: not record.name.startswith(("httpx", "httpcore")))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _storage_bytes(services: Services, tmp_path: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    url = make_url(services.settings.database_url)
    if url.get_backend_name() == "sqlite":
        db = Path(url.database or "")
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = Path(f"{db}{suffix}")
            if path.exists():
                found[path.name] = path.read_bytes()
    else:
        pg_dump = shutil.which("pg_dump")
        assert pg_dump, "pg_dump is needed for the PostgreSQL canary"
        dump = subprocess.run(
            [
                pg_dump,
                "--no-owner",
                "-h",
                url.host or "127.0.0.1",
                "-p",
                str(url.port or 5432),
                "-U",
                url.username or "postgres",
                url.database or "",
            ],
            capture_output=True,
            check=True,
            timeout=120,
        )
        found["pg_dump"] = dump.stdout
        assert b"COPY public.policy_versions" in dump.stdout
    for path in sorted(services.settings.blob_dir.rglob("*")):
        if path.is_file():
            found[f"blob:{path.relative_to(services.settings.blob_dir)}"] = path.read_bytes()
    return found


def test_canaries_sent_through_every_storing_path_appear_nowhere_at_rest(
    services: Services, tmp_path: Path, logs: io.StringIO
) -> None:
    with running_server(services) as base_url:
        operator = services.api_keys.create(OP, role=Role.OPERATOR, name="canary op").api_key
        tenant = services.tenants.create(OP, "canary-tenant")
        app_key = services.api_keys.create(OP, role=Role.APP, name="canary app", tenant=tenant.slug).api_key
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {operator}"}, timeout=30) as http:
            compliance = services.api_keys.create(OP, role=Role.COMPLIANCE, name="canary compliance").api_key
            ctx = Ctx(services, http, tenant.id, tenant.slug, app_key, compliance)
            canaries = {}
            for path in STORING_PATHS:
                canary = f"CANARY-{path.__name__}-7f3a9c1e2b"
                canaries[canary] = path.__name__
                path(ctx, canary)
    services.engine.dispose()  # release connections so the files are settled before reading them
    storage = _storage_bytes(services, tmp_path)
    storage["logs"] = logs.getvalue().encode()
    assert any(name.startswith("blob:") for name in storage)
    assert storage["logs"].count(b"\n") >= 3, "no log output captured: the log search would prove nothing"
    hits = [
        (canaries[c], where)
        for c in canaries
        for where, data in storage.items()
        for needle in _needles(c)
        if needle in data
    ]
    leaked_lines = [line for line in storage["logs"].decode().splitlines() if "CANARY" in line]
    assert hits == [], leaked_lines
    sample_hits = [
        (name, where) for name, sample in ctx.samples.items() for where, data in storage.items() if sample in data
    ]
    assert sample_hits == []


def test_the_search_would_find_a_plaintext_leak(services: Services, tmp_path: Path) -> None:
    """The detector itself: a value stored in the clear is found in the same bytes."""
    leak = "CANARY-plaintext-control-5e1d"
    services.tenants.create(OP, "leaky", display_name=leak)  # display names are not sealed
    store = BlobStore(services.settings.blob_dir, services.data_keys, services.sessions)
    store.put(services.tenants.get(OP, "leaky").id, "dataset", b"x")
    services.engine.dispose()
    storage = _storage_bytes(services, tmp_path)
    assert any(needle in data for data in storage.values() for needle in _needles(leak))
