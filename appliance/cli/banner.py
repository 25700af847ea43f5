"""What ``appliance serve`` says once at start: which models, which database (never its
credentials), where the data lives and where it listens. A few lines for people in the
console format; one record with the same facts in the JSON format."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import appliance
from appliance.cli.output import err_console
from appliance.services.container import Services

log = logging.getLogger("appliance.start")


@dataclass(frozen=True)
class StartFacts:
    version: str
    listening: str
    models: list[str]
    """``name (kind, loaded|on first use)`` for the defaults, then the registered count."""
    pii_model: str
    database: str
    data_dir: str


def start_facts(services: Services, listening: str) -> StartFacts:
    s = services.settings
    loaded = {name for _, name in services.models.loaded()}
    models = [
        f"{name} ({kind}, {'loaded' if name in loaded else 'loads on first use'})"
        for name, kind in ((s.models.default_chat, "chat"), (s.models.default_embedding, "embedding"))
    ]
    registered = [m for m in services.model_registry.list(all_tenants=True) if not m.builtin]
    if registered:
        models.append(f"{len(registered)} more registered (`appliance model list --all-tenants`)")
    pii = "patterns only (no NER model)" if s.privacy.patterns_only else s.privacy.nlp_model
    return StartFacts(
        version=appliance.__version__,
        listening=listening,
        models=models,
        pii_model=pii,
        database=services.schema.describe(),
        data_dir=str(s.data_dir),
    )


def announce(facts: StartFacts, fmt: str) -> None:
    if fmt == "json":
        log.info("appliance %s listening on %s", facts.version, facts.listening, extra=asdict(facts))
        return
    err_console.print(
        f"[bold]appliance {facts.version}[/bold] listening on [bold]{facts.listening}[/bold]\n"
        f"  models:   {'; '.join(facts.models)}\n"
        f"  PII NER:  {facts.pii_model}\n"
        f"  database: {facts.database}\n"
        f"  data dir: {facts.data_dir}",
        highlight=False,
        soft_wrap=True,
    )
