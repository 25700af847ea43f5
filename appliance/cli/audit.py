"""``appliance audit ...``: verify the chain, export it, verify an export offline, purge, checkpoint.

Run as the local operator. ``verify`` and ``verify-export`` exit 1 when the chain is broken
(and name the first bad entry), so they slot into monitoring and cron as they are.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from appliance.cli.context import CliState, pass_state
from appliance.cli.output import console, emit_json, err_console, json_option, show
from appliance.services.audit import AuditLog, audit_log_of
from appliance.services.audit_chain import VerifyResult
from appliance.services.audit_export import read_key_file, verify_export, write_export, write_key_file
from appliance.services.principal import Principal

VERIFY_COLUMNS = ("ok", "entries_checked", "checkpoints_checked", "problem", "entry_id", "detail")
CHECKPOINT_COLUMNS = ("id", "kind", "last_entry_id", "entry_count", "created_at", "last_entry_mac")
PURGE_COLUMNS = ("payloads_deleted", "entries_purged", "entries_removed", "anchor_entry_id", "purge_entry_id")


def _log(state: CliState) -> AuditLog:
    return audit_log_of(state.services)


def _when(value: datetime | None) -> datetime | None:
    """click parses times without a zone; the trail is UTC, so a bare time means UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _report(result: VerifyResult, as_json: bool) -> None:
    if as_json:
        emit_json(result)
    elif result.ok:
        console.print(
            f"[green]audit chain intact[/green]: {result.entries_checked} entries, "
            f"{result.checkpoints_checked} checkpoints"
        )
    else:
        show(result, False, VERIFY_COLUMNS, "audit chain BROKEN")
    if not result.ok:
        sys.exit(1)  # SystemExit passes the CLI's error handler untouched


@click.group("audit")
def audit() -> None:
    """Verify, export, purge and checkpoint the tamper-evident audit trail."""


@audit.command("verify")
@json_option
@pass_state
def audit_verify(state: CliState, as_json: bool) -> None:
    """Check every entry and checkpoint; exit 1 naming the first edited, reordered or deleted entry."""
    _report(_log(state).verify(Principal.local_operator()), as_json)


@audit.command("checkpoint")
@json_option
@pass_state
def audit_checkpoint(state: CliState, as_json: bool) -> None:
    """Sign the current chain head now. Keep the printed MAC somewhere else too (ticket, syslog)."""
    show(_log(state).checkpoint(), as_json, CHECKPOINT_COLUMNS)


@audit.command("purge")
@click.option(
    "--retention-days",
    type=click.IntRange(0, 36500),
    default=None,
    help="Purge entries older than N days for every tenant (default: each tenant policy's retention.audit_days).",
)
@json_option
@pass_state
def audit_purge(state: CliState, retention_days: int | None, as_json: bool) -> None:
    """Delete expired payloads and entries past retention; the purge itself is audited."""
    retention = None if retention_days is None else (lambda _tenant: retention_days)
    report = _log(state).purge(actor=Principal.local_operator(), retention=retention)
    show(report, as_json, PURGE_COLUMNS)


@audit.command("export")
@click.option("--since", type=click.DateTime(), help="First time included (UTC unless a zone is given).")
@click.option("--until", type=click.DateTime(), help="First time excluded; omit to export to a fresh checkpoint.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), required=True, help="File to create.")
@pass_state
def audit_export(
    state: CliState, since: datetime | None, until: datetime | None, fmt: Literal["jsonl", "csv"], output: Path
) -> None:
    """Export entries with their chain data (never payloads) for offline verification."""
    if output.exists():
        raise click.ClickException(f"{output} exists; choose a new file")
    ex = _log(state).export(Principal.local_operator(), since=_when(since), until=_when(until))
    with (
        output.open("x", encoding="utf-8", newline="") as out,
        Progress(
            TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err_console
        ) as progress,
    ):
        task = progress.add_task("entries", total=ex.count)
        for _ in write_export(ex, out, fmt):
            progress.advance(task)
    err_console.print(f"wrote {ex.count} entries to {output}")


@audit.command("export-key")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), required=True, help="File to create (0600).")
@pass_state
def audit_export_key(state: CliState, output: Path) -> None:
    """Write the audit MAC keys to a new 0600 file for offline verification. Whoever holds them
    can also forge a chain: hand the file over like the master key, never beside an export."""
    if output.exists():
        raise click.ClickException(f"{output} exists; choose a new file")
    write_key_file(output, _log(state).mac_keys(Principal.local_operator()))
    err_console.print(f"wrote the audit MAC keys to {output} (mode 0600); the keys are not printed")


@audit.command("verify-export")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--key-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True)
@json_option
def audit_verify_export(file: Path, key_file: Path, as_json: bool) -> None:
    """Verify an export offline (no database, no master key): exit 1 naming the first bad entry."""
    _report(verify_export(file, read_key_file(key_file)), as_json)
