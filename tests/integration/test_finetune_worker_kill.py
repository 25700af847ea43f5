"""SIGKILL the worker process mid-job and start it again: the job is taken over once its
lease ran out and resumes from its last sealed checkpoint; nothing half-trained is ever
registered, and the job's charge ends at the accountant's epsilon for the whole run.

The worker kills itself at exact points (:mod:`tests.integration.worker_crash`): after a
given step's checkpoint, and on either side of the commit that registers the model. After
each kill and each restart, a canary string planted in the dataset is searched for in every
byte the processes could have left: the database files, the data directory (blobs), the
scratch directory, the workers' temp directory, ``/dev/shm`` and the workers' logs.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select

from appliance.db.models import AuditEntry, Blob, FinetuneJob, ModelVersion, PrivacyCharge, RegisteredModel
from appliance.services.container import Services
from appliance.training.accounting import epsilon_of
from appliance.training.engine import _derive
from appliance.training.worker import SCRATCH_PREFIX
from tests.finetune_support import OP, TICKETS, finetune_tenant, queue_job, tickets_jsonl
from tests.support import MODEL_STORE, make_services, make_settings

pytestmark = pytest.mark.slow
LEASE_S = 3
REPO = Path(__file__).parents[2]
SHM = Path("/dev/shm")  # searched, not written: the default scratch and any shared memory
MAX_FILE = 512 << 20


def _worker(tmp: Path, url: str, key: str, *args: str, crash_at: str | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    (tmp / "a.toml").write_text("")
    (tmp / "tmp").mkdir(exist_ok=True)
    env.update(
        APPLIANCE_CONFIG=str(tmp / "a.toml"),
        APPLIANCE_DATA_DIR=str(tmp / "data"),
        APPLIANCE_DEV_MODE="true",
        APPLIANCE_KEYS__DEV_MASTER_KEY=key,
        APPLIANCE_DATABASE__URL=url,
        APPLIANCE_MODELS__STORE_DIR=str(MODEL_STORE),
        APPLIANCE_TRAINING__LEASE_S=str(LEASE_S),
        APPLIANCE_TRAINING__POLL_INTERVAL_S="0.2",
        APPLIANCE_TRAINING__CHECKPOINT_EVERY_STEPS="1",
        APPLIANCE_TRAINING__SCRATCH_DIR=str(tmp / "scratch"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TMPDIR=str(tmp / "tmp"),  # whatever the worker's libraries spill goes where it is searched
    )
    entry = ["-m", "tests.integration.worker_crash", crash_at] if crash_at else ["-m", "appliance.cli"]
    return subprocess.Popen(
        [sys.executable, *entry, "worker", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _killed(worker: subprocess.Popen[str], logs: list[str]) -> None:
    """Wait for a worker started with ``crash_at`` to kill itself; keep what it logged."""
    try:
        out, err = worker.communicate(timeout=300)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    logs += [out, err]
    assert worker.returncode == -signal.SIGKILL, err[-3000:]


def _canary_dataset(services: Services, tenant: str) -> str:
    """The tickets dataset with a fresh canary in every text and label; returns the canary."""
    canary = f"CANARY-kill-{secrets.token_hex(5)}"
    rows = [(f"{text} {canary}", f"{label}-{canary}") for text, label in TICKETS]
    services.datasets.add(OP, tenant, "tickets", tickets_jsonl(rows), fmt="jsonl")
    return canary


def _files(root: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for top, _dirs, files in os.walk(root, onerror=lambda _e: None):
        for name in files:
            path = Path(top) / name
            try:
                if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_FILE:
                    continue
                found[str(path)] = path.read_bytes()
            except OSError:
                continue  # another process's file went away or is not ours to read
    return found


def _where_canary(canary: str, tmp: Path, logs: list[str]) -> list[str]:
    """Every place the canary is found in: the database file (and -wal, -shm), the data
    directory, scratch and temp directories (all under ``tmp``), /dev/shm, the logs."""
    raw = canary.encode()
    return _where_found((raw, raw.lower(), canary.encode("utf-16-le"), raw.hex().encode()), tmp, logs)


def _where_found(needles: tuple[bytes, ...], tmp: Path, logs: list[str]) -> list[str]:
    places = {**_files(tmp), **_files(SHM), **{f"log {i}": text.encode() for i, text in enumerate(logs)}}
    assert any(p.endswith("appliance.db") for p in places) and any("/data/" in p for p in places)
    return sorted(where for where, data in places.items() if any(n in data for n in needles))


def _secret_forms(services: Services, tenant: str, job_id: str) -> tuple[bytes, ...]:
    """The job's run secret, read from its sealed checkpoint with the tenant's key, and the
    generator seeds derived from it, in every form they could be written: decimal, hex, and
    the 8 raw bytes either way round."""
    with services.sessions() as s:
        row = s.get(FinetuneJob, job_id)
        assert row is not None and row.checkpoint_blob
        blob = row.checkpoint_blob
    state = services.blobs.read_bytes(services.tenants.get(OP, tenant).id, blob)
    secret = int(torch.load(io.BytesIO(state), weights_only=True)["secret"])
    seeds = [secret, _derive(secret, "noise", 0), *(_derive(secret, "batches", e, 0) for e in range(10))]
    forms: list[bytes] = []
    for n in seeds:
        forms += [str(n).encode(), f"{n:x}".encode(), n.to_bytes(8, "little"), n.to_bytes(8, "big")]
    return tuple(forms)


def _services(tmp: Path) -> tuple[Services, str, str]:
    url = f"sqlite:///{tmp / 'appliance.db'}"
    settings = make_settings(tmp / "data", url)
    return make_services(settings), url, settings.keys.dev_master_key or ""


def _count(services: Services, model: type[ModelVersion | RegisteredModel]) -> int:
    with services.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_a_killed_worker_leaves_nothing_registered_and_the_restarted_one_resumes_the_job(tmp_path: Path) -> None:
    services, url, key = _services(tmp_path)
    logs: list[str] = []
    try:
        tenant = finetune_tenant(services)
        canary = _canary_dataset(services, tenant)
        job = queue_job(services, tenant, "tickets", epochs=10)  # 30 steps
        first = _worker(tmp_path, url, key, crash_at="checkpoint:2")
        _killed(first, logs)
        killed_at = services.finetune.get(OP, tenant, job.id)
        assert killed_at.state == "running" and killed_at.resumable_from_step == 2
        with services.sessions() as s:
            charge = s.scalar(select(PrivacyCharge).where(PrivacyCharge.job_id == job.id))
        assert charge is not None and not charge.settled
        assert charge.steps == 2  # exactly the steps that ran, though progress is written once a second
        assert _count(services, ModelVersion) == _count(services, RegisteredModel) == 0  # nothing half-trained
        assert list((tmp_path / "scratch").glob(f"{SCRATCH_PREFIX}{first.pid}-*"))  # what the kill left
        assert _where_canary(canary, tmp_path, logs) == []
        # The run's secret (it seeds the noise and the batches) is only in the sealed checkpoint.
        secret = _secret_forms(services, tenant, job.id)
        assert _where_found(secret, tmp_path, logs) == []

        time.sleep(LEASE_S + 0.5)  # the dead worker's leases run out
        second = _worker(tmp_path, url, key, "--once", "--json")
        out, err = second.communicate(timeout=300)
        logs += [out, err]
        assert second.returncode == 0, err[-3000:]
        assert json.loads(out)["jobs"] == [{"job": job.id, "outcome": "succeeded"}]

        done = services.finetune.get(OP, tenant, job.id)
        assert (done.state, done.step, done.attempts, done.model_version) == ("succeeded", 30, 2, 1)
        card = services.model_versions.card(OP, tenant, "tickets-clf").card
        with services.sessions() as s:
            starts = [
                json.loads(f)
                for f in s.scalars(select(AuditEntry.facts).where(AuditEntry.action == "finetune.job.start"))
            ]
            charge = s.scalar(select(PrivacyCharge).where(PrivacyCharge.job_id == job.id))
        assert _count(services, ModelVersion) == 1
        assert starts[1]["takeover"] is True and starts[1]["resume_from_step"] == 2
        assert charge is not None and charge.settled and charge.steps == card["steps"] == 30
        assert charge.epsilon == pytest.approx(card["epsilon"])
        assert not list((tmp_path / "scratch").glob(f"{SCRATCH_PREFIX}*"))  # the restart cleared the dead one's
        services.engine.dispose()
        assert _where_canary(canary, tmp_path, logs) == []
        assert _where_found(secret, tmp_path, logs) == []
        assert not any(form in json.dumps(card).encode() for form in secret)
    finally:
        services.close()


@pytest.mark.parametrize(
    "crash_at",
    [
        pytest.param("registering", id="before-the-registration-commits"),
        pytest.param("registered", id="right-after-the-registration-committed"),
    ],
)
def test_a_worker_killed_while_registering_leaves_one_version_and_a_finished_job(tmp_path: Path, crash_at: str) -> None:
    """The version and the job's end commit together: killed before, the job is trained again
    and registered once; killed after, the job is already done and nothing runs again."""
    services, url, key = _services(tmp_path)
    logs: list[str] = []
    try:
        tenant = finetune_tenant(services)
        canary = _canary_dataset(services, tenant)
        job = queue_job(services, tenant, "tickets")  # 3 steps
        _killed(_worker(tmp_path, url, key, crash_at=crash_at), logs)
        killed_at = services.finetune.get(OP, tenant, job.id)
        if crash_at == "registering":  # nothing half-registered: no version, no served model
            assert killed_at.state == "running" and killed_at.model_version is None
            assert _count(services, ModelVersion) == _count(services, RegisteredModel) == 0
        else:  # the model is served only with its job finished
            assert (killed_at.state, killed_at.model_version) == ("succeeded", 1)
            assert _count(services, ModelVersion) == _count(services, RegisteredModel) == 1
        # The one plaintext a kill here leaves (and the proof that the search finds it): the
        # trained model's files, whose config names the labels, in the dead worker's scratch
        # directory (in memory, /dev/shm, unless configured), removed when the next one starts.
        left = _where_canary(canary, tmp_path, logs)
        assert left and all(p.startswith(str(tmp_path / "scratch" / SCRATCH_PREFIX)) for p in left), left

        time.sleep(LEASE_S + 0.5)
        again = _worker(tmp_path, url, key, "--once", "--json")
        out, err = again.communicate(timeout=300)
        logs += [out, err]
        assert again.returncode == 0, err[-3000:]
        ran = json.loads(out)["jobs"]
        assert ran == ([{"job": job.id, "outcome": "succeeded"}] if crash_at == "registering" else [])

        done = services.finetune.get(OP, tenant, job.id)
        assert (done.state, done.model_version) == ("succeeded", 1)
        with services.sessions() as s:
            versions = list(s.scalars(select(ModelVersion)))
            charge = s.scalar(select(PrivacyCharge).where(PrivacyCharge.job_id == job.id))
            row = s.get(FinetuneJob, job.id)
        assert [(v.version, v.job_id) for v in versions] == [(1, job.id)]
        tenant_id = versions[0].tenant_id
        assert services.model_registry.get("tickets-clf", tenant_id).source == versions[0].source
        assert row is not None and charge is not None and charge.settled and charge.steps == 3
        assert charge.epsilon == pytest.approx(epsilon_of([(row.noise_multiplier, row.sample_rate, 3)], row.delta))

        # What a kill before the commit left is sealed and unreferenced: maintenance sweeps it.
        swept = services.model_registry.sweep_sealed(older_than=timedelta(0))
        assert (swept > 0) == (crash_at == "registering")
        with services.sessions() as s:
            manifests = s.scalar(select(func.count()).select_from(Blob).where(Blob.kind == "model-manifest"))
        assert manifests == 1
        assert not list((tmp_path / "scratch").glob(f"{SCRATCH_PREFIX}*"))
        services.engine.dispose()
        assert _where_canary(canary, tmp_path, logs) == []
    finally:
        services.close()
