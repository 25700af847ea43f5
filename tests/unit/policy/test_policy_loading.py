"""Policy YAML: presets load, extends merges, and every kind of mistake is caught with its place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.policy.loader import PolicyError, load_policy_text, preset_names, preset_text
from appliance.policy.schema import json_schema
from appliance.privacy.rules import Action

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", ["default", "gdpr-strict", "hipaa", "pci-dss"])
def test_every_shipped_preset_is_valid(name: str) -> None:
    assert name in preset_names()
    assert load_policy_text(preset_text(name)).name == name


def test_shipped_json_schema_is_current() -> None:
    on_disk = json.loads((ROOT / "policies" / "schema.json").read_text())
    assert on_disk == json_schema(), "run: appliance policy schema > policies/schema.json"


def test_extends_merges_mappings_and_overrides_fields() -> None:
    p = load_policy_text(
        "extends: hipaa\nname: clinic\npii:\n  entities:\n    PERSON: {action: replace}\n  allow_list: [Acme Health]\n"
    )
    assert p.extends == "hipaa"
    assert p.pii.rule_for("PERSON").action is Action.REPLACE  # overridden
    assert p.pii.rule_for("US_SSN").action is Action.BLOCK  # inherited
    assert p.pii.allow_list == ["Acme Health"]
    assert p.retention.audit_days == 2190


def test_empty_document_is_the_schema_defaults() -> None:
    p = load_policy_text("")
    assert p.pii.default_action is Action.REPLACE
    assert p.anonymizes_anything


def test_turning_anonymization_off_needs_an_acknowledgement() -> None:
    off = "pii:\n  default_action: keep\n"
    with pytest.raises(PolicyError, match="acknowledge_no_anonymization"):
        load_policy_text(off)
    assert not load_policy_text(off + "acknowledge_no_anonymization: true\n").anonymizes_anything


def test_acknowledgement_is_not_inherited_from_a_preset() -> None:
    with pytest.raises(PolicyError):
        load_policy_text("extends: default\npii:\n  detect: []\n")


BAD_POLICIES = [
    ("invalid-yaml", "pii: [unclosed\n", "", "invalid YAML", 2),
    ("tab-indent", "pii:\n\tdefault_action: keep\n", "", "invalid YAML", 2),
    ("not-a-mapping", "- just\n- a list\n", "", "must be a mapping", 1),
    ("unknown-top-field", "name: x\nretension: {}\n", "retension", "unknown field", 2),
    ("unknown-nested-field", "pii:\n  entitys: {}\n", "pii.entitys", "unknown field", 2),
    (
        "bad-action",
        "pii:\n  entities:\n    PERSON: {action: scramble}\n",
        "pii.entities.PERSON.action",
        "Input should be",
        3,
    ),
    ("wrong-type", "retention:\n  audit_days: forever\n", "retention.audit_days", "valid integer", 2),
    ("out-of-range", "pii:\n  score_threshold: 1.5\n", "pii.score_threshold", "less than or equal", 2),
    ("bad-entity-name", "pii:\n  entities:\n    person: {action: replace}\n", "pii.entities.person", "pattern", 3),
    ("duplicate-key", "name: a\nname: b\n", "name", "duplicate key", 2),
    ("unknown-preset", "extends: sox\n", "extends", "unknown preset", 1),
    (
        "bad-regex",
        "pii:\n  custom_recognizers:\n    - name: emp\n      entity_type: EMP\n      patterns:\n        - regex: 'EMP-(\\d+'\n",
        "pii.custom_recognizers[0].patterns[0].regex",
        "invalid regular expression",
        6,
    ),
    (
        "catastrophic-regex",
        "pii:\n  custom_recognizers:\n    - name: emp\n      entity_type: EMP\n      patterns:\n        - regex: '(\\w+\\s?)+$'\n",
        "pii.custom_recognizers[0].patterns[0].regex",
        "exponential",
        6,
    ),
    (
        "empty-matching-regex",
        "pii:\n  custom_recognizers:\n    - name: emp\n      entity_type: EMP\n      patterns:\n        - regex: 'x*'\n",
        "pii.custom_recognizers[0].patterns[0].regex",
        "empty string",
        6,
    ),
    (
        "recognizer-without-patterns",
        "pii:\n  custom_recognizers:\n    - name: emp\n      entity_type: EMP\n",
        "pii.custom_recognizers[0]",
        "at least one pattern",
        3,
    ),
    (
        "duplicate-recognizer-name",
        "pii:\n  custom_recognizers:\n    - {name: a, entity_type: X, deny_list: [p]}\n    - {name: a, entity_type: Y, deny_list: [q]}\n",
        "pii.custom_recognizers[1].name",
        "used twice",
        4,
    ),
    (
        "rule-for-undetected-type",
        "pii:\n  detect: [EMAIL_ADDRESS]\n  entities:\n    PERSON: {action: replace}\n",
        "pii.entities.PERSON",
        "no effect",
        4,
    ),
    (
        "deny-and-allow-same-value",
        "pii:\n  allow_list: [Acme]\n  custom_recognizers:\n    - {name: a, entity_type: ORG_SECRET, deny_list: [acme]}\n",
        "pii.custom_recognizers[0].deny_list[0]",
        "allow_list",
        4,
    ),
    (
        "mask-options-on-other-action",
        "pii:\n  entities:\n    PERSON: {action: replace, keep_last: 2}\n",
        "pii.entities.PERSON",
        "only apply to action: mask",
        3,
    ),
    (
        "payload-outlives-audit",
        "retention:\n  payload_days: 30\n  audit_days: 10\n",
        "retention.payload_days",
        "longer than",
        2,
    ),
    (
        "dataset-epsilon-above-total",
        "finetune:\n  max_epsilon_per_dataset: 5\n  max_epsilon_total: 2\n",
        "finetune.max_epsilon_per_dataset",
        "exceeds",
        2,
    ),
    ("anonymization-off-unacknowledged", "pii:\n  detect: []\n", "pii", "acknowledge_no_anonymization", 1),
    ("schema-version", "schema_version: 2\n", "schema_version", "Input should be 1", 1),
]


@pytest.mark.parametrize(
    ("text", "field", "message", "line"), [b[1:] for b in BAD_POLICIES], ids=[b[0] for b in BAD_POLICIES]
)
def test_bad_policy_is_rejected_with_field_path_and_line(text: str, field: str, message: str, line: int) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text)
    issues = info.value.issues
    assert any(i.path == field and message in i.message for i in issues), issues
    assert any(i.line == line for i in issues if i.path == field), issues


def test_oversized_policy_is_rejected() -> None:
    with pytest.raises(PolicyError, match="larger than"):
        load_policy_text("description: '" + "x" * 300_000 + "'\n")
