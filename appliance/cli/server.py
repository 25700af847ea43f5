"""``appliance init``, ``serve`` and ``db ...``."""

from __future__ import annotations

import faulthandler
import os
import signal

import click

from appliance.cli.banner import announce, start_facts
from appliance.cli.context import CliState, pass_state
from appliance.cli.output import console, emit_json, err_console, json_option, quiet_progress_bars
from appliance.crypto.keyring import new_key, write_key_file
from appliance.errors import ConfigError
from appliance.logs import configure_logging
from appliance.models.onednn import bound_onednn_caches
from appliance.roles import Role
from appliance.services.principal import Principal


def _ensure_master_key(state: CliState) -> bool:
    """Create a dev master key file (0600) when no key source is configured. True if created."""
    s = state.settings
    if s.keys.dev_master_key or os.environ.get("CREDENTIALS_DIRECTORY"):
        return False
    if s.master_key_path.exists():
        return False
    if s.keys.master_key_file is not None:
        raise ConfigError(f"master key file {s.master_key_path} not found; the installer creates it")
    write_key_file(s.master_key_path, new_key())
    return True


@click.command("init")
@click.option("--demo-tenant", metavar="NAME", help="Also create tenant NAME (if absent) and an app key for it.")
@json_option
@pass_state
def init(state: CliState, demo_tenant: str | None, as_json: bool) -> None:
    """Create the data dir and master key (dev), migrate the database, issue the first operator key."""
    s = state.settings
    s.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    created_key = _ensure_master_key(state)
    services = state.services
    services.schema.upgrade()
    result: dict[str, object] = {
        "data_dir": str(s.data_dir),
        "master_key_created": created_key,
        "database": "migrated",
        "operator_api_key": None,
        "demo": None,
    }
    op = Principal.local_operator()
    has_operator = services.api_keys.has_global_key(op, Role.OPERATOR)
    demo_exists = demo_tenant in {t.slug for t in services.tenants.list(op)}
    if not has_operator:
        result["operator_api_key"] = services.api_keys.create(op, role=Role.OPERATOR, name="first operator").api_key
    if demo_tenant:
        if not demo_exists:
            services.tenants.create(op, demo_tenant, "Demo tenant")
        app_key = services.api_keys.create(op, role=Role.APP, name="demo app", tenant=demo_tenant).api_key
        result["demo"] = {"tenant": demo_tenant, "app_api_key": app_key}
    if as_json:
        emit_json(result)
        return
    console.print(f"data dir: {s.data_dir}")
    if created_key:
        console.print(
            f"[yellow]created a development master key at {s.master_key_path} (0600); "
            "production installs keep it in /etc/appliance or a systemd credential[/yellow]"
        )
    console.print("database: migrated to the latest schema")
    if result["operator_api_key"]:
        console.print(f"operator API key (shown once): [bold]{result['operator_api_key']}[/bold]", soft_wrap=True)
    else:
        console.print("an operator key already exists; create more with `appliance apikey create --role operator`")
    if demo_tenant:
        console.print(f"demo tenant {demo_tenant!r} app API key (shown once): [bold]{app_key}[/bold]", soft_wrap=True)


@click.command("serve")
@click.option("--host", help="Bind address (default from config: 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default from config: 8080).")
@click.option("--no-warmup", is_flag=True, help="Load the default models on first use instead of at start.")
@pass_state
def serve(state: CliState, host: str | None, port: int | None, no_warmup: bool) -> None:
    """Run the HTTP API."""
    # First, before anything runs a model: oneDNN's per-shape caches read their capacity once.
    bound_onednn_caches()
    import uvicorn

    from appliance.api.app import create_asgi

    s = state.settings
    configure_logging(s.log.level, s.log.format)
    # `kill -USR1 <pid>` writes every thread's stack (code locations only, no data) to stderr:
    # the operator's way to see where a stuck server waits (docs/operations.md).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    services = state.services
    if not services.schema.is_current():
        raise ConfigError("database schema is not current; run `appliance init` or `appliance db upgrade`")
    services.privacy.warm_up()  # a missing NER model stops start-up here with one clear line
    if not no_warmup:
        quiet_progress_bars()
        with err_console.status("loading the default models (the first start converts SmolLM2, about 30 s)"):
            for name in (s.models.default_embedding, s.models.default_chat):
                services.models.warmup(name)
    announce(start_facts(services, f"http://{host or s.server.host}:{port or s.server.port}"), s.log.format)
    uvicorn.run(
        create_asgi(services),
        host=host or s.server.host,
        port=port or s.server.port,
        log_config=None,
        access_log=False,
        server_header=False,
    )


@click.group("db")
def db() -> None:
    """Database schema migrations."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_state
def db_upgrade(state: CliState, revision: str) -> None:
    """Apply migrations up to REVISION."""
    console.print(f"database at {state.schema.upgrade(revision).current}")


@db.command("enable-rls")
@click.option("--app-role", default=None, help="The application's database role: granted its table rights.")
@pass_state
def db_enable_rls(state: CliState, app_role: str | None) -> None:
    """PostgreSQL: ENABLE and FORCE row-level security on every tenant table (run as their owner).

    From then on the database itself hides every other tenant's rows from a tenant's requests.
    The application must connect as a role that owns no table and lacks BYPASSRLS."""
    tables = state.schema.enable_row_level_security(app_role)
    console.print(f"row-level security on {len(tables)} tables: {', '.join(tables)}")


@db.command("current")
@json_option
@pass_state
def db_current(state: CliState, as_json: bool) -> None:
    """Show the schema revision and whether it is the latest."""
    status = state.schema.status()
    info: dict[str, object] = {"current": status.current, "head": status.head, "up_to_date": status.up_to_date}
    if as_json:
        emit_json(info)
    else:
        console.print(f"current: {info['current']}  head: {info['head']}  up to date: {info['up_to_date']}")
