"""Printing: rich tables for people, ``--json`` for scripts (stdout only, nothing else)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from appliance.errors import ApplianceError

console = Console()
err_console = Console(stderr=True)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), indent=2, sort_keys=True) + "\n")


def table(rows: Sequence[Any], columns: Sequence[str], title: str | None = None) -> None:
    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    for row in rows:
        data = _plain(row)
        t.add_row(*("" if data.get(c) is None else str(data.get(c)) for c in columns))
    console.print(t)


def show(value: Any, as_json: bool, columns: Sequence[str], title: str | None = None) -> None:
    if as_json:
        emit_json(value)
    else:
        table(value if isinstance(value, list) else [value], columns, title)


def error_text(exc: Exception) -> str:
    """How the CLI words a failure in one line: the appliance's own message, else only the
    exception's type (its text may hold values). Re-raises under ``APPLIANCE_DEBUG=1``."""
    if isinstance(exc, ApplianceError):
        return exc.detail
    if os.environ.get("APPLIANCE_DEBUG"):
        raise exc
    return f"unexpected {type(exc).__name__}; rerun with APPLIANCE_DEBUG=1 for details"


@contextmanager
def progress_bars(labels: Mapping[str, str], quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A ``(phase, done, total)`` callback drawing one rich bar per phase on stderr (stdout stays
    clean for ``--json``). ``labels`` names the phases; ``quiet`` draws nothing."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(labels.get(phase, phase), total=total)
        progress.update(tasks[phase], completed=done, total=total)

    with progress:
        yield update


def quiet_progress_bars() -> None:
    """transformers' per-tensor "Loading weights" bars would tear through the spinner and
    the server log; the spinner already says what loads."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
