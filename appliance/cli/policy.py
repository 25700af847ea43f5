"""``appliance policy ...``: lint, test, apply, history, diff, rollback, schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from appliance.cli.context import CliState, pass_state
from appliance.cli.output import console, emit_json, json_option, show
from appliance.policy.loader import PolicyError, load_policy_text
from appliance.policy.schema import json_schema
from appliance.services.paging import MAX_PAGE, every
from appliance.services.principal import Principal

VERSION_COLUMNS = ("version", "active", "author", "created_at", "content_hash", "comment")


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"cannot read {path}: {exc}") from None


@click.group("policy")
def policy() -> None:
    """Write, check, apply and roll back tenant policies."""


@policy.command("schema")
def policy_schema() -> None:
    """Print the policy JSON Schema (for editors)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


@policy.command("lint")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@json_option
def policy_lint(file: Path, as_json: bool) -> None:
    """Check FILE; every problem is printed with its line, column and field. Exit 2 if any."""
    try:
        p = load_policy_text(_read(file))
    except PolicyError as exc:
        if as_json:
            emit_json({"ok": False, "issues": exc.issues})
        else:
            for issue in exc.issues:
                click.echo(f"{file}:{issue}", err=True)
        sys.exit(2)
    if as_json:
        emit_json({"ok": True, "name": p.name})
    else:
        console.print(f"{file}: ok ({p.name})")


@policy.command("test")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--text", "texts", multiple=True, help="Sample text (repeatable).")
@click.option("--file", "sample", type=click.Path(path_type=Path, dir_okay=False), help="Sample text file.")
@json_option
@pass_state
def policy_test(state: CliState, file: Path, texts: tuple[str, ...], sample: Path | None, as_json: bool) -> None:
    """Run FILE on sample text: each detection and the text a model would see. Stores nothing."""
    samples = list(texts) + ([_read(sample)] if sample else [])
    if not samples:
        raise click.UsageError("give --text or --file")
    try:
        p = load_policy_text(_read(file))
    except PolicyError as exc:
        for issue in exc.issues:
            click.echo(f"{file}:{issue}", err=True)
        sys.exit(2)
    result = state.services.privacy.preview(samples, p.pii)
    if as_json:
        emit_json(
            {
                "blocked": result.blocked,
                "texts": result.texts,
                "detections": [
                    [
                        {
                            "entity_type": d.entity_type,
                            "start": d.start,
                            "end": d.end,
                            "score": round(d.score, 3),
                            "text": t[d.start : d.end],
                        }
                        for d in ds
                    ]
                    for t, ds in zip(samples, result.detections, strict=True)
                ],
            }
        )
        return
    for i, (t, ds) in enumerate(zip(samples, result.detections, strict=True)):
        rows = [
            {
                "entity_type": d.entity_type,
                "text": t[d.start : d.end],
                "span": f"{d.start}-{d.end}",
                "score": f"{d.score:.2f}",
                "action": p.pii.rule_for(d.entity_type).action.value,
            }
            for d in ds
        ]
        show(rows, False, ("entity_type", "text", "span", "score", "action"), f"sample {i + 1}: detections")
        if result.texts is not None:
            click.echo(f"model sees: {result.texts[i]}")
    if result.blocked:
        click.echo(f"BLOCKED: the request would be refused (422) for {', '.join(result.blocked)}")


@policy.command("apply")
@click.argument("tenant")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--comment", "-m", required=True, help="Why this change (kept, encrypted, in the history).")
@json_option
@pass_state
def policy_apply(state: CliState, tenant: str, file: Path, comment: str, as_json: bool) -> None:
    """Validate FILE and make it TENANT's active policy (a new immutable version)."""
    view = state.services.policies.apply(Principal.local_operator(), tenant, _read(file), comment)
    show(view, as_json, VERSION_COLUMNS)


@policy.command("history")
@click.argument("tenant")
@json_option
@pass_state
def policy_history(state: CliState, tenant: str, as_json: bool) -> None:
    """List TENANT's policy versions."""
    op = Principal.local_operator()
    versions = every(lambda cursor: state.services.policies.history(op, tenant, cursor=cursor, limit=MAX_PAGE))
    show(list(versions), as_json, VERSION_COLUMNS, "versions")


@policy.command("show")
@click.argument("tenant")
@click.argument("version", type=int)
@pass_state
def policy_show(state: CliState, tenant: str, version: int) -> None:
    """Print the YAML of one version."""
    sys.stdout.write(state.services.policies.get(Principal.local_operator(), tenant, version).document)


@policy.command("diff")
@click.argument("tenant")
@click.argument("v1", type=int)
@click.argument("v2", type=int)
@json_option
@pass_state
def policy_diff(state: CliState, tenant: str, v1: int, v2: int, as_json: bool) -> None:
    """Show what changed between two versions: fields, then the text."""
    d = state.services.policies.diff(Principal.local_operator(), tenant, v1, v2)
    if as_json:
        emit_json(d)
        return
    for c in d.changes:
        console.print(f"[bold]{c.path}[/bold]: {c.old!r} -> {c.new!r}", soft_wrap=True)
    if not d.changes:
        console.print("no effective change")
    click.echo(d.text_diff, nl=False)


@policy.command("rollback")
@click.argument("tenant")
@click.argument("version", type=int)
@click.option("--comment", "-m", default="", help="Why (default: 'rollback to version N').")
@json_option
@pass_state
def policy_rollback(state: CliState, tenant: str, version: int, comment: str, as_json: bool) -> None:
    """Make VERSION's rules active again (recorded as a new version)."""
    show(
        state.services.policies.rollback(Principal.local_operator(), tenant, version, comment), as_json, VERSION_COLUMNS
    )
