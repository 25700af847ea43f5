"""Entry point: ``appliance``. Every failure ends with one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appliance.cli.admin import apikey, tenant
from appliance.cli.audit import audit
from appliance.cli.backup import backup
from appliance.cli.context import CliState
from appliance.cli.finetune import finetune
from appliance.cli.keys import crypto_keys
from appliance.cli.maintenance import maintenance
from appliance.cli.models import model
from appliance.cli.output import error_text
from appliance.cli.policy import policy
from appliance.cli.server import db, init, serve
from appliance.cli.worker import worker


@click.group()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    envvar="APPLIANCE_CONFIG",
    help="Config file (default /etc/appliance/appliance.toml).",
)
@click.version_option(package_name="appliance")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """The appliance: a privacy-first, OpenAI-compatible AI server."""
    state = CliState(config_path)
    ctx.obj = state
    ctx.call_on_close(state.close)


def _deprecated_alias(old: str, group: click.Group) -> click.Group:
    """``old`` as a hidden spelling of ``group`` for one release: same subcommands, plus a
    note on stderr (stdout stays clean for ``--json``)."""

    def note() -> None:
        click.echo(
            f"note: `appliance {old}` is deprecated and goes away in the next release; use `appliance {group.name}`",
            err=True,
        )

    return click.Group(old, commands=group.commands, callback=note, hidden=True, help=f"Deprecated: use {group.name}.")


for command in (
    init,
    serve,
    worker,
    db,
    tenant,
    apikey,
    crypto_keys,
    policy,
    audit,
    model,
    finetune,
    maintenance,
    backup,
):
    cli.add_command(command)
# `key` (API keys) and `keys` (encryption keys) were one letter apart: the old spellings stay one release.
cli.add_command(_deprecated_alias("key", apikey))
cli.add_command(_deprecated_alias("keys", crypto_keys))


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - one line via error_text; APPLIANCE_DEBUG=1 re-raises
        click.echo(f"error: {error_text(exc)}", err=True)
        sys.exit(2)
