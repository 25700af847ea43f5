"""``appliance maintenance``: the periodic housekeeping a timer runs (see systemd/)."""

from __future__ import annotations

import sys

import click

from appliance.cli.context import CliState, pass_state
from appliance.cli.output import console, emit_json, err_console, error_text, json_option
from appliance.services.principal import Principal


@click.command("maintenance")
@json_option
@pass_state
def maintenance(state: CliState, as_json: bool) -> None:
    """Purge expired pseudonyms, purge audit data past each tenant's retention, sign a
    checkpoint, then delete what killed sealed-model registrations, dataset uploads and
    fine-tuning workers left behind.

    The sweep runs after the checkpoint and cannot stop it: a sweep error is reported
    (``sealed_model_sweep_error``) and makes the exit status 1."""
    services = state.services
    pseudonyms = services.privacy.purge_expired()
    purge = services.audit.purge(actor=Principal.local_operator())
    checkpoint = services.audit.checkpoint()
    orphans: int | None = None
    finetune_orphans: int | None = None
    sweep_error: str | None = None
    try:
        orphans = services.model_registry.sweep_sealed()
        finetune_orphans = services.datasets.sweep_orphans()
    except OSError as exc:  # the blob directory: an operator's matter, and the path helps
        sweep_error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - reported, fails the run; the checkpoint is already signed
        sweep_error = error_text(exc)
    result = {
        "pseudonyms_purged": pseudonyms,
        "audit_purge": purge,
        "sealed_model_blobs_swept": orphans,
        "sealed_model_sweep_error": sweep_error,
        "finetune_blobs_swept": finetune_orphans,
        "checkpoint": checkpoint,
    }
    if as_json:
        emit_json(result)
    else:
        console.print(f"expired pseudonyms purged: {pseudonyms}")
        console.print(f"audit purge: {purge}")
        console.print(f"audit checkpoint: {checkpoint}")
        if sweep_error is None:
            console.print(f"orphaned sealed model files deleted: {orphans}")
            console.print(f"orphaned dataset and checkpoint blobs deleted: {finetune_orphans}")
    if sweep_error is not None:
        err_console.print(f"sealed model sweep failed: {sweep_error}")
        sys.exit(1)  # SystemExit passes the CLI's error handler untouched
