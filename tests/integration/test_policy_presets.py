"""Each shipped preset on sample text: the transforms an officer expects from its comments."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.policy.loader import load_policy_text, preset_text
from appliance.services.container import Services
from tests.support import make_services, make_settings

TEXT = (
    "Patient Maria Gonzalez (maria.gonzalez@example.com, +1 415 555 0134) paid with card "
    "4111 1111 1111 1111; IBAN DE89 3704 0044 0532 0130 00; MRN-00123456; seen on 3 March 2024."
)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp: Path = tmp_path_factory.mktemp("presets")
    s = make_services(make_settings(tmp, f"sqlite:///{tmp / 'a.db'}"))
    yield s
    s.close()


def _run(svc: Services, preset: str, text: str = TEXT) -> tuple[list[str] | None, list[str]]:
    result = svc.privacy.preview([text], load_policy_text(preset_text(preset)).pii)
    return result.texts, result.blocked


def test_default_blocks_card_numbers(svc: Services) -> None:
    texts, blocked = _run(svc, "default")
    assert texts is None and blocked == ["CREDIT_CARD"]
    texts, _ = _run(svc, "default", TEXT.replace("4111 1111 1111 1111", "on file"))
    assert texts is not None
    out = texts[0]
    assert "<PERSON_1>" in out and "<EMAIL_ADDRESS_1>" in out and "<PHONE_NUMBER_1>" in out
    assert "DE89" not in out and "*0 00;" in out  # IBAN masked to the last four characters
    assert "3 March 2024" in out  # dates kept


def test_gdpr_strict_blocks_cards_and_iban(svc: Services) -> None:
    _, blocked = _run(svc, "gdpr-strict")
    assert set(blocked) == {"CREDIT_CARD", "IBAN_CODE"}
    texts, _ = _run(svc, "gdpr-strict", "Maria Gonzalez was born on 3 March 1980 in Madrid.")
    assert texts is not None
    assert texts[0] == "<PERSON_1> was born on <DATE_TIME> in <LOCATION>."


def test_hipaa_replaces_identifiers_and_catches_record_numbers(svc: Services) -> None:
    texts, blocked = _run(svc, "hipaa", TEXT.replace("paid with card 4111 1111 1111 1111; ", ""))
    assert blocked == []
    assert texts is not None
    out = texts[0]
    assert "<PERSON_1>" in out and "<EMAIL_ADDRESS>" in out and "<PHONE_NUMBER>" in out
    assert "<MRN>" in out and "00123456" not in out
    assert "<DATE_TIME>" in out and "2024" not in out


def test_pci_dss_masks_card_and_iban_to_last_four(svc: Services) -> None:
    texts, blocked = _run(svc, "pci-dss")
    assert blocked == []
    assert texts is not None
    out = texts[0]
    assert "4111 1111 1111 1111" not in out and "1111;" in out
    assert "DE89" not in out and "*0 00;" in out  # the last four characters stay
    assert "<PERSON_1>" in out
