"""``appliance tenant ...`` and ``appliance apikey ...``: run as the local operator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from appliance.cli.context import CliState, pass_state
from appliance.cli.output import console, emit_json, json_option, show
from appliance.roles import Role
from appliance.services.paging import MAX_PAGE, every
from appliance.services.principal import Principal

TENANT_COLUMNS = ("slug", "display_name", "id", "created_at")
KEY_COLUMNS = ("id", "tenant", "role", "name", "created_at", "expires_at", "last_used_at", "revoked_at")


@click.group("tenant")
def tenant() -> None:
    """Create, list and delete tenants."""


@tenant.command("create")
@click.argument("name")
@click.option("--display-name", help="Human-readable name (defaults to NAME).")
@json_option
@pass_state
def tenant_create(state: CliState, name: str, display_name: str | None, as_json: bool) -> None:
    """Create tenant NAME (lowercase letters, digits, '-') with its own data key."""
    show(state.services.tenants.create(Principal.local_operator(), name, display_name), as_json, TENANT_COLUMNS)


@tenant.command("list")
@json_option
@pass_state
def tenant_list(state: CliState, as_json: bool) -> None:
    """List tenants."""
    show(state.services.tenants.list(Principal.local_operator()), as_json, TENANT_COLUMNS, "tenants")


@tenant.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def tenant_delete(state: CliState, name: str, yes: bool, as_json: bool) -> None:
    """Delete tenant NAME: its data keys are destroyed first, so its data is unrecoverable."""
    if not yes:
        click.confirm(f"Destroy tenant {name!r} and all its data irrecoverably?", abort=True)
    show(state.services.tenants.delete(Principal.local_operator(), name), as_json, TENANT_COLUMNS)


@click.group("apikey")
def apikey() -> None:
    """Create, list and revoke API keys (the keys applications and people call the API with)."""


@apikey.command("create")
@click.option("--tenant", help="Tenant name; omit for operator/compliance keys.")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", default=None, help="What the key is for (default: the role).")
@click.option("--expires-in-days", type=click.IntRange(1, 3650), help="Expire after N days.")
@json_option
@pass_state
def key_create(
    state: CliState, tenant: str | None, role: str, name: str | None, expires_in_days: int | None, as_json: bool
) -> None:
    """Create an API key; the secret is printed once and never stored."""
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    issued = state.services.api_keys.create(
        Principal.local_operator(), role=Role(role), name=name or role, tenant=tenant, expires_at=expires
    )
    if as_json:
        emit_json({"api_key": issued.api_key, "key": issued.key})
        return
    show(issued.key, False, KEY_COLUMNS)
    console.print(f"API key (shown once, store it now): [bold]{issued.api_key}[/bold]", soft_wrap=True)


@apikey.command("list")
@click.option("--tenant", help="Tenant name; omit to list operator/compliance keys.")
@click.option("--include-revoked", is_flag=True, help="Also list revoked keys.")
@json_option
@pass_state
def key_list(state: CliState, tenant: str | None, include_revoked: bool, as_json: bool) -> None:
    """List API keys (never their secrets), oldest first."""
    op = Principal.local_operator()
    keys = every(
        lambda cursor: state.services.api_keys.list(
            op, tenant, include_revoked=include_revoked, cursor=cursor, limit=MAX_PAGE
        )
    )
    show(list(keys), as_json, KEY_COLUMNS, "API keys")


@apikey.command("revoke")
@click.argument("key_id")
@json_option
@pass_state
def key_revoke(state: CliState, key_id: str, as_json: bool) -> None:
    """Revoke key KEY_ID; it stops working on the next request."""
    show(state.services.api_keys.revoke(Principal.local_operator(), key_id), as_json, KEY_COLUMNS)
