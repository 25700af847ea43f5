"""Key rotation, safe to kill at any point and to re-run.

``rotate_master`` re-wraps each DEK row under a new master key, one row per transaction:
every row is always wrapped by either the old or the new KEK, and a process that has both
loaded (current plus ``previous``) reads them all. A re-run skips rows already on the new KEK.

``rotate_tenant`` starts a new data-key version (new writes use it at once), re-encrypts the
tenant's sealed columns (batches, one transaction each) and blob files (new file atomically
over the old one, then the row) to that version, and only then destroys older versions that
nothing references any more. Until that last step every version any ciphertext names still
exists, so no record or blob is ever unreadable. A re-run finishes an interrupted rotation
instead of starting another one.

``checkpoint`` is called with a step name after every durable step (and before every
commit); it is the seam tests use to cut a rotation short at each step in turn.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from appliance.crypto.blobs import BlobStore
from appliance.crypto.data_keys import DataKeyService
from appliance.crypto.keyring import MasterKeyring
from appliance.crypto.records import DATA_PURPOSE, TenantCipher
from appliance.crypto.sealed_columns import SEALED_COLUMNS, not_version, sealed_version
from appliance.db.base import utcnow
from appliance.db.engine import transaction
from appliance.db.models import Blob, DataKey, Tenant
from appliance.errors import ApplianceError, IntegrityError, KeyUnavailable
from appliance.roles import Role
from appliance.services.principal import Principal
from appliance.services.tenants import find_tenant

Checkpoint = Callable[[str], None]
Progress = Callable[[str, int, int], None]  # phase, done, total


def _no_checkpoint(_step: str) -> None:
    return None


def _no_progress(_phase: str, _done: int, _total: int) -> None:
    return None


@dataclass(frozen=True)
class MasterRotation:
    kek_id: str
    rewrapped: int
    total: int


@dataclass
class TenantRotation:
    tenant: str
    version: int
    resumed: bool
    records: int = 0
    blobs: int = 0
    unreadable: int = 0
    destroyed_versions: list[int] = field(default_factory=list)
    kept_versions: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class KeyVersionStatus:
    tenant: str | None
    scope: str
    purpose: str
    version: int
    state: str
    kek_id: str
    on_current_kek: bool
    created_at: datetime
    retired_at: datetime | None
    age_days: float
    encryptions: int
    records: int
    blobs: int


@dataclass(frozen=True)
class KeyStatus:
    master_kek_id: str
    rows_on_old_kek: int
    keys: list[KeyVersionStatus]


class KeyRotation:
    """Rotation and key status over one database and blob store."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        data_keys: DataKeyService,
        blobs: BlobStore,
        *,
        batch_size: int = 200,
        grace: timedelta | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._sessions = sessions
        self._keys = data_keys
        self._cipher = TenantCipher(data_keys)
        self._blobs = blobs
        self._batch = batch_size
        # Other processes may keep sealing with a retired version for one budget TTL.
        self._grace = grace if grace is not None else timedelta(seconds=2.5 * data_keys.budget_ttl_s)
        self._sleep = sleep

    # -- master key -------------------------------------------------------------------

    def rotate_master(
        self, new_ring: MasterKeyring, *, checkpoint: Checkpoint = _no_checkpoint, progress: Progress = _no_progress
    ) -> MasterRotation:
        """Re-wrap every DEK under ``new_ring.current``; ``new_ring.previous`` must hold the old KEK(s)."""
        with self._sessions() as session:
            todo = list(
                session.scalars(select(DataKey.id).where(DataKey.kek_id != new_ring.current_id).order_by(DataKey.id))
            )
            total = int(session.scalar(select(func.count()).select_from(DataKey)) or 0)
        done = total - len(todo)
        progress("master", done, total)
        rewrapped = 0
        for row_id in todo:
            with transaction(self._sessions) as session:
                row = session.get(DataKey, row_id, with_for_update=True)
                if row is not None and self._keys.rewrap(session, row, new_ring):
                    rewrapped += 1
                checkpoint("master.rewrap.pending")
            checkpoint("master.rewrap.committed")
            done += 1
            progress("master", done, total)
        return MasterRotation(new_ring.current_id, rewrapped, total)

    # -- tenant data key --------------------------------------------------------------

    def rotate_tenant(
        self,
        principal: Principal,
        tenant_ref: str,
        *,
        keep_old: bool = False,
        checkpoint: Checkpoint = _no_checkpoint,
        progress: Progress = _no_progress,
    ) -> TenantRotation:
        principal.require(Role.OPERATOR)
        with self._sessions() as session:
            tenant = find_tenant(session, principal, tenant_ref)
            tenant_id, slug = tenant.id, tenant.slug
            versions = self._versions(session, tenant_id)
        active = next((v for v, retired in versions.items() if retired is None), None)
        in_use = {v for v, n in self.references(tenant_id).items() if n and v != active}
        retired = {v for v, r in versions.items() if r is not None}
        resume = active is not None and bool(in_use or (retired and not keep_old))
        if not resume:
            with transaction(self._sessions) as session:
                active = self._keys.create(session, tenant_id, DATA_PURPOSE, tenant_id)
            checkpoint("tenant.version-created")
        assert active is not None
        result = TenantRotation(slug, active, resume)
        self._migrate(tenant_id, active, result, checkpoint, progress)
        if keep_old:
            return result
        self._wait_for_grace(tenant_id, progress)
        self._migrate(tenant_id, active, result, checkpoint, progress)  # stragglers sealed during the grace
        refs = self.references(tenant_id)
        with self._sessions() as session:
            old = sorted(v for v in self._versions(session, tenant_id) if v != active)
        for version in old:
            if refs.get(version):
                result.kept_versions.append(version)
                continue
            with transaction(self._sessions) as session:
                self._keys.destroy_version(session, tenant_id, DATA_PURPOSE, version)
                checkpoint("tenant.version-destroy.pending")
            checkpoint("tenant.version-destroyed")
            result.destroyed_versions.append(version)
        return result

    def _versions(self, session: Session, tenant_id: str) -> dict[int, datetime | None]:
        rows = session.execute(
            select(DataKey.version, DataKey.retired_at).where(
                DataKey.scope == tenant_id, DataKey.purpose == DATA_PURPOSE
            )
        )
        return {int(v): r for v, r in rows}

    def _wait_for_grace(self, tenant_id: str, progress: Progress) -> None:
        with self._sessions() as session:
            newest = session.scalar(
                select(func.max(DataKey.retired_at)).where(
                    DataKey.scope == tenant_id, DataKey.purpose == DATA_PURPOSE, DataKey.retired_at.is_not(None)
                )
            )
        if newest is None:
            return
        newest = newest.replace(tzinfo=utcnow().tzinfo) if newest.tzinfo is None else newest
        wait = (newest + self._grace - utcnow()).total_seconds()
        total = max(1, int(wait + 0.999))
        while wait > 0:
            progress("waiting", total - int(wait + 0.999), total)
            self._sleep(min(wait, 1.0))
            wait = (newest + self._grace - utcnow()).total_seconds()
        progress("waiting", total, total)

    def _migrate(
        self, tenant_id: str, version: int, result: TenantRotation, checkpoint: Checkpoint, progress: Progress
    ) -> None:
        with self._sessions() as session:
            total = sum(
                int(
                    session.scalar(
                        select(func.count())
                        .select_from(sc.model)
                        .where(sc.tenant_column == tenant_id, not_version(sc.column, version))
                    )
                    or 0
                )
                for sc in SEALED_COLUMNS
            )
            blob_ids = list(
                session.scalars(
                    select(Blob.id).where(Blob.tenant_id == tenant_id, Blob.key_version != version).order_by(Blob.id)
                )
            )
        done = 0
        progress("records", done, total)
        for sc in SEALED_COLUMNS:
            last_id: Any = None  # integer or UUID-string ids: page by whatever the table uses
            while True:
                after = [sc.id_column > last_id] if last_id is not None else []
                with transaction(self._sessions) as session:
                    rows = list(
                        session.scalars(
                            select(sc.model)
                            .where(
                                sc.tenant_column == tenant_id,
                                not_version(sc.column, version),
                                *after,
                            )
                            .order_by(sc.id_column)
                            .limit(self._batch)
                            .with_for_update()
                        )
                    )
                    if not rows:
                        break
                    sealed = 0
                    for obj in rows:
                        last_id = obj.id  # type: ignore[attr-defined]
                        try:
                            plaintext = sc.open(self._cipher, obj)
                        except (IntegrityError, KeyUnavailable):
                            result.unreadable += 1  # left as it is; its version is then kept
                            continue
                        assert plaintext is not None
                        value = self._cipher.seal_with_version(tenant_id, sc.kind, sc.row(obj), plaintext, version)
                        setattr(obj, sc.attribute, value)
                        sealed += 1
                    self._count_encryptions(session, tenant_id, version, sealed)
                    checkpoint("records.batch.pending")
                result.records += sealed
                checkpoint("records.batch.committed")
                done += len(rows)
                progress("records", min(done, total), total)
        progress("blobs", 0, len(blob_ids))
        for i, blob_id in enumerate(blob_ids, 1):
            try:
                changed = self._blobs.reencrypt(tenant_id, blob_id, version, checkpoint)
            except (IntegrityError, KeyUnavailable):
                result.unreadable += 1
                continue
            except ApplianceError:
                continue  # deleted while we ran
            if changed:
                result.blobs += 1
                self._count_encryptions_tx(tenant_id, version, 1)
            checkpoint("blob.committed")
            progress("blobs", i, len(blob_ids))

    def _count_encryptions(self, session: Session, tenant_id: str, version: int, n: int) -> None:
        if n:
            session.execute(
                update(DataKey)
                .where(DataKey.scope == tenant_id, DataKey.purpose == DATA_PURPOSE, DataKey.version == version)
                .values(encryptions=DataKey.encryptions + n)
            )

    def _count_encryptions_tx(self, tenant_id: str, version: int, n: int) -> None:
        with transaction(self._sessions) as session:
            self._count_encryptions(session, tenant_id, version, n)

    def references(self, tenant_id: str) -> dict[int, int]:
        """{key version: sealed values, blob rows and blob files (temp files too) that name it}."""
        refs: dict[int, int] = {}
        with self._sessions() as session:
            for sc in SEALED_COLUMNS:
                counted = session.execute(
                    select(sealed_version(sc.column), func.count())
                    .where(sc.tenant_column == tenant_id, sc.column.is_not(None))
                    .group_by(sealed_version(sc.column))
                )
                for raw, n in counted:
                    v = _version_of(raw)
                    refs[v] = refs.get(v, 0) + int(n)
            for v, n in session.execute(
                select(Blob.key_version, func.count()).where(Blob.tenant_id == tenant_id).group_by(Blob.key_version)
            ):
                refs[int(v)] = refs.get(int(v), 0) + int(n)
        for v, n in self._blobs.file_key_versions(tenant_id).items():
            refs[v] = refs.get(v, 0) + n
        return refs

    # -- status -----------------------------------------------------------------------

    def status(self, current_kek_id: str) -> KeyStatus:
        """Versions, ages, use counts and what references each version; never key material."""
        records: dict[tuple[str, int], int] = {}
        blobs: dict[tuple[str, int], int] = {}
        now = utcnow()
        with self._sessions() as session:
            for sc in SEALED_COLUMNS:
                counted = session.execute(
                    select(sc.tenant_column, sealed_version(sc.column), func.count())
                    .where(sc.column.is_not(None))
                    .group_by(sc.tenant_column, sealed_version(sc.column))
                )
                for tenant_id, raw, n in counted:
                    ident = (str(tenant_id), _version_of(raw))
                    records[ident] = records.get(ident, 0) + int(n)
            for tenant_id, v, n in session.execute(
                select(Blob.tenant_id, Blob.key_version, func.count()).group_by(Blob.tenant_id, Blob.key_version)
            ):
                blobs[(str(tenant_id), int(v))] = int(n)
            slugs = {str(i): str(slug) for i, slug in session.execute(select(Tenant.id, Tenant.slug))}
            keys = [
                KeyVersionStatus(
                    tenant=slugs.get(k.tenant_id) if k.tenant_id else None,
                    scope=k.scope,
                    purpose=k.purpose,
                    version=k.version,
                    state="active" if k.retired_at is None else "retired",
                    kek_id=k.kek_id,
                    on_current_kek=k.kek_id == current_kek_id,
                    created_at=k.created_at,
                    retired_at=k.retired_at,
                    age_days=round((now - k.created_at).total_seconds() / 86400, 2),
                    encryptions=k.encryptions,
                    records=records.get((k.scope, k.version), 0) if k.purpose == DATA_PURPOSE else 0,
                    blobs=blobs.get((k.scope, k.version), 0) if k.purpose == DATA_PURPOSE else 0,
                )
                for k in session.scalars(select(DataKey).order_by(DataKey.scope, DataKey.purpose, DataKey.version))
            ]
        return KeyStatus(current_kek_id, sum(1 for k in keys if not k.on_current_kek), keys)


def _version_of(raw: bytes | memoryview | None) -> int:
    data = bytes(raw or b"")
    return int(struct.unpack(">I", data)[0]) if len(data) == 4 else -1
