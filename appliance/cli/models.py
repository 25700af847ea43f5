"""``appliance model ...``: register, list, remove and pre-load models, as the local operator."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from appliance.cli.context import CliState, pass_state
from appliance.cli.output import console, emit_json, json_option, quiet_progress_bars, show, table
from appliance.models.base import MODEL_KINDS
from appliance.services.principal import Principal

if TYPE_CHECKING:  # torch and transformers load only for the commands that need them
    from appliance.models.registry import ModelInfo, ModelRegistry

MODEL_COLUMNS = ("name", "kind", "source", "device", "owner", "version", "builtin")


def _registry(state: CliState) -> ModelRegistry:
    return state.services.model_registry


def _parse_options(pairs: tuple[str, ...]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--option")
        options[key] = value
    return options


@click.group("model")
def model() -> None:
    """Register, list, remove and warm up models."""


@model.command("list")
@click.option("--tenant", help="Also show this tenant's own models (slug or id).")
@click.option("--all-tenants", is_flag=True, help="Show every tenant's models.")
@json_option
@pass_state
def model_list(state: CliState, tenant: str | None, all_tenants: bool, as_json: bool) -> None:
    """List the built-in, shared and (with --tenant) tenant-owned models."""
    registry = _registry(state)
    tenant_id = None
    if tenant:
        tenant_id = state.services.tenants.get(Principal.local_operator(), tenant).id
    show(registry.list(tenant_id, all_tenants=all_tenants), as_json, MODEL_COLUMNS, "models")


@model.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(MODEL_KINDS), required=True)
@click.option(
    "--source",
    required=True,
    help="A Hugging Face-format directory (absolute path), or an upstream engine's base URL (…/v1).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--tenant", help="Make the model private to this tenant (slug or id); its files are sealed into the store."
)
@click.option("--copy", "copy_in", is_flag=True, help="Copy the directory into the model store first (shared models).")
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Runner option, e.g. remote_model=llama-3-8b or api_key_file=/etc/appliance/vllm.key (upstream).",
)
@click.option(
    "--default-temperature",
    type=click.FloatRange(0, 2),
    help="Temperature for requests that send none (chat; default: the model's generation_config.json, else 1).",
)
@click.option(
    "--default-top-p",
    type=click.FloatRange(0, 1, min_open=True),
    help="top_p for requests that send none (chat; default: generation_config.json, else 1).",
)
@click.option(
    "--default-max-tokens",
    type=click.IntRange(1, 1_000_000),
    help="Token budget for requests that send no max_tokens (chat; default: generation_config.json, else 512); "
    "the tenant policy's limits.max_tokens caps it.",
)
@json_option
@pass_state
def model_add(
    state: CliState,
    name: str,
    kind: str,
    source: str,
    device: str,
    tenant: str | None,
    copy_in: bool,
    options: tuple[str, ...],
    default_temperature: float | None,
    default_top_p: float | None,
    default_max_tokens: int | None,
    as_json: bool,
) -> None:
    """Register model NAME so requests can use it.

    A tenant-owned local model is always encrypted into the store with the tenant's data key
    (the source directory is read once and may be deleted afterwards); --copy is implied.
    """
    parsed: dict[str, object] = dict(_parse_options(options))
    for key, value in (
        ("default_temperature", default_temperature),
        ("default_top_p", default_top_p),
        ("default_max_tokens", default_max_tokens),
    ):
        if value is not None:
            parsed[key] = value
    if tenant and kind != "upstream":
        with console.status(f"sealing {source} into the model store for {tenant}"):
            info = _registry(state).add(name, kind, source, device=device, tenant=tenant, options=parsed)
        show(info, as_json, MODEL_COLUMNS)
        return
    if copy_in and kind != "upstream":
        with console.status(f"copying {source} into the model store"):
            from appliance.models.store import ModelStore

            source = str(ModelStore(state.settings.model_dir).import_directory(name, Path(source)))
    info = _registry(state).add(name, kind, source, device=device, tenant=tenant, options=parsed)
    show(info, as_json, MODEL_COLUMNS)


@model.command("remove")
@click.argument("name")
@click.option("--tenant", help="Remove the tenant's own model NAME (slug or id).")
@json_option
@pass_state
def model_remove(state: CliState, name: str, tenant: str | None, as_json: bool) -> None:
    """Unregister model NAME; a tenant-owned model's sealed files are deleted with it
    (a shared model's directory is left in place)."""
    show(_registry(state).remove(name, tenant), as_json, MODEL_COLUMNS)


@model.command("warmup")
@click.argument("name")
@click.option("--tenant", help="Resolve NAME as this tenant sees it (slug or id).")
@json_option
@pass_state
def model_warmup(state: CliState, name: str, tenant: str | None, as_json: bool) -> None:
    """Load NAME once: converts a built-in into the store on first use, checks it runs."""
    from appliance.models.manager import ModelManager, configure_torch_threads
    from appliance.models.store import ModelStore

    settings = state.settings
    configure_torch_threads(settings.models.torch_threads or None)
    quiet_progress_bars()
    registry = _registry(state)
    tenant_id = state.services.tenants.get(Principal.local_operator(), tenant).id if tenant else None
    manager = ModelManager(settings.models, registry, ModelStore(settings.model_dir))
    started = time.monotonic()
    try:
        if as_json:
            info = manager.warmup(name, tenant_id)
        else:
            with console.status(f"loading {name} (the first load of a built-in converts it, ~30 s)"):
                info = manager.warmup(name, tenant_id)
    finally:
        manager.close()
    seconds = round(time.monotonic() - started, 1)
    if as_json:
        emit_json({"model": info, "seconds": seconds})
        return
    console.print(f"[green]ready[/green] {_describe(info)} in {seconds} s")


def _describe(info: ModelInfo) -> str:
    return f"{info.name} ({info.kind}, {info.source})"


VERSION_COLUMNS = ("name", "version", "active", "kind", "job_id", "dataset_id", "created_at")


@model.command("versions")
@click.argument("name")
@click.option("--tenant", required=True, help="The tenant that owns the trained model (slug or id).")
@json_option
@pass_state
def model_versions(state: CliState, name: str, tenant: str, as_json: bool) -> None:
    """List the trained versions of the tenant's model NAME; `active` marks the one served."""
    versions = state.services.model_versions.versions(Principal.local_operator(), tenant, name)
    show(versions, as_json, VERSION_COLUMNS, f"versions of {name}")


@model.command("rollback")
@click.argument("name")
@click.option("--to", "to", type=click.IntRange(1), required=True, help="The version to serve.")
@click.option("--tenant", required=True, help="The tenant that owns the trained model (slug or id).")
@json_option
@pass_state
def model_rollback(state: CliState, name: str, to: int, tenant: str, as_json: bool) -> None:
    """Serve version N of the tenant's model NAME from the next request on (audited)."""
    info = state.services.model_versions.rollback(Principal.local_operator(), tenant, name, to)
    show(info, as_json, VERSION_COLUMNS)


@model.command("card")
@click.argument("name")
@click.option("--tenant", required=True, help="The tenant that owns the trained model (slug or id).")
@click.option("--version", type=click.IntRange(1), help="Default: the version being served.")
@json_option
@pass_state
def model_card(state: CliState, name: str, tenant: str, version: int | None, as_json: bool) -> None:
    """Show the model card of a trained version: epsilon, delta, noise, steps, metrics, ..."""
    view = state.services.model_versions.card(Principal.local_operator(), tenant, name, version)
    if as_json:
        emit_json(view)
        return
    show(view.version, False, VERSION_COLUMNS)
    rows = [{"field": k, "value": v} for k, v in sorted(view.card.items())]
    table(rows, ("field", "value"), "model card")


@model.command("remove-version")
@click.argument("name")
@click.option("--version", type=click.IntRange(1), required=True)
@click.option("--tenant", required=True, help="The tenant that owns the trained model (slug or id).")
@json_option
@pass_state
def model_remove_version(state: CliState, name: str, version: int, tenant: str, as_json: bool) -> None:
    """Delete one trained version that is not being served, with its sealed files."""
    info = state.services.model_versions.remove_version(Principal.local_operator(), tenant, name, version)
    show(info, as_json, VERSION_COLUMNS)
