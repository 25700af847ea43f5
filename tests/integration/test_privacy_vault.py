"""Pseudonym vault and the privacy service on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from appliance.config import PrivacySettings
from appliance.crypto.records import TenantCipher
from appliance.db.models import Pseudonym
from appliance.errors import Blocked
from appliance.privacy.detection import Detector
from appliance.privacy.rules import EntityRule, PrivacyRules
from appliance.privacy.vault import PseudonymVault
from appliance.services.container import Services
from appliance.services.principal import Principal
from appliance.services.privacy import PrivacyService

PSEUDO = PrivacyRules(default_action="pseudonymize")
TTL = timedelta(hours=1)


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(PrivacySettings())


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def tenant(services: Services, name: str = "acme") -> str:
    return services.tenants.create(Principal.local_operator(), name).id


def vault(services: Services, clock: Clock | None = None) -> PseudonymVault:
    return PseudonymVault(
        services.sessions, services.data_keys, TenantCipher(services.data_keys), clock=clock or Clock()
    )


def privacy(services: Services, detector: Detector) -> PrivacyService:
    return PrivacyService(detector, vault(services), services.data_keys, default_ttl=TTL)


def test_same_value_gets_same_token_within_a_scope_and_a_new_one_in_another(services: Services) -> None:
    t = tenant(services)
    v = vault(services)
    items = [("PERSON", "Anna Berg"), ("PERSON", "Jo Lee"), ("EMAIL_ADDRESS", "anna@example.org")]
    first = v.tokens(t, "conv-1", items, TTL)
    assert first == {
        ("PERSON", "Anna Berg"): "<PERSON_1>",
        ("PERSON", "Jo Lee"): "<PERSON_2>",
        ("EMAIL_ADDRESS", "anna@example.org"): "<EMAIL_ADDRESS_1>",
    }
    again = v.tokens(t, "conv-1", [("PERSON", "anna  BERG"), ("PERSON", "Kim Park")], TTL)
    assert again == {("PERSON", "anna  BERG"): "<PERSON_1>", ("PERSON", "Kim Park"): "<PERSON_3>"}
    other = v.tokens(t, "conv-2", [("PERSON", "Kim Park")], TTL)
    assert other == {("PERSON", "Kim Park"): "<PERSON_1>"}
    assert v.originals(t, "conv-1", ["<PERSON_1>", "<PERSON_3>"]) == {
        "<PERSON_1>": "Anna Berg",
        "<PERSON_3>": "Kim Park",
    }
    assert v.originals(t, "conv-2", ["<PERSON_1>"]) == {"<PERSON_1>": "Kim Park"}


def test_tokens_of_one_tenant_are_not_restorable_by_another(services: Services) -> None:
    a, b = tenant(services, "a"), tenant(services, "b")
    v = vault(services)
    v.tokens(a, "conv", [("PERSON", "Anna Berg")], TTL)
    assert v.originals(b, "conv", ["<PERSON_1>"]) == {}


def test_vault_rows_hold_no_plaintext_and_are_bound_to_their_row(services: Services) -> None:
    t = tenant(services)
    v = vault(services)
    v.tokens(t, "conversation-xyz", [("PERSON", "Zebulon Quartermaine")], TTL)
    with services.sessions() as s:
        row = s.scalars(select(Pseudonym)).one()
    blob = b"".join(
        [row.scope_digest, row.value_digest, row.value_sealed, row.token.encode(), row.entity_type.encode()]
    )
    for needle in ("Zebulon", "Quartermaine", "zebulon quartermaine", "conversation-xyz"):
        assert needle.encode() not in blob
    assert len(row.scope_digest) == 32 and len(row.value_digest) == 32


def test_pseudonyms_expire_and_purge_removes_them(services: Services) -> None:
    t = tenant(services)
    clock = Clock()
    v = vault(services, clock)
    v.tokens(t, "c", [("PERSON", "Anna Berg")], timedelta(minutes=5))
    clock.now += timedelta(minutes=4)
    v.tokens(t, "c", [("PERSON", "Anna Berg")], timedelta(minutes=5))  # use extends the life
    clock.now += timedelta(minutes=4)
    assert v.originals(t, "c", ["<PERSON_1>"]) == {"<PERSON_1>": "Anna Berg"}
    clock.now += timedelta(minutes=2)
    assert v.originals(t, "c", ["<PERSON_1>"]) == {}
    assert v.purge_expired() == 1
    with services.sessions() as s:
        assert s.scalars(select(Pseudonym)).all() == []


def test_concurrent_writers_agree_on_tokens(services: Services) -> None:
    t = tenant(services)
    v = vault(services)
    names = [("PERSON", f"Person {i}") for i in range(6)]
    results: list[dict[tuple[str, str], str]] = []
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            results.append(v.tokens(t, "shared", names[k % 3 :] + names[: k % 3], TTL))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert all(r == results[0] for r in results)
    assert sorted(results[0].values()) == sorted(f"<PERSON_{i}>" for i in range(1, 7))


def test_service_anonymizes_consistently_and_restores_the_answer(services: Services, detector: Detector) -> None:
    t = tenant(services)
    svc = privacy(services, detector)
    texts = ["Hi, I'm Marguerite Okonkwo, mail marguerite@example.org.", "Marguerite Okonkwo again, from 203.0.113.7"]
    result = svc.anonymize(t, texts, PSEUDO, scope="chat-42")
    assert result.scope == "chat-42"
    assert result.texts[0] == "Hi, I'm <PERSON_1>, mail <EMAIL_ADDRESS_1>."
    assert result.texts[1] == "<PERSON_1> again, from <IP_ADDRESS_1>"
    assert result.audit_facts() == {
        "EMAIL_ADDRESS": {"count": 1, "action": "pseudonymize"},
        "IP_ADDRESS": {"count": 1, "action": "pseudonymize"},
        "PERSON": {"count": 2, "action": "pseudonymize"},
    }
    answer = "Dear <PERSON_1>, we wrote to <EMAIL_ADDRESS_1>; <PERSON_2> is unknown."
    assert (
        svc.restore(t, "chat-42", answer)
        == "Dear Marguerite Okonkwo, we wrote to marguerite@example.org; <PERSON_2> is unknown."
    )
    assert svc.restore(t, "another-chat", answer) == answer
    stream = svc.stream_restorer(t, "chat-42")
    chunks = [answer[i : i + 3] for i in range(0, len(answer), 3)]
    assert "".join(stream.feed(c) for c in chunks) + stream.flush() == svc.restore(t, "chat-42", answer)


def test_service_without_scope_makes_a_fresh_one_each_time(services: Services, detector: Detector) -> None:
    t = tenant(services)
    svc = privacy(services, detector)
    a = svc.anonymize(t, ["mail anna@example.org"], PSEUDO)
    b = svc.anonymize(t, ["mail anna@example.org"], PSEUDO)
    assert a.scope and b.scope and a.scope != b.scope
    assert svc.restore(t, a.scope, a.texts[0]) == "mail anna@example.org"


def test_hash_tags_differ_between_tenants(services: Services, detector: Detector) -> None:
    a, b = tenant(services, "a"), tenant(services, "b")
    svc = privacy(services, detector)
    rules = PrivacyRules(default_action="hash")
    ta = svc.anonymize(a, ["mail anna@example.org", "anna@example.org"], rules).texts
    tb = svc.anonymize(b, ["mail anna@example.org"], rules).texts
    assert ta[0] == "mail " + ta[1]
    assert ta[0] != tb[0]


def test_blocked_request_stores_nothing(services: Services, detector: Detector) -> None:
    t = tenant(services)
    svc = privacy(services, detector)
    rules = PrivacyRules(default_action="pseudonymize", entities={"CREDIT_CARD": EntityRule(action="block")})
    with pytest.raises(Blocked) as exc:
        svc.anonymize(t, ["I'm Anna Berg, card 4111 1111 1111 1111"], rules, scope="s")
    assert exc.value.entity_types == ["CREDIT_CARD"]
    assert "4111" not in exc.value.detail
    with services.sessions() as s:
        assert s.scalars(select(Pseudonym)).all() == []


def test_a_detector_factory_runs_once_on_first_use(services: Services, detector: Detector) -> None:
    built: list[Detector] = []

    def factory() -> Detector:
        built.append(detector)
        return detector

    svc = PrivacyService(factory, vault(services), services.data_keys, default_ttl=TTL)
    assert built == []
    t = tenant(services)
    svc.analyze(t, ["a@example.org"], PSEUDO)
    svc.warm_up()
    assert built == [detector]
