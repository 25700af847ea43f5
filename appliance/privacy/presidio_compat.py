"""Presidio's vocabulary mapped onto the tenant policy, so a Presidio client can switch by URL.

Two things a Presidio caller sends need translating:

- the anonymizer's ``anonymizers`` map (``{"PERSON": {"type": "redact"}, "DEFAULT": ...}``):
  each operator becomes one of the policy's actions, and it is used only when it is at
  least as strict as the action the tenant's policy already sets for that type. A caller
  can ask for more protection, never for less. Strictness, weakest first:
  ``keep < mask < pseudonymize < hash < replace < redact``; ``block`` in the policy
  always blocks.
- ``return_decision_process``: a reason per detection, from what found it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from appliance.errors import InvalidInput
from appliance.privacy.names import GRAMMAR, NEAR_EMAIL, PROPAGATED
from appliance.privacy.rules import Action, EntityRule, PrivacyRules
from appliance.privacy.spans import Detection

DEFAULT = "DEFAULT"
"""Presidio's key for "every entity type without its own operator"."""

STRICTNESS: dict[Action, int] = {
    Action.KEEP: 0,
    Action.MASK: 1,
    Action.PSEUDONYMIZE: 2,  # reversible for the caller, within its scope and TTL
    Action.HASH: 3,  # irreversible, but the same value keeps the same tag within the tenant
    Action.REPLACE: 4,  # a type tag only
    Action.REDACT: 5,  # nothing left
    Action.BLOCK: 6,
}

_OPERATORS: dict[str, Action] = {
    "keep": Action.KEEP,
    "mask": Action.MASK,
    "hash": Action.HASH,
    "replace": Action.REPLACE,
    "redact": Action.REDACT,
    "pseudonymize": Action.PSEUDONYMIZE,  # not Presidio's: the appliance's reversible tokens
}
_REFUSED = {
    "encrypt": "values are kept encrypted by the appliance itself: use pseudonymize (tokens restorable for the "
    "tenant) instead of a caller-held key",
    "decrypt": "the appliance never decrypts on request: restoration happens in model answers",
    "custom": "custom operators run caller code; they are not accepted",
}


@dataclass(frozen=True)
class Operator:
    """One entry of Presidio's ``anonymizers`` map (the fields the appliance can honour)."""

    type: str
    masking_char: str | None = None


def _action(entity: str, operator: Operator) -> Action:
    kind = operator.type.strip().lower()
    if kind in _REFUSED:
        raise InvalidInput(f"anonymizers.{entity}: operator {kind!r} is not supported: {_REFUSED[kind]}")
    if kind not in _OPERATORS:
        raise InvalidInput(
            f"anonymizers.{entity}: unknown operator {kind!r}; use one of {', '.join(sorted(_OPERATORS))}"
        )
    return _OPERATORS[kind]


def _stricter(policy: EntityRule, entity: str, operator: Operator | None) -> EntityRule:
    if operator is None:
        return policy
    wanted = _action(entity, operator)
    if policy.action is Action.BLOCK or STRICTNESS[wanted] <= STRICTNESS[policy.action]:
        return policy  # equal: the policy's own options (keep_last, mask_char) stay
    if wanted is Action.MASK:  # stricter than keep only: everything masked, in the caller's character
        return EntityRule(action=Action.MASK, keep_last=0, mask_char=(operator.masking_char or "*")[:1])
    return EntityRule(action=wanted)


def with_operators(rules: PrivacyRules, operators: Mapping[str, Operator]) -> PrivacyRules:
    """``rules`` with each type's action raised to the caller's operator where that is stricter."""
    for entity in operators:
        if entity != DEFAULT and not entity.replace("_", "").isalnum():
            raise InvalidInput(f"anonymizers: {entity!r} is not an entity type")
    fallback = operators.get(DEFAULT)
    default_rule = _stricter(EntityRule(action=rules.default_action), DEFAULT, fallback)
    entities = {
        entity: _stricter(rule, entity, operators.get(entity) or fallback) for entity, rule in rules.entities.items()
    }
    for entity, operator in operators.items():
        if entity != DEFAULT and entity not in entities:
            entities[entity] = _stricter(default_rule, entity, operator)
    return rules.model_copy(update={"default_action": default_rule.action, "entities": entities})


_REASONS = {
    "SpacyRecognizer": "the NER model tagged it",
    GRAMMAR: "the grammar around it marks a name (a title, role or kinship noun, speech verb, dialogue speaker, "
    "list of names or the answer to a question for a name)",
    PROPAGATED: "the same name was found elsewhere in this request",
    NEAR_EMAIL: "a capitalized name beside an e-mail address whose mailbox spells it",
    "CueNameRecognizer": "a name after a phrase that announces one ('my name is', 'Hi ...,', 'Customer:')",
    "EmailRecognizer": "an e-mail address pattern with a valid domain",
    "SpelledEmailRecognizer": "an e-mail address written out ('ann at example dot org')",
    "CreditCardRecognizer": "a card number pattern with a valid Luhn checksum",
    "WideCreditCardRecognizer": "a card number pattern with a valid Luhn checksum",
    "PhoneNumberRecognizer": "a number libphonenumber parses as a phone number for a known region",
    "IbanRecognizer": "an IBAN pattern with a valid ISO 13616 checksum",
    "IpRecognizer": "an IPv4 or IPv6 address pattern",
    "DateRecognizer": "a date pattern",
    "UrlRecognizer": "a URL pattern",
    "UsSsnRecognizer": "a US social security number pattern",
}


def reason(detection: Detection, rules: PrivacyRules) -> str:
    """Why ``detection`` was reported, in words (never quoting the value)."""
    name = detection.recognizer
    if any(c.name == name for c in rules.custom_recognizers):
        return f"the policy's custom recognizer {name!r}"
    if name in _REASONS:
        return _REASONS[name]
    return f"the {name} pattern recognizer" if name else "detected"
