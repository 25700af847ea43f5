"""``appliance backup create|verify|restore``: encrypted, checksummed backups of one installation.

Run as root (or the service user) on a host whose configuration names the database and the
master key. Progress goes to stderr; ``--json`` prints the result alone on stdout. ``verify``
exits 1 when an archive fails (one line saying why); ``restore`` exits 1 when the restored
installation fails its check.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from appliance.cli.context import CliState, pass_state
from appliance.cli.output import console, emit_json, err_console, json_option, progress_bars
from appliance.errors import IntegrityError, KeyUnavailable
from appliance.services.backup import BackupInfo, BackupService, default_backup_path

_LABELS = {
    "rows": "reading the database snapshot (rows)",
    "blobs": "copying blob files",
    "verify": "verifying the archive (bytes)",
    "restore": "restoring (bytes)",
    "check": "decrypting every record and blob",
}


def _service(state: CliState, *, with_audit: bool = True) -> BackupService:
    s = state.services
    owner: tuple[int, int] | None = None
    data_dir = state.settings.data_dir
    if os.geteuid() == 0 and data_dir.exists():
        st = data_dir.stat()
        owner = (st.st_uid, st.st_gid) if st.st_uid != 0 else None
    return BackupService(
        s.engine, s.keyring, state.settings.blob_dir, audit=s.audit if with_audit else None, owner=owner
    )


def _summary(info: BackupInfo) -> None:
    rows = sum(info.rows.values())
    console.print(
        f"{info.path}: {info.size / 1e6:.1f} MB, {rows} rows in {len(info.rows)} tables, {info.blobs} blob files, "
        f"schema {info.schema_revision}, taken {info.created_at} by appliance {info.appliance_version}",
        soft_wrap=True,
    )
    console.print(f"sha256 {info.sha256}  needs master key {info.master_kek_id}", soft_wrap=True)


@click.group("backup")
def backup() -> None:
    """Back up, verify and restore the database, blob files and wrapped keys."""


@backup.command("create")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Archive to write (default <data_dir>/backups/appliance-<UTC time>.apbak); never overwritten.",
)
@json_option
@pass_state
def backup_create(state: CliState, output: Path | None, as_json: bool) -> None:
    """Write one consistent, encrypted archive while the server keeps serving.

    The archive opens only with the current master key: keep the master key's escrow copy
    (see docs/operations.md) as long as the backup."""
    out = output or default_backup_path(state.settings.data_dir)
    with progress_bars(_LABELS, as_json) as progress:
        info = _service(state).create(out, progress=progress)
    if as_json:
        emit_json(info)
        return
    _summary(info)
    console.print(f"checksum also written to {info.path}.sha256; copy both off this host.", soft_wrap=True)


@backup.command("verify")
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False))
@json_option
@pass_state
def backup_verify(state: CliState, archive: Path, as_json: bool) -> None:
    """Read ARCHIVE to the end: every part authentic and complete, every data key unwraps with
    the loaded master keys. Changes nothing; exit 1 if the archive fails."""
    try:
        with progress_bars(_LABELS, as_json) as progress:
            info = _service(state, with_audit=False).verify(archive, progress=progress)
    except (IntegrityError, KeyUnavailable) as exc:
        err_console.print(f"backup {archive} FAILED verification: {exc.detail}", soft_wrap=True)
        sys.exit(1)
    if as_json:
        emit_json(info)
        return
    console.print("[green]backup verified[/green]")
    _summary(info)
    console.print(f"{info.data_keys_unwrapped} data keys unwrap with the loaded master key(s)")


@backup.command("restore")
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Replace an installation that already holds tenants, blobs or keys.")
@json_option
@pass_state
def backup_restore(state: CliState, archive: Path, force: bool, as_json: bool) -> None:
    """Verify ARCHIVE, then replace this installation's database and blob files with it.

    Stop every API node and worker first. Nothing is written unless the whole archive
    verifies; afterwards every record and blob is decrypted and the audit chain verified."""
    with progress_bars(_LABELS, as_json) as progress:
        report = _service(state, with_audit=False).restore(archive, force=force, progress=progress)
    if as_json:
        emit_json(report)
    else:
        _summary(report.backup)
        c = report.check
        console.print(
            f"restored{' over the previous data' if report.replaced_existing else ''}: "
            f"{c.records_checked} sealed records and {c.blobs_checked} blobs decrypt "
            f"({c.records_failed + c.blobs_failed} failed); audit chain: {c.audit_detail} "
            f"({c.audit_entries} entries)",
            soft_wrap=True,
        )
        for line in c.failures:
            err_console.print(f"  {line}", soft_wrap=True)
    if not report.check.ok:
        sys.exit(1)
