"""``appliance maintenance``: the periodic housekeeping a timer runs (see systemd/)."""

from __future__ import annotations

import click

from appliance.cli.context import CliState, pass_state
from appliance.cli.output import console, emit_json, json_option
from appliance.services.principal import Principal


@click.command("maintenance")
@json_option
@pass_state
def maintenance(state: CliState, as_json: bool) -> None:
    """Purge expired pseudonyms, purge audit data past each tenant's retention, delete sealed
    model files no model references (a killed registration), sign a checkpoint."""
    services = state.services
    pseudonyms = services.privacy.purge_expired()
    purge = services.audit.purge(actor=Principal.local_operator())
    orphans = services.model_registry.sweep_sealed()
    checkpoint = services.audit.checkpoint()
    result = {
        "pseudonyms_purged": pseudonyms,
        "audit_purge": purge,
        "sealed_model_blobs_swept": orphans,
        "checkpoint": checkpoint,
    }
    if as_json:
        emit_json(result)
        return
    console.print(f"expired pseudonyms purged: {pseudonyms}")
    console.print(f"orphaned sealed model files deleted: {orphans}")
    console.print(f"audit purge: {purge}")
    console.print(f"audit checkpoint: {checkpoint}")
