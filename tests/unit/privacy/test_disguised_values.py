"""Values disguised with invisible or compatibility characters are still found, and the
replacement covers the whole disguised value in the caller's own text."""

from __future__ import annotations

import pytest

from appliance.privacy.detection import Detector
from appliance.privacy.rules import EntityRule, PrivacyRules
from appliance.privacy.transforms import apply
from appliance.privacy.views import view_of

ZWSP = "\u200b"
FULLWIDTH = str.maketrans("0123456789", "".join(chr(0xFF10 + i) for i in range(10)))
BOLD_CAPITAL_A = 0x1D400
BOLD_SMALL_A = 0x1D41A


def bold(word: str) -> str:
    return "".join(chr((BOLD_CAPITAL_A if c.isupper() else BOLD_SMALL_A) + ord(c.lower()) - ord("a")) for c in word)


@pytest.mark.parametrize(
    ("text", "entity_type", "value"),
    [
        (f"mail ann{ZWSP}.berg@exam{ZWSP}ple.org now", "EMAIL_ADDRESS", f"ann{ZWSP}.berg@exam{ZWSP}ple.org"),
        ("card 4111 1111 1111 1111 ok".translate(FULLWIDTH), "CREDIT_CARD", "4111 1111 1111 1111".translate(FULLWIDTH)),
        (f"ssn 536{ZWSP}-22-8726\u00ad", "US_SSN", f"536{ZWSP}-22-8726"),
        ("call +41\u00a044\u00a0668\u00a018\u00a000", "PHONE_NUMBER", "+41\u00a044\u00a0668\u00a018\u00a000"),
        (f"Yesterday {bold('Angela')} Merkel visited.", "PERSON", f"{bold('Angela')} Merkel"),
    ],
)
def test_disguised_value_is_found_with_offsets_in_the_callers_text(
    detector: Detector, text: str, entity_type: str, value: str
) -> None:
    found = [(d.entity_type, text[d.start : d.end]) for d in detector.analyze([text], PrivacyRules())[0]]
    assert (entity_type, value) in found


def test_replacing_a_disguised_value_leaves_no_part_of_it() -> None:
    from appliance.privacy.detection import Detection

    text = f"mail ann{ZWSP}@example.org"
    start = text.index("ann")
    rules = PrivacyRules(entities={"EMAIL_ADDRESS": EntityRule(action="replace")})
    out, _ = apply(
        [text],
        [[Detection(start, len(text), "EMAIL_ADDRESS", 1.0)]],
        rules,
        hash_key=lambda: b"",
        pseudonymize=lambda items: {},
    )
    assert out == ["mail <EMAIL_ADDRESS>"]


def test_plain_text_is_read_as_is() -> None:
    for text in ["plain ascii", "Grüße aus Zürich", "東京で会いましょう", "e\u0301"]:
        view = view_of(text)
        assert view.text == text
        assert view.origin is None


def test_view_spans_cover_dropped_characters() -> None:
    view = view_of(f"a{ZWSP}b\uff11c")
    assert view.text == "ab1c"
    assert view.span(0, 2) == (0, 3)
    assert view.span(2, 3) == (3, 4)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("write to ann.berg [at] example [dot] org please", "ann.berg [at] example [dot] org"),
        ("reach me: ann at example dot org", "ann at example dot org"),
        ("mail ann(at)example.org", "ann(at)example.org"),
        ("ann AT example DOT co DOT uk thanks", "ann AT example DOT co DOT uk"),
    ],
)
def test_spelled_out_addresses_are_addresses(detector: Detector, text: str, value: str) -> None:
    found = [(d.entity_type, text[d.start : d.end]) for d in detector.analyze([text], PrivacyRules())[0]]
    assert ("EMAIL_ADDRESS", value) in found


@pytest.mark.parametrize("text", ["meet me at home, dot the i's later", "we met at the office.", "look at example.org"])
def test_at_without_a_spelled_dot_or_brackets_is_not_an_address(detector: Detector, text: str) -> None:
    assert not [d for d in detector.analyze([text], PrivacyRules())[0] if d.entity_type == "EMAIL_ADDRESS"]
