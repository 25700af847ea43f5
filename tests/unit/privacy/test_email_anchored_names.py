"""Names written next to their own e-mail address are found even when NER misses them."""

from __future__ import annotations

import pytest

from appliance.privacy.detection import Detector
from appliance.privacy.rules import PrivacyRules


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Contact Marguerite Okonkwo-Lindqvist at m.okonkwo.lindqvist@example.org", "Marguerite Okonkwo-Lindqvist"),
        ("Reach Dr. Tomasz Wójcik (tomasz.wojcik@uni.example) today", "Dr. Tomasz Wójcik"),
        ("email: Jane Doe <jane.doe@example.com>", "Jane Doe"),
        ("Hi, I'm Oluwaseun Adeyemi-Brandt, mail adeyemi@example.net", "Oluwaseun Adeyemi-Brandt"),
    ],
)
def test_name_beside_its_address_is_a_person(detector: Detector, text: str, name: str) -> None:
    found = [(d.entity_type, text[d.start : d.end]) for d in detector.analyze([text], PrivacyRules())[0]]
    assert ("PERSON", name) in found


def test_role_mailboxes_and_lead_words_are_not_names(detector: Detector) -> None:
    text = "Contact Sales at sales@corp.example for pricing."
    found = [(d.entity_type, text[d.start : d.end]) for d in detector.analyze([text], PrivacyRules())[0]]
    assert not any(t == "PERSON" and "Sales" in v for t, v in found)
