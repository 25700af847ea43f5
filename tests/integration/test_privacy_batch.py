"""Ingress anonymization batched across concurrent requests: one detection pass for many
requests, and each request's outcome exactly what it would have been alone."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from appliance.errors import Blocked, InvalidInput
from appliance.privacy.rules import PrivacyRules
from appliance.services.container import Services
from appliance.services.principal import Principal
from appliance.services.privacy import AnonymizeCall, Anonymized
from appliance.services.privacy_batch import AnonymizeBatcher

TTL = timedelta(hours=1)
CONVERSATIONS = [
    ["Hi, I am Anna Berg, write to anna.berg@example.org", "Berg here again"],
    ["Please call Omar Haddad on +1 212 555 0187."],
    ["The quarterly report shows steady growth."],
    ["Mail from jo@example.net about the Lisbon office", "and Jo wants an answer"],
]


def _rules(services: Services, tenant_id: str) -> PrivacyRules:
    return services.policies.effective(tenant_id).policy.pii


def _tenant(services: Services) -> str:
    return services.tenants.create(Principal.local_operator(), "batch").id


def _alone(services: Services, tenant_id: str, rules: PrivacyRules, texts: list[str], scope: str) -> Anonymized:
    return services.privacy.anonymize(tenant_id, texts, rules, scope=scope, ttl=TTL)


def test_each_call_gets_what_it_would_have_got_alone(services: Services) -> None:
    tenant_id = _tenant(services)
    rules = _rules(services, tenant_id)
    calls = [AnonymizeCall(tenant_id, texts, rules, f"together-{i}", TTL) for i, texts in enumerate(CONVERSATIONS)]
    together = services.privacy.anonymize_many(calls)
    for i, (texts, outcome) in enumerate(zip(CONVERSATIONS, together, strict=True)):
        assert isinstance(outcome, Anonymized)
        alone = _alone(services, tenant_id, rules, texts, f"alone-{i}")  # a fresh scope numbers the same way
        assert outcome.texts == alone.texts
        assert outcome.audit_facts() == alone.audit_facts()
        assert outcome.scope == f"together-{i}"
    assert "Anna Berg" not in together[0].texts[0]  # type: ignore[union-attr]
    assert "Berg" not in together[0].texts[1]  # type: ignore[union-attr]  # propagated inside the request


def test_a_name_seen_in_one_request_is_not_propagated_into_another(services: Services) -> None:
    tenant_id = _tenant(services)
    rules = _rules(services, tenant_id)
    # Lowercase and used like a word: a name only where the request named her (the name
    # model alone would tag "marta zyxkowski sent the file").
    mention = "the marta zyxkowski report is attached"
    assert services.privacy.anonymize(tenant_id, [mention], rules).texts == [mention]
    first, second = services.privacy.anonymize_many(
        [
            AnonymizeCall(tenant_id, ["I am Marta Zyxkowski.", mention], rules),
            AnonymizeCall(tenant_id, [mention], rules),
        ]
    )
    assert isinstance(first, Anonymized) and isinstance(second, Anonymized)
    assert "zyxkowski" not in first.texts[1]
    assert second.texts == [mention]


def test_a_blocked_or_invalid_call_fails_alone(services: Services) -> None:
    tenant_id = _tenant(services)
    rules = _rules(services, tenant_id)
    too_long = "a" * (services.settings.privacy.max_text_chars + 1)
    outcomes = services.privacy.anonymize_many(
        [
            AnonymizeCall(tenant_id, ["Card 4111 1111 1111 1111 please"], rules),
            AnonymizeCall(tenant_id, ["Hello from Anna Berg"], rules),
            AnonymizeCall(tenant_id, [too_long], rules),
            AnonymizeCall(tenant_id, ["fine"], rules, scope=""),
            AnonymizeCall(tenant_id, ["Nothing personal here."], rules),
        ]
    )
    assert isinstance(outcomes[0], Blocked) and outcomes[0].entity_types == ["CREDIT_CARD"]
    assert isinstance(outcomes[1], Anonymized) and "Anna Berg" not in outcomes[1].texts[0]
    assert isinstance(outcomes[2], InvalidInput)
    assert isinstance(outcomes[3], InvalidInput)
    assert isinstance(outcomes[4], Anonymized) and outcomes[4].texts == ["Nothing personal here."]


def test_calls_under_different_rules_keep_their_own_rules(services: Services) -> None:
    tenant_id = _tenant(services)
    rules = _rules(services, tenant_id)
    strict = rules.model_copy(update={"default_action": "redact", "entities": {}})
    text = ["Write to anna.berg@example.org today"]
    default, redacted = services.privacy.anonymize_many(
        [AnonymizeCall(tenant_id, text, rules, "r1"), AnonymizeCall(tenant_id, text, strict)]
    )
    assert isinstance(default, Anonymized) and isinstance(redacted, Anonymized)
    assert default.texts == _alone(services, tenant_id, rules, text, "r2").texts
    assert redacted.texts == services.privacy.anonymize(tenant_id, text, strict).texts
    assert default.texts != redacted.texts


def test_concurrent_requests_share_detection_passes(services: Services) -> None:
    tenant_id = _tenant(services)
    rules = _rules(services, tenant_id)
    batcher = AnonymizeBatcher(services.privacy)
    conversations = CONVERSATIONS * 4

    async def go() -> list[Anonymized]:
        calls = [
            batcher.anonymize(AnonymizeCall(tenant_id, texts, rules, f"c-{i}", TTL))
            for i, texts in enumerate(conversations)
        ]
        return list(await asyncio.gather(*calls))

    try:
        outcomes = asyncio.run(go())
    finally:
        batcher.close()
    assert batcher.calls == len(conversations)
    assert batcher.batches < len(conversations)
    for i, (texts, outcome) in enumerate(zip(conversations, outcomes, strict=True)):
        assert outcome.texts == _alone(services, tenant_id, rules, texts, f"solo-{i}").texts


def test_a_blocked_request_raises_for_its_caller_only(services: Services) -> None:
    tenant_id = _tenant(services)
    rules = _rules(services, tenant_id)
    batcher = AnonymizeBatcher(services.privacy)

    async def go() -> list[Anonymized | BaseException]:
        calls = [
            batcher.anonymize(AnonymizeCall(tenant_id, [text], rules))
            for text in ("Card 4111 1111 1111 1111 please", "Hello there", "Call +1 212 555 0187")
        ]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    try:
        outcomes = asyncio.run(go())
    finally:
        batcher.close()
    assert isinstance(outcomes[0], Blocked)
    assert isinstance(outcomes[1], Anonymized) and outcomes[1].texts == ["Hello there"]
    assert isinstance(outcomes[2], Anonymized) and "555" not in outcomes[2].texts[0]


def test_batcher_refuses_new_work_after_close(services: Services) -> None:
    batcher = AnonymizeBatcher(services.privacy)
    batcher.close()
    call = AnonymizeCall("t", ["x"], PrivacyRules())
    with pytest.raises(Exception, match="shutting down"):
        asyncio.run(batcher.anonymize(call))
