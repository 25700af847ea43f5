"""Backup and restore of one installation: database, blob files and wrapped data keys.

``create`` reads every table inside one snapshot (SQLite: a read transaction in WAL mode;
PostgreSQL: REPEATABLE READ, read only), so what it saves is one consistent moment while the
server keeps serving; then it copies the blob files the snapshot's rows name. A blob file
removed, or re-encrypted under a key version the snapshot lacks, after the snapshot (a tenant
deletion or key rotation running at the same time) makes that attempt start over, up to
:data:`ATTEMPTS` times. The archive is sealed as a whole (:mod:`appliance.crypto.archive`,
under a key derived from the master key) and checksummed member by member; its SHA-256 is
also reported so copies can be checked without any key.

``verify`` reads an archive to the end, checks every member, and unwraps every data key in
it with the loaded master keys: an archive that verifies restores.

``restore`` verifies first and writes nothing unless that passes; it refuses an installation
that holds data unless forced; then it rebuilds the schema at the archive's revision, loads
every row in one transaction, puts the blob files in place, migrates to the latest schema,
and finally checks that every sealed record and blob decrypts and the audit chain verifies.
On PostgreSQL it runs as the role that owns the tables (the recreated tables keep that owner,
and with it the application role's default grants), and a database whose row-level security
was on gets its tenant walls back (dropping the tables dropped them).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Connection, Engine, Integer, MetaData, Table, event, func, inspect, select, text
from sqlalchemy.orm import sessionmaker

from appliance.crypto.archive import SealedWriter, open_archive, read_prefix
from appliance.crypto.blobs import BlobStore, fsync_dir, read_header
from appliance.crypto.data_keys import DataKeyService, wrap_context
from appliance.crypto.keyring import MasterKeyring
from appliance.crypto.records import DATA_PURPOSE, TenantCipher
from appliance.crypto.sealed_columns import SEALED_COLUMNS
from appliance.db import migrate, tenancy
from appliance.db.base import Base, utcnow
from appliance.db.engine import make_engine
from appliance.db.models import ApiKey, Blob, DataKey, Tenant
from appliance.errors import ApplianceError, Conflict, IntegrityError, InvalidInput
from appliance.services.audit import AuditLog
from appliance.services.backup_archive import (
    FORMAT,
    HEADER,
    ROWS_PER_CHUNK,
    ArchiveWriter,
    BlobMember,
    TableChunk,
    blob_member,
    describe_tables,
    read_members,
    table_member,
)
from appliance.services.principal import Principal

ATTEMPTS = 3
SUFFIX = ".apbak"
Progress = Callable[[str, int, int], None]  # phase, done, total


def _no_progress(_phase: str, _done: int, _total: int) -> None:
    return None


class _Retry(Exception):
    """The blob files moved on after the snapshot; take a new one."""


@dataclass(frozen=True)
class BackupInfo:
    path: str
    sha256: str
    size: int
    created_at: str
    appliance_version: str
    schema_revision: str
    database: str
    master_kek_id: str
    rows: dict[str, int]
    blobs: int
    blob_bytes: int
    data_keys_unwrapped: int = 0


@dataclass(frozen=True)
class InstallationCheck:
    """Whether everything stored decrypts and the audit chain holds."""

    records_checked: int
    records_failed: int
    blobs_checked: int
    blobs_failed: int
    audit_ok: bool
    audit_entries: int
    audit_detail: str
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.audit_ok and not self.records_failed and not self.blobs_failed


@dataclass(frozen=True)
class RestoreReport:
    backup: BackupInfo
    replaced_existing: bool
    check: InstallationCheck


def _tables() -> list[Table]:
    return list(Base.metadata.sorted_tables)


def _appliance_version() -> str:
    try:
        return importlib.metadata.version("appliance")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose reads all see one committed moment, without blocking writers."""
    if engine.dialect.name == "sqlite":
        # pysqlite starts no transaction for SELECTs; this engine issues BEGIN itself (the
        # SQLAlchemy recipe), and WAL mode gives the read transaction a stable snapshot.
        snap = make_engine(engine.url.render_as_string(hide_password=False))

        def _driver_autocommit(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

        event.listen(snap, "connect", _driver_autocommit)
        event.listen(snap, "begin", _begin)
        try:
            with snap.connect() as conn, conn.begin():
                yield conn
        finally:
            snap.dispose()
        return
    with engine.connect() as base:
        conn = base.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


def _check_known_tables(conn: Connection) -> None:
    known = {t.name for t in _tables()} | {"alembic_version"}
    unknown = sorted(set(inspect(conn).get_table_names()) - known)
    if unknown:
        raise InvalidInput(f"the database holds tables this version does not know: {', '.join(unknown)}")


class BackupService:
    """Backups of the database behind ``engine`` and the blob files under ``blob_dir``."""

    def __init__(
        self,
        engine: Engine,
        keyring: MasterKeyring,
        blob_dir: Path,
        *,
        audit: AuditLog | None = None,
        owner: tuple[int, int] | None = None,
    ) -> None:
        """``audit`` records each backup taken; ``owner`` (uid, gid) is given to restored files
        when a root-run CLI restores for a service that runs as another user."""
        self._engine = engine
        self._keyring = keyring
        self._blob_dir = blob_dir
        self._audit = audit
        self._owner = owner

    # -- create -------------------------------------------------------------------------------

    def create(self, out: Path, *, progress: Progress = _no_progress) -> BackupInfo:
        """Write a backup to ``out`` (never overwriting a file); returns what it holds."""
        if out.exists():
            raise Conflict(f"{out} already exists; choose another name")
        out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
        try:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    header, manifest_rows = self._write(tmp, progress)
                    break
                except _Retry:
                    tmp.unlink(missing_ok=True)
                    if attempt == ATTEMPTS:
                        raise Conflict(
                            "blob files kept changing under the backup (a key rotation or tenant deletion "
                            "is running); run it again when that has finished"
                        ) from None
            os.replace(tmp, out)
            fsync_dir(out.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        digest = _sha256_file(out)
        out.with_name(out.name + ".sha256").write_text(f"{digest}  {out.name}\n")
        info = BackupInfo(
            path=str(out),
            sha256=digest,
            size=out.stat().st_size,
            created_at=header["created_at"],
            appliance_version=header["appliance_version"],
            schema_revision=header["schema_revision"],
            database=header["database"],
            master_kek_id=self._keyring.current_id,
            rows=manifest_rows.rows,
            blobs=manifest_rows.blobs,
            blob_bytes=manifest_rows.blob_bytes,
        )
        if self._audit is not None:
            self._audit.record(
                "backup.create",
                actor=Principal.local_operator(),
                object=out.name,
                facts={"rows": sum(info.rows.values()), "blobs": info.blobs, "sha256": digest},
            )
        return info

    def _write(self, tmp: Path, progress: Progress) -> tuple[dict[str, Any], Any]:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw:
            sealed = SealedWriter(raw, self._keyring)
            writer = ArchiveWriter(sealed)  # type: ignore[arg-type]
            blobs: list[tuple[str, str]] = []
            versions: set[tuple[str, int]] = set()
            with _snapshot(self._engine) as conn:
                _check_known_tables(conn)
                revision = migrate.current_revision(conn)
                if revision is None or revision != migrate.head_revision(self._engine):
                    raise InvalidInput("the database schema is not current; run `appliance db upgrade` first")
                tables = _tables()
                header = {
                    "format": FORMAT,
                    "created_at": utcnow().isoformat(),
                    "appliance_version": _appliance_version(),
                    "schema_revision": revision,
                    "database": self._engine.dialect.name,
                    "tables": describe_tables(tables),
                }
                writer.add_json(HEADER, header)
                total = sum(int(conn.scalar(select(func.count()).select_from(t)) or 0) for t in tables)
                done = 0
                progress("rows", 0, total)
                for index, table in enumerate(tables):
                    chunk: list[list[Any]] = []
                    n = 0
                    order = list(table.primary_key.columns) or list(table.columns)
                    result = conn.execution_options(yield_per=ROWS_PER_CHUNK).execute(select(table).order_by(*order))
                    for row in result:
                        values = list(row)
                        chunk.append(values)
                        if table.name == Blob.__tablename__:
                            blobs.append((row.tenant_id, row.id))
                        elif table.name == DataKey.__tablename__ and row.purpose == DATA_PURPOSE:
                            versions.add((row.scope, row.version))
                        if len(chunk) == ROWS_PER_CHUNK:
                            n += 1
                            writer.add_rows(table_member(index, table.name, n), table.name, chunk)
                            done += len(chunk)
                            progress("rows", done, total)
                            chunk = []
                    if chunk or n == 0:
                        writer.add_rows(table_member(index, table.name, n + 1), table.name, chunk)
                        done += len(chunk)
                        progress("rows", done, total)
            self._copy_blobs(writer, blobs, versions, progress)
            writer.close()
            sealed.close()
            raw.flush()
            os.fsync(raw.fileno())
        return header, writer.manifest

    def _copy_blobs(
        self, writer: ArchiveWriter, blobs: list[tuple[str, str]], versions: set[tuple[str, int]], progress: Progress
    ) -> None:
        progress("blobs", 0, len(blobs))
        for done, (tenant_id, blob_id) in enumerate(blobs, start=1):
            name = blob_member(tenant_id, blob_id)
            try:
                fh = (self._blob_dir / tenant_id / blob_id).open("rb")
            except FileNotFoundError:
                raise _Retry from None
            with fh:
                # The open file stays what it is even if a rotation swaps the path meanwhile.
                if (tenant_id, read_header(fh).key_version) not in versions:
                    raise _Retry
                fh.seek(0)
                writer.add_file(name, fh, os.fstat(fh.fileno()).st_size)
            progress("blobs", done, len(blobs))

    # -- verify -------------------------------------------------------------------------------

    def verify(self, path: Path, *, progress: Progress = _no_progress) -> BackupInfo:
        """Read the whole archive; IntegrityError if any part fails, KeyUnavailable if the
        master key it needs is not loaded."""
        return self._read(path, progress, None)

    def _read(self, path: Path, progress: Progress, load: _Loader | None) -> BackupInfo:
        phase = "verify" if load is None else "restore"
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            raise InvalidInput(f"no backup at {path}") from None
        except IsADirectoryError:
            raise InvalidInput(f"{path} is a directory, not a backup") from None
        size = os.fstat(fh.fileno()).st_size
        digest = hashlib.sha256()
        header: dict[str, Any] = {}
        rows: dict[str, int] = {}
        blobs = blob_bytes = unwrapped = 0
        with fh:
            counted = _CountingReader(fh, digest, lambda n: progress(phase, n, size))
            prefix, plain = open_archive(counted, self._keyring)  # type: ignore[arg-type]
            columns: dict[str, list[str]] = {}
            for member in read_members(plain):
                if isinstance(member, dict):
                    header = member
                    self._check_header(header)
                    columns = {t["name"]: t["columns"] for t in header["tables"]}
                    if load is not None:
                        load.begin(header)
                elif isinstance(member, TableChunk):
                    rows[member.table] = rows.get(member.table, 0) + len(member.rows)
                    if member.table == DataKey.__tablename__:
                        unwrapped += self._unwrap_all(columns[member.table], member.rows)
                    if load is not None:
                        load.rows(member.table, columns[member.table], member.rows)
                elif isinstance(member, BlobMember):
                    blobs += 1
                    blob_bytes += member.size
                    if load is not None:
                        load.blob(member)
            while counted.read(1 << 20):
                pass
        return BackupInfo(
            path=str(path),
            sha256=digest.hexdigest(),
            size=size,
            created_at=header["created_at"],
            appliance_version=header["appliance_version"],
            schema_revision=header["schema_revision"],
            database=header["database"],
            master_kek_id=prefix.kek_id,
            rows=rows,
            blobs=blobs,
            blob_bytes=blob_bytes,
            data_keys_unwrapped=unwrapped,
        )

    def _check_header(self, header: dict[str, Any]) -> None:
        revision = header.get("schema_revision")
        if not isinstance(revision, str) or not migrate.knows_revision(self._engine, revision):
            raise InvalidInput(
                f"the backup's schema revision {revision!r} is not one this version of the appliance knows; "
                "install the release that took it (or a later one) first"
            )
        if revision == migrate.head_revision(self._engine):  # older revisions are checked as they load
            known = {t.name: [c.name for c in t.columns] for t in _tables()}
            for table in header["tables"]:
                if known.get(table["name"]) != table["columns"]:
                    raise InvalidInput(f"the backup's table {table['name']!r} does not match this version's schema")

    def _unwrap_all(self, columns: list[str], rows: list[list[Any]]) -> int:
        """Every data key must unwrap: proves the master key (or its escrow copy) is the right one."""
        for row in rows:
            r = dict(zip(columns, row, strict=True))
            self._keyring.unwrap(r["kek_id"], r["wrapped"], wrap_context(r["scope"], r["purpose"], r["version"]))
        return len(rows)

    # -- restore ------------------------------------------------------------------------------

    def holds_data(self) -> bool:
        """Tenants, blobs, or API keys besides the installer's first operator key."""
        if self._blob_dir.is_dir() and any(p.is_file() for p in self._blob_dir.rglob("*")):
            return True
        with self._engine.connect() as conn:
            if not set(inspect(conn).get_table_names()) & {Tenant.__tablename__}:
                return False
            tenants = conn.scalar(select(func.count()).select_from(Tenant)) or 0
            blobs = conn.scalar(select(func.count()).select_from(Blob)) or 0
            keys = conn.scalar(select(func.count()).select_from(ApiKey)) or 0
        return bool(tenants or blobs or keys > 1)

    def restore(self, path: Path, *, force: bool = False, progress: Progress = _no_progress) -> RestoreReport:
        walled = self._check_may_recreate()
        replaced = self.holds_data()
        if replaced and not force:
            raise Conflict(
                "this installation already holds data (tenants, blobs or API keys); restore with --force "
                "to replace all of it"
            )
        info = self.verify(path, progress=progress)  # writes nothing; raises unless it all checks out
        staging = self._blob_dir.with_name(f".{self._blob_dir.name}.restore-{secrets.token_hex(4)}")
        staging.mkdir(mode=0o700, parents=True)
        try:
            _reset_schema(self._engine, info.schema_revision)
            with self._engine.connect() as conn, conn.begin():
                loader = _Loader(conn, staging)
                self._read(path, progress, loader)
                _reset_sequences(conn)
            migrate.upgrade(self._engine)
            if walled:  # the dropped tables took their walls with them
                with self._engine.begin() as conn:
                    tenancy.enable_row_level_security(conn)
            self._swap_blob_dir(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        check = check_installation(self._engine, self._keyring, self._blob_dir, progress=progress)
        fresh = _fresh_parts(self._engine, self._keyring, self._blob_dir)
        fresh.audit.record(
            "backup.restore",
            actor=Principal.local_operator(),
            object=Path(info.path).name,
            outcome="ok" if check.ok else "check-failed",
            facts={"sha256": info.sha256, "rows": sum(info.rows.values()), "blobs": info.blobs},
        )
        self._give_to_owner()
        return RestoreReport(info, replaced, check)

    def _check_may_recreate(self) -> bool:
        """PostgreSQL: refuse (before anything is read or written) unless this connection's role
        owns every table it will drop and recreate: the application role of a walled database
        may not drop them, and a superuser's tables would lose the owner's default grants to the
        application role. -> whether the tenant walls are on now."""
        if self._engine.dialect.name != "postgresql":
            return False
        with self._engine.connect() as conn:
            others = conn.execute(
                text(
                    "SELECT DISTINCT tableowner FROM pg_tables "
                    "WHERE schemaname = current_schema() AND tableowner <> current_user ORDER BY 1"
                )
            ).scalars()
            owners = sorted(str(o) for o in others)
            if owners:
                raise InvalidInput(
                    f"restore as the role that owns the tables ({', '.join(owners)}): point database.url "
                    "at it for this command (the application role of a walled database cannot drop and "
                    "recreate them, and tables recreated by another role lose the application's grants)"
                )
            return tenancy.walls_enabled(conn)

    def _swap_blob_dir(self, staging: Path) -> None:
        old = self._blob_dir.with_name(f".{self._blob_dir.name}.old-{secrets.token_hex(4)}")
        if self._blob_dir.exists():
            os.replace(self._blob_dir, old)
        os.replace(staging, self._blob_dir)
        fsync_dir(self._blob_dir.parent)
        shutil.rmtree(old, ignore_errors=True)

    def _give_to_owner(self) -> None:
        """A root-run restore leaves the files it wrote to the service's user."""
        if self._owner is None:
            return
        uid, gid = self._owner
        paths = [self._blob_dir]
        for root, dirs, files in os.walk(self._blob_dir):
            paths += [Path(root) / name for name in (*dirs, *files)]
        if self._engine.dialect.name == "sqlite" and self._engine.url.database:
            db = Path(self._engine.url.database)
            paths += [p for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")) if p.exists()]
        for path in paths:
            os.chown(path, uid, gid)


class _Loader:
    """Pass two of a restore: rows into the open transaction, blob files into ``staging``."""

    def __init__(self, conn: Connection, staging: Path) -> None:
        self._conn = conn
        self._staging = staging
        # The schema as migrated to the archive's revision, which may be older than this code's.
        meta = MetaData()
        meta.reflect(conn)
        self._tables = meta.tables

    def begin(self, header: dict[str, Any]) -> None:
        return None

    def rows(self, table: str, columns: list[str], rows: list[list[Any]]) -> None:
        if table not in self._tables or set(columns) - set(self._tables[table].columns.keys()):
            raise IntegrityError(f"the backup's table {table!r} does not match its schema revision")
        if rows:
            self._conn.execute(self._tables[table].insert(), [dict(zip(columns, row, strict=True)) for row in rows])

    def blob(self, member: BlobMember) -> None:
        folder = self._staging / member.tenant_id
        folder.mkdir(mode=0o700, exist_ok=True)
        target = folder / member.blob_id
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(member.stream, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())


def _reset_schema(engine: Engine, revision: str) -> None:
    """Drop every table (the caller checked the installation is empty or forced) and migrate
    an empty schema to the archive's revision."""
    meta = MetaData()
    meta.reflect(engine)
    meta.drop_all(engine)
    migrate.upgrade(engine, revision)


def _reset_sequences(conn: Connection) -> None:
    """PostgreSQL: rows were inserted with their ids; the next generated id must follow them."""
    if conn.dialect.name != "postgresql":
        return
    for table in _tables():
        pk = list(table.primary_key.columns)
        if len(pk) == 1 and isinstance(pk[0].type, Integer):
            seq = conn.scalar(select(func.pg_get_serial_sequence(table.name, pk[0].name)))
            if seq:
                highest = select(func.max(pk[0])).scalar_subquery()
                conn.execute(select(func.setval(seq, func.coalesce(highest, 0) + 1, False)))


@dataclass(frozen=True)
class _Parts:
    data_keys: DataKeyService
    cipher: TenantCipher
    blobs: BlobStore
    audit: AuditLog


def _fresh_parts(engine: Engine, keyring: MasterKeyring, blob_dir: Path) -> _Parts:
    """Collaborators with empty caches: a restore replaced every key a running one remembers."""
    sessions = sessionmaker(engine, expire_on_commit=False)
    data_keys = DataKeyService(keyring, sessions)
    blobs = BlobStore(blob_dir, data_keys, sessions)
    return _Parts(data_keys, TenantCipher(data_keys), blobs, AuditLog(sessions, data_keys))


def check_installation(
    engine: Engine, keyring: MasterKeyring, blob_dir: Path, *, progress: Progress = _no_progress
) -> InstallationCheck:
    """Open every sealed record and blob and verify the audit chain; names what fails (never
    its content)."""
    parts = _fresh_parts(engine, keyring, blob_dir)
    sessions = sessionmaker(engine, expire_on_commit=False)
    failures: list[str] = []
    records = records_failed = blobs_checked = blobs_failed = 0
    with sessions() as session:
        total = sum(
            int(session.scalar(select(func.count()).select_from(c.model).where(c.column.is_not(None))) or 0)
            for c in SEALED_COLUMNS
        ) + int(session.scalar(select(func.count()).select_from(Blob)) or 0)
        progress("check", 0, total)
        for col in SEALED_COLUMNS:
            rows = session.scalars(select(col.model).where(col.column.is_not(None)).execution_options(yield_per=500))
            for row in rows:
                records += 1
                try:
                    col.open(parts.cipher, row)
                except ApplianceError as exc:
                    records_failed += 1
                    failures.append(f"{col.name} row {row.id}: {exc.detail}")  # type: ignore[attr-defined]
                progress("check", records, total)
        for blob in session.scalars(select(Blob).order_by(Blob.tenant_id, Blob.id)).all():
            blobs_checked += 1
            try:
                for _segment in parts.blobs.open(blob.tenant_id, blob.id):
                    pass
            except ApplianceError as exc:
                blobs_failed += 1
                failures.append(f"blob {blob.id}: {exc.detail}")
            progress("check", records + blobs_checked, total)
    verdict = parts.audit.verify()
    return InstallationCheck(
        records_checked=records,
        records_failed=records_failed,
        blobs_checked=blobs_checked,
        blobs_failed=blobs_failed,
        audit_ok=verdict.ok,
        audit_entries=verdict.entries_checked,
        audit_detail=verdict.detail,
        failures=failures[:20],
    )


class _CountingReader:
    """The archive file, hashed and counted as it is read (for the reported SHA-256 and progress)."""

    def __init__(self, fh: BinaryIO, digest: Any, progress: Callable[[int], None]) -> None:
        self._fh = fh
        self._digest = digest
        self._progress = progress
        self._done = 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._digest.update(data)
        self._done += len(data)
        self._progress(self._done)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def default_backup_path(data_dir: Path) -> Path:
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return data_dir / "backups" / f"appliance-{stamp}{SUFFIX}"


def archive_master_key_id(path: Path) -> str:
    """Which master key an archive needs, read from its unencrypted prefix."""
    with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
        return read_prefix(fh).kek_id
    raise InvalidInput(f"no backup at {path}")
