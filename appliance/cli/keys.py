"""``appliance crypto-keys ...``: master-key and tenant-key rotation, and key status.

Both rotations are safe to interrupt (Ctrl-C, kill, power loss) and to re-run; progress goes
to stderr so ``--json`` output on stdout stays machine-readable. Nothing here prints key
material: only public KEK fingerprints, versions, ages and counts.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path

import click

from appliance.cli.context import CliState, pass_state
from appliance.cli.output import console, emit_json, json_option, progress_bars, show
from appliance.crypto.keyring import MasterKeyring, read_key_file
from appliance.services.key_rotation import KeyRotation
from appliance.services.key_rotation import Progress as ProgressFn
from appliance.services.principal import Principal

STATUS_COLUMNS = (
    "tenant",
    "scope",
    "purpose",
    "version",
    "state",
    "on_current_kek",
    "age_days",
    "encryptions",
    "records",
    "blobs",
)
_LABELS = {
    "master": "re-wrapping data keys",
    "records": "re-encrypting records",
    "blobs": "re-encrypting blobs",
    "waiting": "grace period for other processes",
}


def _rotation(state: CliState, grace_s: float | None = None) -> KeyRotation:
    s = state.services
    blobs = s.blobs
    grace = timedelta(seconds=grace_s) if grace_s is not None else None
    return KeyRotation(s.sessions, s.data_keys, blobs, grace=grace)


def _bars(quiet: bool) -> AbstractContextManager[ProgressFn]:
    return progress_bars(_LABELS, quiet)


@click.group("crypto-keys")
def crypto_keys() -> None:
    """Rotate the master key or a tenant's data key; show key status."""


@crypto_keys.command("rotate-master")
@click.option(
    "--new-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Root-only (0600/0400) file with the new master key.",
)
@json_option
@pass_state
def rotate_master(state: CliState, new_key_file: Path, as_json: bool) -> None:
    """Re-wrap every data key under the master key in NEW_KEY_FILE.

    The current key comes from the configuration. Safe to interrupt and re-run.
    """
    new = read_key_file(new_key_file)
    ring = state.services.keyring
    if new != ring.current:
        ring = MasterKeyring(new, (ring.current, *ring.previous))
    with _bars(as_json) as progress:
        result = _rotation(state).rotate_master(ring, progress=progress)
    if as_json:
        emit_json(result)
        return
    console.print(
        f"{result.total} data keys are wrapped by master key {result.kek_id} ({result.rewrapped} re-wrapped now)."
    )
    console.print(
        f"Next: set keys.master_key_file = {str(new_key_file)!r} and add the old key file to "
        "keys.previous_master_key_files on every node, restart, run this command once more, and keep "
        "the old file until `appliance crypto-keys status` shows no data key on an old master key.",
        soft_wrap=True,
    )


@crypto_keys.command("rotate-tenant")
@click.argument("tenant")
@click.option("--keep-old", is_flag=True, help="Keep the old data-key version instead of destroying it.")
@click.option(
    "--grace-seconds",
    type=click.FloatRange(0, 3600),
    default=None,
    help="Wait before destroying the old version, for running servers to stop using it "
    "(default 2.5x their 30 s key-budget lifetime; 0 only when no server is running).",
)
@json_option
@pass_state
def rotate_tenant(state: CliState, tenant: str, keep_old: bool, grace_seconds: float | None, as_json: bool) -> None:
    """Start a new data-key version for TENANT and re-encrypt its records and blobs to it.

    Safe to interrupt: a re-run finishes the interrupted rotation.
    """
    with _bars(as_json) as progress:
        result = _rotation(state, grace_seconds).rotate_tenant(
            Principal.local_operator(), tenant, keep_old=keep_old, progress=progress
        )
    if as_json:
        emit_json(result)
        return
    verb = "resumed" if result.resumed else "rotated"
    console.print(
        f"tenant {result.tenant}: {verb} to data-key version {result.version}; "
        f"{result.records} records and {result.blobs} blobs re-encrypted"
    )
    if result.destroyed_versions:
        console.print(f"destroyed old versions: {', '.join(map(str, result.destroyed_versions))}")
    if result.kept_versions:
        console.print(
            f"[yellow]kept versions {', '.join(map(str, result.kept_versions))}: still referenced "
            "(a write in progress or unreadable data); run this command again later[/yellow]"
        )
    if result.unreadable:
        console.print(
            f"[red]{result.unreadable} stored objects failed their integrity check and were left as they are[/red]"
        )


@crypto_keys.command("status")
@json_option
@pass_state
def status(state: CliState, as_json: bool) -> None:
    """Data-key versions, ages, use counts and what each encrypts; never key material."""
    result = _rotation(state).status(state.services.keyring.current_id)
    if as_json:
        emit_json(result)
        return
    show(result.keys, False, STATUS_COLUMNS, f"data keys (master key {result.master_kek_id})")
    if result.rows_on_old_kek:
        console.print(f"[yellow]{result.rows_on_old_kek} data keys are still on an older master key[/yellow]")
    else:
        console.print("every data key is wrapped by the current master key")
