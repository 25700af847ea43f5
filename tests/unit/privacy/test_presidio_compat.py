"""Presidio operators raise a type's action only where they are stricter than the policy."""

from __future__ import annotations

import pytest

from appliance.errors import InvalidInput
from appliance.privacy.presidio_compat import Operator, with_operators
from appliance.privacy.rules import Action, EntityRule, PrivacyRules

POLICY = PrivacyRules(
    default_action=Action.REPLACE,
    entities={
        "PERSON": EntityRule(action=Action.PSEUDONYMIZE),
        "LOCATION": EntityRule(action=Action.KEEP),
        "IBAN_CODE": EntityRule(action=Action.MASK, keep_last=4),
        "CREDIT_CARD": EntityRule(action=Action.BLOCK),
    },
)


@pytest.mark.parametrize(
    ("operators", "entity", "action"),
    [
        ({"PERSON": Operator("redact")}, "PERSON", Action.REDACT),
        ({"PERSON": Operator("keep")}, "PERSON", Action.PSEUDONYMIZE),
        ({"PERSON": Operator("MASK")}, "PERSON", Action.PSEUDONYMIZE),
        ({"DEFAULT": Operator("replace")}, "LOCATION", Action.REPLACE),
        ({"DEFAULT": Operator("redact"), "LOCATION": Operator("hash")}, "LOCATION", Action.HASH),
        ({"DEFAULT": Operator("redact")}, "URL", Action.REDACT),
        ({"DEFAULT": Operator("keep")}, "URL", Action.REPLACE),
        ({"CREDIT_CARD": Operator("redact")}, "CREDIT_CARD", Action.BLOCK),
        ({"PROJECT": Operator("hash")}, "PROJECT", Action.REPLACE),
        ({"PROJECT": Operator("redact")}, "PROJECT", Action.REDACT),
        ({}, "IBAN_CODE", Action.MASK),
    ],
)
def test_the_stricter_of_policy_and_operator_wins(operators: dict[str, Operator], entity: str, action: Action) -> None:
    assert with_operators(POLICY, operators).rule_for(entity).action is action


def test_a_mask_stricter_than_keep_hides_everything_in_the_callers_character() -> None:
    rule = with_operators(POLICY, {"LOCATION": Operator("mask", masking_char="#")}).rule_for("LOCATION")
    assert (rule.action, rule.keep_last, rule.mask_char) == (Action.MASK, 0, "#")
    assert with_operators(POLICY, {"IBAN_CODE": Operator("mask", "#")}).rule_for("IBAN_CODE") == POLICY.rule_for(
        "IBAN_CODE"
    )


@pytest.mark.parametrize("operator", ["encrypt", "decrypt", "custom", "shuffle"])
def test_operators_without_a_safe_meaning_are_refused(operator: str) -> None:
    with pytest.raises(InvalidInput, match=operator):
        with_operators(POLICY, {"PERSON": Operator(operator)})
