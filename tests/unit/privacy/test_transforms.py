from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from appliance.errors import Blocked
from appliance.privacy.detection import Detection
from appliance.privacy.rules import EntityRule, PrivacyRules
from appliance.privacy.transforms import apply, hash_tag, mask

KEY = b"k" * 32
TEXT = "Mail anna@example.org or call +41 44 668 18 00."
EMAIL = Detection(5, 21, "EMAIL_ADDRESS", 1.0)
PHONE = Detection(30, 46, "PHONE_NUMBER", 0.4)


def fake_vault() -> tuple[list[Sequence[tuple[str, str]]], object]:
    calls: list[Sequence[tuple[str, str]]] = []

    def pseudonymize(items: Sequence[tuple[str, str]]) -> Mapping[tuple[str, str], str]:
        calls.append(items)
        counters: dict[str, int] = {}
        out = {}
        for item in items:
            counters[item[0]] = counters.get(item[0], 0) + 1
            out[item] = f"<{item[0]}_{counters[item[0]]}>"
        return out

    return calls, pseudonymize


def run(rules: PrivacyRules, text: str = TEXT, detections: list[Detection] | None = None) -> str:
    _, pseudonymize = fake_vault()
    out, _ = apply([text], [detections or [EMAIL, PHONE]], rules, hash_key=lambda: KEY, pseudonymize=pseudonymize)  # type: ignore[arg-type]
    return out[0]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (EntityRule(action="redact"), "Mail  or call ."),
        (EntityRule(action="replace"), "Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>."),
        (EntityRule(action="mask", keep_last=4), "Mail ************.org or call ************8 00."),
        (EntityRule(action="mask", keep_last=0, mask_char="#"), "Mail ################ or call ################."),
        (EntityRule(action="keep"), TEXT),
        (EntityRule(action="pseudonymize"), "Mail <EMAIL_ADDRESS_1> or call <PHONE_NUMBER_1>."),
    ],
)
def test_each_action_transforms_every_detected_value(rule: EntityRule, expected: str) -> None:
    rules = PrivacyRules(entities={"EMAIL_ADDRESS": rule, "PHONE_NUMBER": rule})
    assert run(rules) == expected


def test_when_action_is_hash_then_equal_values_get_equal_keyed_tags() -> None:
    rules = PrivacyRules(default_action="hash")
    text = "a@example.org and a@example.org and b@example.org"
    ds = [
        Detection(0, 13, "EMAIL_ADDRESS", 1),
        Detection(18, 31, "EMAIL_ADDRESS", 1),
        Detection(36, 49, "EMAIL_ADDRESS", 1),
    ]
    out = run(rules, text, ds)
    tags = out.split(" and ")
    assert tags[0] == tags[1] != tags[2]
    assert tags[0] == hash_tag(KEY, "EMAIL_ADDRESS", "a@example.org")
    assert tags[0].startswith("<EMAIL_ADDRESS_") and len(tags[0]) == len("<EMAIL_ADDRESS_>") + 8
    assert hash_tag(b"x" * 32, "EMAIL_ADDRESS", "a@example.org") != tags[0]


def test_when_a_type_is_blocked_then_blocked_names_types_only_and_nothing_is_stored() -> None:
    calls, pseudonymize = fake_vault()
    rules = PrivacyRules(default_action="pseudonymize", entities={"PHONE_NUMBER": EntityRule(action="block")})
    with pytest.raises(Blocked) as exc:
        apply([TEXT], [[EMAIL, PHONE]], rules, hash_key=lambda: KEY, pseudonymize=pseudonymize)  # type: ignore[arg-type]
    assert exc.value.entity_types == ["PHONE_NUMBER"]
    assert "668" not in str(exc.value) and "anna" not in str(exc.value)
    assert calls == []


def test_facts_hold_types_actions_and_counts_only() -> None:
    _, pseudonymize = fake_vault()
    rules = PrivacyRules(entities={"PHONE_NUMBER": EntityRule(action="mask")})
    _, facts = apply([TEXT, TEXT], [[EMAIL, PHONE], [EMAIL]], rules, hash_key=lambda: KEY, pseudonymize=pseudonymize)  # type: ignore[arg-type]
    assert {t: (f.action.value, f.count) for t, f in facts.items()} == {
        "EMAIL_ADDRESS": ("replace", 2),
        "PHONE_NUMBER": ("mask", 1),
    }


def test_pseudonyms_of_a_request_are_asked_for_in_one_batch() -> None:
    calls, pseudonymize = fake_vault()
    rules = PrivacyRules(default_action="pseudonymize")
    apply([TEXT, TEXT], [[EMAIL, PHONE], [EMAIL]], rules, hash_key=lambda: KEY, pseudonymize=pseudonymize)  # type: ignore[arg-type]
    assert len(calls) == 1
    assert sorted(calls[0]) == [("EMAIL_ADDRESS", "anna@example.org"), ("PHONE_NUMBER", "+41 44 668 18 00")]


@pytest.mark.parametrize(
    ("value", "keep", "expected"),
    [
        ("José", 1, "***é"),  # precomposed
        ("Jose\u0301", 1, "***e\u0301"),  # e + combining acute stays one character
        ("Jose\u0301", 0, "****"),
        ("東京太郎", 2, "**太郎"),
        ("👩\u200d👩\u200d👧ab", 2, "*ab"),
        ("ab", 5, "ab"),
    ],
)
def test_mask_counts_user_perceived_characters(value: str, keep: int, expected: str) -> None:
    assert mask(value, keep, "*") == expected


def test_transforms_keep_surrounding_unicode_intact() -> None:
    text = "😀 東京 anna@example.org é\u0301!"
    start = text.index("anna")
    out = run(PrivacyRules(), text, [Detection(start, start + 16, "EMAIL_ADDRESS", 1)])
    assert out == "😀 東京 <EMAIL_ADDRESS> é\u0301!"
