"""Backups on SQLite and PostgreSQL: backup -> wipe -> restore gives back every record and blob,
decryptable, with an audit chain that verifies; a backup taken while the HTTP API is writing
restores to one consistent moment; a damaged, truncated or foreign archive is refused before
anything is written; a populated installation is replaced only with ``force``; on PostgreSQL
with row-level security, a restore by the tables' owner puts the tenant walls back and one by
the application role is refused."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import func, select, text

from appliance.config import Settings
from appliance.crypto.archive import PREFIX_BYTES
from appliance.crypto.blobs import HEADER_BYTES
from appliance.crypto.keyring import MasterKeyring, new_key
from appliance.db.base import utcnow
from appliance.db.engine import make_engine
from appliance.db.models import ApiKey, AuditEntry, DataKey, Tenant
from appliance.db.tenancy import TENANT_TABLES, tenant_scope, walls_enabled
from appliance.errors import Conflict, IntegrityError, InvalidInput, KeyUnavailable
from appliance.privacy.vault import PseudonymVault
from appliance.roles import Role
from appliance.services.backup import BackupService, check_installation
from appliance.services.container import Services
from appliance.services.principal import Principal
from tests.support import database_url, live_stack, make_services, make_settings, walled_postgres

OP = Principal.local_operator()
CANARY = "Canary Quillfeather"
POLICY = (
    (Path(__file__).resolve().parents[2] / "policies" / "default.yaml")
    .read_text()
    .replace("allow_list: []", f'allow_list: ["{CANARY}"]')
)


def _backup_service(services: Services) -> BackupService:
    return BackupService(services.engine, services.keyring, services.settings.blob_dir, audit=services.audit)


def _new_host(source: Settings, data_dir: Path, url: str) -> Services:
    """A freshly installed host (migrated, empty) holding the same, escrowed master key."""
    return make_services(make_settings(data_dir, url).model_copy(update={"keys": source.keys}))


@dataclass(frozen=True)
class Made:
    tenant_id: str
    slug: str
    token: str
    blob_id: str
    app_key: str


def _populate(services: Services) -> Made:
    """Real content in every sealed column and the blob store, through the services."""
    tenant = services.tenants.create(OP, f"acme-{secrets.token_hex(3)}")
    services.policies.apply(OP, tenant.slug, POLICY, comment=f"allow {CANARY}")
    vault = PseudonymVault(services.sessions, services.data_keys, services.cipher)
    tokens = vault.tokens(tenant.id, "conv-1", [("PERSON", CANARY)], timedelta(days=1))
    services.audit.record(
        "chat.completion",
        actor=OP,
        tenant_id=tenant.id,
        payload=CANARY.encode(),
        payload_expires_at=utcnow() + timedelta(days=1),
    )
    blob = services.blobs.put(tenant.id, "dataset", CANARY.encode() * 5000)
    key = services.api_keys.create(OP, role=Role.APP, name="app", tenant=tenant.slug).api_key
    return Made(tenant.id, tenant.slug, tokens[("PERSON", CANARY)], blob.id, key)


def test_backup_wipe_restore_gives_back_every_record_blob_and_a_verifying_audit_chain(
    backend: str, tmp_path: Path
) -> None:
    with database_url(backend, tmp_path) as url:
        source = make_services(make_settings(tmp_path / "a", url))
        try:
            made = _populate(source)
            archive = tmp_path / "full.apbak"
            info = _backup_service(source).create(archive)
            assert info.blobs == 1 and info.rows["tenants"] == 1 and info.rows["audit_entries"] >= 3
            assert (tmp_path / "full.apbak.sha256").read_text().split()[0] == info.sha256
            raw = archive.read_bytes()
            assert CANARY.encode() not in raw and base64.b64encode(CANARY.encode()) not in raw
        finally:
            source.close()

    # Wipe: a new host with a new database and no blob files; only the escrowed master key is left.
    (tmp_path / "second").mkdir()
    with database_url(backend, tmp_path / "second") as url2:
        target = _new_host(source.settings, tmp_path / "b", url2)
        try:
            report = BackupService(target.engine, target.keyring, target.settings.blob_dir).restore(archive)
            assert report.check.ok, report.check
            assert report.check.records_checked >= 3 and report.check.blobs_checked == 1
            assert target.blobs.read_bytes(made.tenant_id, made.blob_id) == CANARY.encode() * 5000
            vault = PseudonymVault(target.sessions, target.data_keys, target.cipher)
            assert vault.originals(made.tenant_id, "conv-1", [made.token]) == {made.token: CANARY}
            assert CANARY in target.policies.get(OP, made.slug, 1).document
            assert target.audit.verify().ok
            with target.sessions() as s:
                assert s.scalar(select(func.count()).select_from(Tenant)) == 1
                newest = s.scalar(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1))
                assert newest is not None and newest.action == "backup.restore"
            # The restored key works and new rows get fresh ids after the restored ones.
            assert target.api_keys.authenticate(made.app_key).tenant_id == made.tenant_id
            target.tenants.create(OP, "after-restore")
            assert target.audit.verify().ok
        finally:
            target.close()


def test_restore_refuses_a_populated_installation_unless_forced(services: Services, tmp_path: Path) -> None:
    _populate(services)
    backup = _backup_service(services)
    archive = tmp_path / "one.apbak"
    backup.create(archive)
    services.tenants.create(OP, "made-after-backup")
    with pytest.raises(Conflict, match="--force"):
        backup.restore(archive)
    with services.sessions() as s:
        assert s.scalar(select(Tenant.id).where(Tenant.slug == "made-after-backup")) is not None

    report = backup.restore(archive, force=True)
    assert report.replaced_existing and report.check.ok
    fresh = Services(services.settings, services.keyring)
    try:
        with fresh.sessions() as s:
            assert s.scalar(select(Tenant.id).where(Tenant.slug == "made-after-backup")) is None
    finally:
        fresh.close()


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        ("flip a byte in the middle", IntegrityError),
        ("cut the tail", IntegrityError),
        ("keep only the headers", IntegrityError),
        ("rewrite the key id in the header", KeyUnavailable),
    ],
)
def test_a_damaged_archive_is_refused_before_anything_is_written(
    tmp_path: Path, damage: str, error: type[Exception] | tuple[type[Exception], ...]
) -> None:
    settings = make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'a.db'}")
    services = make_services(settings)
    try:
        _populate(services)
        archive = tmp_path / "b.apbak"
        _backup_service(services).create(archive)
        raw = bytearray(archive.read_bytes())
        if damage == "flip a byte in the middle":
            raw[len(raw) // 2] ^= 0x01
        elif damage == "cut the tail":
            del raw[-100:]
        elif damage == "keep only the headers":
            del raw[PREFIX_BYTES + HEADER_BYTES :]
        else:
            raw[8:24] = b"0123456789abcdef"
        archive.write_bytes(bytes(raw))
        before = archive.stat().st_size
        with pytest.raises(error):
            _backup_service(services).restore(archive, force=True)
        assert archive.stat().st_size == before
        assert check_installation(services.engine, services.keyring, settings.blob_dir).ok
        with services.sessions() as s:
            assert s.scalar(select(func.count()).select_from(Tenant)) == 1
    finally:
        services.close()


def test_an_archive_opens_only_with_the_master_key_that_sealed_it(tmp_path: Path) -> None:
    services = make_services(make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'a.db'}"))
    try:
        services.tenants.create(OP, "acme")
        archive = tmp_path / "b.apbak"
        _backup_service(services).create(archive)
        other = BackupService(services.engine, MasterKeyring(new_key()), services.settings.blob_dir)
        with pytest.raises(KeyUnavailable, match="not loaded"):
            other.verify(archive)
        # Listed as a previous key (after a master-key rotation), the old key still opens it.
        rotated = BackupService(
            services.engine, MasterKeyring(new_key(), (services.keyring.current,)), services.settings.blob_dir
        )
        assert rotated.verify(archive).data_keys_unwrapped >= 1
    finally:
        services.close()


def test_a_backup_taken_while_the_api_writes_restores_to_one_consistent_moment(backend: str, tmp_path: Path) -> None:
    """A thread creates tenants and their keys through the real HTTP API the whole time; the
    backup's progress callback (called inside its snapshot after each table chunk) waits for
    the writer to commit more between the tables it reads, so without one snapshot the tables
    would disagree (keys of tenants the dump lacks, tenants without keys)."""
    with database_url(backend, tmp_path) as url:
        services = make_services(make_settings(tmp_path / "a", url))
        settings = services.settings
        with live_stack(services) as stack:
            created: list[str] = []
            stop = threading.Event()
            errors: list[BaseException] = []

            def write() -> None:
                headers = {"Authorization": f"Bearer {stack.operator_key}"}
                with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as client:
                    try:
                        for i in range(200):
                            if stop.is_set():
                                return
                            client.post("/admin/v1/tenants/", json={"name": f"busy-{i}"}).raise_for_status()
                            r = client.post(f"/admin/v1/tenants/busy-{i}/keys", json={"role": "app", "name": "k"})
                            r.raise_for_status()
                            created.append(f"busy-{i}")
                    except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                        errors.append(exc)

            def hold_snapshot(phase: str, done: int, total: int) -> None:
                """After each table chunk, wait until the writer committed one more tenant."""
                if phase == "rows":
                    seen = len(created)
                    deadline = time.monotonic() + 20
                    while len(created) <= seen and time.monotonic() < deadline and not errors:
                        time.sleep(0.005)

            writer = threading.Thread(target=write)
            writer.start()
            try:
                deadline = time.monotonic() + 20
                while len(created) < 3 and time.monotonic() < deadline and not errors:
                    time.sleep(0.01)
                archive = tmp_path / "busy.apbak"
                info = _backup_service(services).create(archive, progress=hold_snapshot)
                after = len(created)
            finally:
                stop.set()
                writer.join(30)
            assert not errors, errors
            assert 3 <= info.rows["tenants"] < after  # writes went on while the snapshot was open

    (tmp_path / "second").mkdir()
    with database_url(backend, tmp_path / "second") as url2:
        target = _new_host(settings, tmp_path / "b", url2)
        try:
            report = BackupService(target.engine, target.keyring, target.settings.blob_dir).restore(archive)
            assert report.check.ok, report.check
            with target.sessions() as s:
                tenants = s.scalars(select(Tenant)).all()
                assert len(tenants) == info.rows["tenants"]
                for t in tenants:  # every tenant arrived with its data key: no half-made tenant
                    assert s.scalar(select(func.count()).select_from(DataKey).where(DataKey.tenant_id == t.id))
                tenant_keys = s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.tenant_id.is_not(None)))
                # Each tenant's key is created just after it: at most the newest one lacks its key.
                assert len(tenants) - 1 <= (tenant_keys or 0) <= len(tenants)
        finally:
            target.close()


@pytest.mark.postgres
def test_a_restore_by_the_tables_owner_puts_the_tenant_walls_back_and_the_app_role_is_refused(
    tmp_path: Path,
) -> None:
    """Restore drops and recreates every table, and the walls (``appliance db enable-rls``) went
    with them; the owner's default grants give the recreated tables back to the app role."""
    with walled_postgres() as (app_url, owner_url, _role):
        app = make_services(make_settings(tmp_path / "data", app_url))
        owner = make_engine(owner_url)
        try:
            made = _populate(app)
            archive = tmp_path / "walled.apbak"
            _backup_service(app).create(archive)

            with pytest.raises(InvalidInput, match="restore as the role that owns the tables"):
                BackupService(app.engine, app.keyring, app.settings.blob_dir).restore(archive, force=True)
            report = BackupService(owner, app.keyring, app.settings.blob_dir).restore(archive, force=True)
            assert report.check.ok, report.check

            with owner.connect() as conn:
                assert walls_enabled(conn)
                forced = set(conn.scalars(text("SELECT relname FROM pg_class WHERE relforcerowsecurity")))
            assert set(TENANT_TABLES) <= forced
            with psycopg.connect(app_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as raw:
                cur = raw.execute("SELECT count(*) FROM tenants")  # no scope declared: the wall shows nothing
                assert cur.fetchone() == (0,)
            fresh = Services(app.settings, app.keyring)  # the app role, global as the services run
            try:
                assert fresh.blobs.read_bytes(made.tenant_id, made.blob_id) == CANARY.encode() * 5000
                vault = PseudonymVault(fresh.sessions, fresh.data_keys, fresh.cipher)
                assert vault.originals(made.tenant_id, "conv-1", [made.token]) == {made.token: CANARY}
                fresh.tenants.create(OP, "after-walled-restore")  # the app role may write the new tables
                with tenant_scope(made.tenant_id), fresh.sessions() as s:
                    slugs = set(s.scalars(select(Tenant.slug)))
                assert slugs == {made.slug}
                assert fresh.audit.verify().ok
            finally:
                fresh.close()
        finally:
            owner.dispose()
            app.close()
