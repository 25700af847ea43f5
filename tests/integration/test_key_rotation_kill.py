"""Rotation killed for real: a child process SIGKILLs itself at a chosen step (no ``finally``,
no rollback but the database's own), then the parent checks that everything still decrypts
and that a re-run completes. One kill per kind of step, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from appliance.crypto.keyring import MasterKeyring, new_key
from appliance.db.models import DataKey
from appliance.services.container import Services
from tests.integration.test_key_rotation import OP, _assert_readable, _fresh_keys, _rotation, _versions, _world

CHILD = """
import base64, os, signal, sys
from datetime import timedelta
from appliance.config import load_settings
from appliance.crypto.blobs import BlobStore, MIN_SEGMENT_SIZE
from appliance.crypto.keyring import MasterKeyring
from appliance.services.container import build_services
from appliance.services.key_rotation import KeyRotation
from appliance.services.principal import Principal

mode, target, occurrence, arg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
seen = 0

def checkpoint(step):
    global seen
    if step == target:
        seen += 1
        if seen == occurrence:
            os.kill(os.getpid(), signal.SIGKILL)

svc = build_services(load_settings())
store = BlobStore(svc.settings.blob_dir, svc.data_keys, svc.sessions, segment_size=MIN_SEGMENT_SIZE)
rotation = KeyRotation(svc.sessions, svc.data_keys, store, batch_size=2, grace=timedelta(0))
if mode == "tenant":
    rotation.rotate_tenant(Principal.local_operator(), arg, checkpoint=checkpoint)
else:
    ring = MasterKeyring(base64.b64decode(arg), (svc.keyring.current,))
    rotation.rotate_master(ring, checkpoint=checkpoint)
sys.exit(3)
"""


def _child(services: Services, tmp_path: Path, *args: str) -> int:
    config = tmp_path / "child.toml"
    config.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    s = services.settings
    env |= {
        "APPLIANCE_CONFIG": str(config),
        "APPLIANCE_DATA_DIR": str(s.data_dir),
        "APPLIANCE_DATABASE__URL": s.database_url,
        "APPLIANCE_DEV_MODE": "true",
        "APPLIANCE_KEYS__DEV_MASTER_KEY": s.keys.dev_master_key or "",
    }
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, timeout=120, check=False, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    return proc.returncode


TENANT_STEPS = [
    ("tenant.version-created", 1),
    ("records.batch.pending", 2),
    ("records.batch.committed", 3),
    ("blob.temp-written", 2),
    ("blob.file-swapped", 2),
    ("blob.committed", 1),
    ("tenant.version-destroy.pending", 1),
]


@pytest.mark.parametrize(("step", "occurrence"), TENANT_STEPS)
def test_tenant_rotation_killed_at_a_step_loses_nothing(
    services: Services, tmp_path: Path, step: str, occurrence: int
) -> None:
    w = _world(services)
    _child(services, tmp_path, "tenant", step, str(occurrence), w.slug)
    _assert_readable(services, w, _fresh_keys(services))
    result = _rotation(services, _fresh_keys(services)).rotate_tenant(OP, w.slug)
    assert (result.unreadable, result.kept_versions) == (0, [])
    assert len(_versions(services, w.tenant_id)) == 1
    _assert_readable(services, w, _fresh_keys(services))


@pytest.mark.parametrize(("step", "occurrence"), [("master.rewrap.pending", 2), ("master.rewrap.committed", 1)])
def test_master_rotation_killed_at_a_step_loses_nothing(
    services: Services, tmp_path: Path, step: str, occurrence: int
) -> None:
    worlds = [_world(services) for _ in range(3)]
    new = new_key()
    _child(services, tmp_path, "master", step, str(occurrence), base64.b64encode(new).decode())
    both = MasterKeyring(new, (services.keyring.current,))
    with services.sessions() as session:
        kek_ids = set(session.scalars(select(DataKey.kek_id)))
    assert kek_ids == {services.keyring.current_id, both.current_id}  # really half-way
    for w in worlds:
        _assert_readable(services, w, _fresh_keys(services, both))
    rotation = _rotation(services)
    rotation.rotate_master(both)
    for w in worlds:
        _assert_readable(services, w, _fresh_keys(services, MasterKeyring(new)))
