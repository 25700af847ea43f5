"""Entry point: ``appliance``. Every failure ends with one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from appliance.cli.admin import key, tenant
from appliance.cli.audit import audit
from appliance.cli.context import CliState
from appliance.cli.finetune import finetune
from appliance.cli.keys import keys
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


for command in (init, serve, worker, db, tenant, key, keys, policy, audit, model, finetune, maintenance):
    cli.add_command(command)


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
