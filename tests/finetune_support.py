"""Factories for the fine-tuning tests: tenants whose policy allows fine-tuning, small
datasets, and jobs; all through the real services."""

from __future__ import annotations

import json
import secrets

from appliance.roles import Role
from appliance.services.container import Services
from appliance.services.datasets import DatasetView
from appliance.services.finetune import JobRequest, JobView
from appliance.services.principal import Principal

OP = Principal.local_operator()
COMPLIANCE = Principal(key_id=None, role=Role.COMPLIANCE)

TICKETS = [
    ("I was charged twice this month", "billing"),
    ("Please refund my last invoice", "billing"),
    ("My credit card payment failed", "billing"),
    ("Why is my bill so high", "billing"),
    ("The invoice amount is wrong", "billing"),
    ("You overcharged me", "billing"),
    ("The app crashes when I open it", "technical"),
    ("I cannot log in to my account", "technical"),
    ("The website shows an error 500", "technical"),
    ("The sync feature is not working", "technical"),
    ("The page loads very slowly", "technical"),
    ("The mobile app freezes on startup", "technical"),
]


def finetune_policy(**finetune: object) -> str:
    settings = {"allowed": True, **finetune}
    lines = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in settings.items())
    return f"extends: default\nname: finetune-test\nfinetune:\n{lines}"


def finetune_tenant(services: Services, prefix: str = "ft", **finetune: object) -> str:
    """A new tenant whose policy allows fine-tuning (with ``finetune`` overrides)."""
    slug = f"{prefix}-{secrets.token_hex(4)}"
    services.tenants.create(OP, slug)
    services.policies.apply(COMPLIANCE, slug, finetune_policy(**finetune), "fine-tuning on")
    return slug


def tickets_jsonl(rows: list[tuple[str, str]] | None = None) -> bytes:
    return "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows or TICKETS).encode()


def add_tickets(services: Services, tenant: str, name: str = "tickets", **kw: object) -> DatasetView:
    return services.datasets.add(OP, tenant, name, tickets_jsonl(), fmt="jsonl", **kw)  # type: ignore[arg-type]


def queue_job(services: Services, tenant: str, dataset: str, **kw: object) -> JobView:
    fields: dict[str, object] = {
        "dataset": dataset,
        "task": "classifier",
        "output_model": "tickets-clf",
        "target_epsilon": 1.0,
        "epochs": 1,
        "batch_size": 4,
        **kw,
    }
    return services.finetune.create(OP, tenant, JobRequest(**fields))  # type: ignore[arg-type]
