"""SIGKILL the worker process mid-job and start it again: the job is taken over once its
lease ran out and resumes from its last sealed checkpoint; nothing half-trained is ever
registered, and the job's charge ends at the accountant's epsilon for the whole run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from appliance.db.models import AuditEntry, ModelVersion, PrivacyCharge, RegisteredModel
from appliance.training.worker import SCRATCH_PREFIX
from tests.finetune_support import OP, add_tickets, finetune_tenant, queue_job
from tests.support import MODEL_STORE, make_services, make_settings

pytestmark = pytest.mark.slow
LEASE_S = 3


def _worker(tmp: Path, url: str, key: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    (tmp / "a.toml").write_text("")
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
    )
    return subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "worker", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_killed_worker_leaves_nothing_registered_and_the_restarted_one_resumes_the_job(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'appliance.db'}"
    settings = make_settings(tmp_path / "data", url)
    key = settings.keys.dev_master_key or ""
    services = make_services(settings)
    try:
        tenant = finetune_tenant(services)
        add_tickets(services, tenant)
        job = queue_job(services, tenant, "tickets", epochs=10)  # 30 steps
        first = _worker(tmp_path, url, key)
        try:
            deadline = time.monotonic() + 180
            while (services.finetune.get(OP, tenant, job.id).resumable_from_step or 0) < 2:
                assert first.poll() is None, first.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "the worker never checkpointed"
                time.sleep(0.1)
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)
        killed_at = services.finetune.get(OP, tenant, job.id)
        assert killed_at.state == "running" and killed_at.step < 30
        with services.sessions() as s:  # nothing half-trained is registered
            assert s.scalar(select(func.count()).select_from(ModelVersion)) == 0
            assert s.scalar(select(func.count()).select_from(RegisteredModel)) == 0
        assert list((tmp_path / "scratch").glob(f"{SCRATCH_PREFIX}{first.pid}-*"))  # what the kill left

        time.sleep(LEASE_S + 0.5)  # the dead worker's leases run out
        second = _worker(tmp_path, url, key, "--once", "--json")
        out, err = second.communicate(timeout=300)
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
            assert s.scalar(select(func.count()).select_from(ModelVersion)) == 1
        assert starts[1]["takeover"] is True and starts[1]["resume_from_step"] >= 2
        assert charge is not None and charge.settled and charge.steps == card["steps"] == 30
        assert charge.epsilon == pytest.approx(card["epsilon"])
        assert not list((tmp_path / "scratch").glob(f"{SCRATCH_PREFIX}*"))  # the restart cleared the dead one's
    finally:
        services.close()
