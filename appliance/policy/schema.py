"""The policy document a compliance officer writes. Every field has a description that
becomes help text in ``policies/schema.json`` (editors autocomplete and validate from it).

Cross-field rules ("contradictory settings") live in :mod:`appliance.policy.lint` so that
errors can name the field path and the YAML line.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from appliance.privacy.rules import Action, PrivacyRules

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelAccess(_Strict):
    allowed: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=lambda: ["*"],
        description="Model names this tenant may call; '*' allows every model registered for it.",
    )


class Egress(_Strict):
    restore_pseudonyms: bool = Field(
        True, description="Put the original values back into the model's answer for the caller."
    )
    scan_output: bool = Field(
        False, description="Also detect PII that the model itself produced and apply output_action to it."
    )
    output_action: Literal["redact", "mask", "replace", "keep"] = Field(
        "replace", description="What to do with PII found in model output when scan_output is on."
    )


class Retention(_Strict):
    payload_days: Annotated[int, Field(ge=0, le=3650)] = Field(
        0, description="Keep request/response payloads (encrypted) this many days; 0 keeps none."
    )
    audit_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        365, description="Keep audit entries this many days, then purge them."
    )
    vault_ttl_hours: Annotated[int, Field(ge=1, le=8760)] = Field(
        24, description="How long a pseudonym stays restorable."
    )


class FineTuning(_Strict):
    allowed: bool = Field(False, description="May this tenant upload datasets and fine-tune models on them?")
    max_epsilon_per_dataset: Annotated[float, Field(gt=0, le=100)] = Field(
        3.0,
        description="Largest differential-privacy epsilon all jobs together may spend on one dataset, "
        "composed over its jobs with the RDP accountant; never renewed.",
    )
    max_epsilon_total: Annotated[float, Field(gt=0, le=1000)] = Field(
        10.0, description="Total epsilon the tenant's jobs may spend per period (the jobs' epsilons summed)."
    )
    period_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        365, description="Length of the period max_epsilon_total counts over (a sliding window)."
    )
    delta: Annotated[float, Field(gt=0, lt=0.001)] = Field(
        1e-5, description="Largest DP delta a job may use; a job's own delta must also stay below 1/rows."
    )
    max_dataset_rows: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        50_000, description="Most rows one uploaded dataset may hold."
    )
    max_dataset_bytes: Annotated[int, Field(ge=1024, le=1_073_741_824)] = Field(
        20_971_520, description="Largest dataset file accepted, in bytes (before anonymization)."
    )


class Limits(_Strict):
    max_request_bytes: Annotated[int, Field(ge=1024, le=1_073_741_824)] = Field(
        1_048_576, description="Largest request body accepted for this tenant."
    )
    requests_per_minute: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        600, description="Requests per minute across the tenant's keys; more get 429."
    )
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        2048, description="Upper bound on max_tokens a caller may ask for."
    )


class Policy(_Strict):
    """A tenant's privacy policy."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Appliance tenant policy")

    schema_version: Literal[1] = Field(1, description="Version of this schema; currently 1.")
    name: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        "custom", description="A short name people recognise."
    )
    description: Annotated[str, Field(max_length=2000)] = Field("", description="What this policy is for.")
    extends: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")] | None = Field(
        None,
        description="A shipped preset to start from (default, gdpr-strict, hipaa, pci-dss); fields here override it.",
    )
    pii: PrivacyRules = Field(default_factory=PrivacyRules, description="What to detect and how to transform it.")
    models: ModelAccess = Field(default_factory=ModelAccess)
    egress: Egress = Field(default_factory=Egress)
    retention: Retention = Field(default_factory=Retention)
    finetune: FineTuning = Field(default_factory=FineTuning)
    limits: Limits = Field(default_factory=Limits)
    acknowledge_no_anonymization: bool = Field(
        False,
        description="Must be true for a policy that lets personal data reach models untouched. "
        "Think twice; this is recorded in the audit trail.",
    )

    def allows_model(self, name: str) -> bool:
        return "*" in self.models.allowed or name in self.models.allowed

    @property
    def anonymizes_anything(self) -> bool:
        rules = self.pii
        if rules.detect is not None and not rules.detect:
            return False
        actions = {rules.default_action, *(r.action for r in rules.entities.values())}
        return actions != {Action.KEEP}


def json_schema() -> dict[str, object]:
    """The JSON Schema editors use to validate and autocomplete policy YAML."""
    schema = Policy.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "urn:appliance:policy:v1", **schema}
