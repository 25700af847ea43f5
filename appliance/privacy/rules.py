"""What to detect and what to do with it: the ``pii`` section of a tenant policy.

These models are embedded verbatim in the policy schema (``appliance.policy``), so every
field here is something a compliance officer writes in YAML; descriptions become the
JSON Schema help text.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Action(StrEnum):
    REDACT = "redact"  # remove the value entirely
    MASK = "mask"  # replace characters with mask_char, keeping the last N
    REPLACE = "replace"  # a type tag such as <PERSON>
    HASH = "hash"  # keyed HMAC with the tenant's key: same value, same tag, not reversible
    PSEUDONYMIZE = "pseudonymize"  # reversible token such as <PERSON_1>, kept in the tenant vault
    BLOCK = "block"  # refuse the whole request (422), naming entity types only
    KEEP = "keep"  # leave as is (must be chosen explicitly)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntityRule(_Strict):
    action: Action = Field(description="What to do with values of this entity type.")
    keep_last: Annotated[int, Field(ge=0, le=32)] = Field(
        4, description="mask only: how many trailing characters stay visible."
    )
    mask_char: Annotated[str, Field(min_length=1, max_length=1)] = Field("*", description="mask only.")
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        None, description="Detections of this type below this score are ignored (default: score_threshold)."
    )


class PatternSpec(_Strict):
    regex: Annotated[str, Field(min_length=1, max_length=1000)] = Field(description="Python regular expression.")
    score: Annotated[float, Field(gt=0.0, le=1.0)] = Field(0.6, description="Confidence of a match.")


class CustomRecognizer(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
    entity_type: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")] = Field(
        description="Entity type it reports, e.g. EMPLOYEE_ID; give it a rule under `entities`."
    )
    patterns: list[PatternSpec] = Field(default_factory=list, description="Regexes that find the entity.")
    deny_list: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, description="Exact words or phrases that are always this entity."
    )
    context: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, description="Nearby words that raise confidence (e.g. 'employee', 'badge')."
    )


class PrivacyRules(_Strict):
    """Detection and transformation rules for one tenant."""

    default_action: Action = Field(
        Action.REPLACE, description="Action for detected entity types that have no rule under `entities`."
    )
    entities: dict[Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")], EntityRule] = Field(
        default_factory=dict, description="Per entity type (PERSON, EMAIL_ADDRESS, ...): the action and its options."
    )
    score_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.4, description="Detections below this confidence are ignored."
    )
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2}$")]] = Field(
        default_factory=lambda: ["en"], description="Languages of the text (needs a matching NER model)."
    )
    detect: list[str] | None = Field(
        None,
        description=(
            "Only these entity types are detected; omit to detect every supported type. A list "
            "without PERSON, LOCATION, NRP, DATE_TIME and ORGANIZATION skips the NER model, which "
            "makes detection about six times cheaper per text."
        ),
    )
    allow_list: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, description="Values never treated as PII (e.g. the company's own name)."
    )
    custom_recognizers: list[CustomRecognizer] = Field(default_factory=list)

    def rule_for(self, entity_type: str) -> EntityRule:
        return self.entities.get(entity_type) or EntityRule(action=self.default_action)
