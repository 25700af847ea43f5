from __future__ import annotations

import itertools

import pytest

from appliance.config import PrivacySettings
from appliance.errors import ConfigError, InvalidInput
from appliance.privacy.detection import Detection, Detector
from appliance.privacy.rules import CustomRecognizer, EntityRule, PatternSpec, PrivacyRules

RULES = PrivacyRules()


def found(detector: Detector, text: str, rules: PrivacyRules = RULES) -> list[tuple[str, str]]:
    return [(d.entity_type, text[d.start : d.end]) for d in detector.analyze([text], rules)[0]]


@pytest.mark.parametrize(
    ("text", "entity_type", "value"),
    [
        ("mail me at anna.berg@example.org please", "EMAIL_ADDRESS", "anna.berg@example.org"),
        ("call +41 44 668 18 00 tomorrow", "PHONE_NUMBER", "+41 44 668 18 00"),
        ("my cell is (415) 555-2671", "PHONE_NUMBER", "(415) 555-2671"),
        ("card 4111 1111 1111 1111 expired", "CREDIT_CARD", "4111 1111 1111 1111"),
        ("new mastercard 2221 0000 0000 0009", "CREDIT_CARD", "2221 0000 0000 0009"),
        ("IBAN DE89 3704 0044 0532 0130 00 thanks", "IBAN_CODE", "DE89 3704 0044 0532 0130 00"),
        ("Refund to IBAN AT663272342476944889 please", "IBAN_CODE", "AT663272342476944889"),
        ("IBAN ES93 4715 8241 0661 6851 3946 please", "IBAN_CODE", "ES93 4715 8241 0661 6851 3946"),
        ("ssn 536-22-8726", "US_SSN", "536-22-8726"),
        ("login from 203.0.113.54 failed", "IP_ADDRESS", "203.0.113.54"),
        ("details at https://intranet.example.com/t/42 today", "URL", "https://intranet.example.com/t/42"),
        ("Yesterday Angela Merkel visited the office.", "PERSON", "Angela Merkel"),
        ("my details: +254712506073 and nothing else", "PHONE_NUMBER", "+254712506073"),
        ("Hamburg office: 040 4047 770", "PHONE_NUMBER", "040 4047 770"),
    ],
)
def test_when_text_holds_a_value_then_it_is_detected_with_exact_offsets(
    detector: Detector, text: str, entity_type: str, value: str
) -> None:
    assert (entity_type, value) in found(detector, text)


@pytest.mark.parametrize(
    "address",
    [
        "tom.hale@nhs.uk",  # directly under a public suffix: the NHS, police, governments, universities
        "desk@police.uk",
        "k.osei@gov.ng",
        "s.ng@edu.sg",
        "jdoe@corp.local",  # the private domains of the networks the appliance runs in
        "svc-backup@ad.example.internal",
        "li.wei@mail.corp",
        "Jos\u00e9.N\u00fa\u00f1ez@correo.mx",
        "user@xn--80ak6aa92e.com",
    ],
)
def test_an_address_on_any_dotted_domain_is_an_address(detector: Detector, address: str) -> None:
    assert ("EMAIL_ADDRESS", address) in found(detector, f"Please write to {address} about the renewal.")


@pytest.mark.parametrize(
    "text",
    [
        "Inline image cid:image001.png@01DA1234.5678ABCD in the signature.",
        "Pin it with pip install pkg@1.2.3 first.",
        "The build needs node@18.x to run.",
        "Undo with git reset HEAD@{1} now.",
    ],
)
def test_a_version_or_content_id_after_an_at_sign_is_no_address(detector: Detector, text: str) -> None:
    assert "EMAIL_ADDRESS" not in {entity for entity, _ in found(detector, text)}


@pytest.mark.parametrize(
    "prefix",
    ["😀🎉 ", "東京都の ", "Jose\u0301 e\u0301crit: ", "👩\u200d👩\u200d👧 family ", "\u00e9\u0300\u0301 "],
)
def test_when_text_has_emoji_cjk_or_combining_marks_then_offsets_still_point_at_the_value(
    detector: Detector, prefix: str
) -> None:
    text = prefix + "write to bob.smith@example.com or 203.0.113.9 ✅"
    detections = detector.analyze([text], RULES)[0]
    values = {text[d.start : d.end] for d in detections}
    assert {"bob.smith@example.com", "203.0.113.9"} <= values


def test_when_many_texts_are_analyzed_then_each_gets_its_own_detections(detector: Detector) -> None:
    texts = ["nothing here", "a@b.co is mine", "", "ip 198.51.100.7"]
    result = detector.analyze(texts, RULES)
    assert [[d.entity_type for d in ds] for ds in result] == [[], ["EMAIL_ADDRESS"], [], ["IP_ADDRESS"]]


def test_when_detections_overlap_then_the_result_is_sorted_non_overlapping_and_deterministic(
    detector: Detector,
) -> None:
    text = "John Smith (john.smith@example.com, +1 415 555 2671) paid with 4111111111111111 on 2024-01-02"
    first = detector.analyze([text], RULES)[0]
    for _ in range(3):
        assert detector.analyze([text], RULES)[0] == first
    assert first == sorted(first)
    for a, b in itertools.pairwise(first):
        assert a.end <= b.start


def test_when_a_structured_value_overlaps_a_ner_guess_then_the_structured_type_wins() -> None:
    from appliance.privacy.detection import _resolve

    ner = Detection(10, 30, "DATE_TIME", 0.85)
    phone = Detection(12, 26, "PHONE_NUMBER", 0.4)
    assert _resolve([ner, phone]) == [phone]


def test_when_same_type_spans_touch_then_they_merge_into_one() -> None:
    from appliance.privacy.detection import _resolve

    assert _resolve([Detection(0, 4, "PERSON", 0.5), Detection(4, 9, "PERSON", 0.85)]) == [
        Detection(0, 9, "PERSON", 0.85)
    ]


def test_when_value_is_on_the_allow_list_then_it_is_not_reported(detector: Detector) -> None:
    rules = PrivacyRules(allow_list=["support@acme.example"])
    text = "write to Support@Acme.example or to jane@example.org"
    assert found(detector, text, rules) == [("EMAIL_ADDRESS", "jane@example.org")]


def test_when_detect_limits_types_then_others_are_ignored(detector: Detector) -> None:
    rules = PrivacyRules(detect=["IP_ADDRESS"])
    assert found(detector, "jane@example.org from 203.0.113.1", rules) == [("IP_ADDRESS", "203.0.113.1")]


def test_when_min_score_is_raised_for_a_type_then_weaker_detections_drop(detector: Detector) -> None:
    rules = PrivacyRules(entities={"PHONE_NUMBER": EntityRule(action="replace", min_score=0.99)})
    assert found(detector, "reach me on (415) 555-2671", rules) == []


def test_when_custom_regex_has_context_then_context_lifts_it_over_the_threshold(detector: Detector) -> None:
    rules = PrivacyRules(
        custom_recognizers=[
            CustomRecognizer(
                name="employee-id",
                entity_type="EMPLOYEE_ID",
                patterns=[PatternSpec(regex=r"\bE\d{6}\b", score=0.2)],
                context=["employee", "badge"],
            )
        ]
    )
    assert found(detector, "my employee number is E123456", rules) == [("EMPLOYEE_ID", "E123456")]
    assert found(detector, "the part E123456 shipped", rules) == []


def test_when_custom_deny_list_names_a_value_then_it_is_detected(detector: Detector) -> None:
    rules = PrivacyRules(
        custom_recognizers=[CustomRecognizer(name="projects", entity_type="PROJECT", deny_list=["Bluebird"])]
    )
    assert found(detector, "status of project bluebird?", rules) == [("PROJECT", "bluebird")]


def test_when_custom_regex_is_invalid_then_input_is_rejected_without_crashing(detector: Detector) -> None:
    rules = PrivacyRules(custom_recognizers=[CustomRecognizer(name="bad", entity_type="X", patterns=[{"regex": "("}])])
    with pytest.raises(InvalidInput):
        detector.analyze(["text"], rules)


def test_when_text_exceeds_the_limit_then_input_is_rejected(detector: Detector) -> None:
    limit = PrivacySettings().max_text_chars
    with pytest.raises(InvalidInput) as exc:
        detector.analyze(["x" * (limit + 1)], RULES)
    assert "x" * 20 not in str(exc.value)


def test_when_a_name_is_found_once_then_its_other_mentions_in_the_request_are_found(detector: Detector) -> None:
    texts = ["Hello, my name is Marguerite Okonkwo and I need help.", "okay, marguerite okonkwo again. Okonkwo here."]
    second = detector.analyze(texts, RULES)[1]
    assert [texts[1][d.start : d.end] for d in second if d.entity_type == "PERSON"] == [
        "marguerite okonkwo",
        "Okonkwo",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # National and international forms in one text, beside a card and an SSN whose
        # digit groups are never reported as phone numbers.
        (
            "card 4111 1111 1111 1111, ssn 536-22-8726, call (415) 555-2671 or +44 20 7946 0958",
            [
                ("CREDIT_CARD", "4111 1111 1111 1111"),
                ("US_SSN", "536-22-8726"),
                ("PHONE_NUMBER", "(415) 555-2671"),
                ("PHONE_NUMBER", "+44 20 7946 0958"),
            ],
        ),
        (
            "sms +41 79 123 45 67 or 044 668 18 00",
            [("PHONE_NUMBER", "+41 79 123 45 67"), ("PHONE_NUMBER", "044 668 18 00")],
        ),
        # an extension stays part of the number; house numbers and zip codes are not numbers
        ("desk 873-471-2100x4738, 221 Baker Street, 10115 Berlin", [("PHONE_NUMBER", "873-471-2100x4738")]),
    ],
)
def test_phone_numbers_are_found_beside_other_formats_in_national_and_international_form(
    detector: Detector, text: str, expected: list[tuple[str, str]]
) -> None:
    ner_types = {"DATE_TIME", "PERSON", "LOCATION", "NRP"}
    assert [f for f in found(detector, text) if f[0] not in ner_types] == expected


def test_when_only_phone_numbers_are_wanted_then_nothing_else_is_reported(detector: Detector) -> None:
    rules = PrivacyRules(detect=["PHONE_NUMBER"])
    text = "Ann Lee, ann@example.org, call 044 668 18 00"
    assert found(detector, text, rules) == [("PHONE_NUMBER", "044 668 18 00")]


def test_analyzed_values_do_not_stay_in_the_ner_vocabulary(detector: Detector) -> None:
    strings = detector._nlp.vocab.strings  # the process-wide store spaCy would otherwise grow forever
    detector.forget()
    before = len(strings)
    text = "Zebulon Quargleflax (zq-7781@example.org) called from +41 79 555 01 77"
    assert detector.analyze([text], RULES)[0]
    detector.forget()  # what a zone renewal does every few thousand calls
    assert "Quargleflax" not in strings
    assert "zq-7781@example.org" not in strings
    assert len(strings) == before


def test_vocabulary_is_renewed_after_a_bounded_number_of_calls() -> None:
    detector = Detector(PrivacySettings(patterns_only=True))
    strings = detector._nlp.vocab.strings
    detector.analyze(["Zebulon Quargleflax"], RULES)
    for i in range(4100):
        detector.analyze([f"filler {i}"], RULES)
    assert "Quargleflax" not in strings


def test_when_requests_are_analyzed_together_then_each_gets_what_it_would_get_alone(detector: Detector) -> None:
    first = ["Hello, my name is Marguerite Okonkwo and I need help.", "okay, marguerite okonkwo again."]
    second = ["ping 203.0.113.54 please", "the okonkwo family recipe calls for yams"]
    together = detector.analyze_groups([first, second], RULES)
    assert together == [detector.analyze(first, RULES), detector.analyze(second, RULES)]
    # A name learned in one request is not carried into another request.
    assert [d.entity_type for d in together[1][1]] == []


def test_when_lowercase_name_follows_a_cue_then_it_is_detected(detector: Detector) -> None:
    assert ("PERSON", "dana whitfield") in found(detector, "hi there, my name is dana whitfield")


def test_when_patterns_only_then_patterns_work_without_ner(patterns_detector: Detector) -> None:
    text = "Angela Merkel: office@example.org"  # a role mailbox: nothing ties the name to it
    assert found(patterns_detector, text) == [("EMAIL_ADDRESS", "office@example.org")]


def test_when_configured_model_is_not_installed_then_startup_fails_with_a_clear_message() -> None:
    with pytest.raises(ConfigError, match="not installed"):
        Detector(PrivacySettings(nlp_model="xx_no_such_pipeline_sm"))


def test_the_ner_pipeline_runs_only_what_ner_needs(detector: Detector) -> None:
    assert detector._nlp.pipe_names == ["ner"]


PATTERN_TEXTS = [
    "Angela Merkel wrote from angela@example.org, call +41 44 668 18 00.",
    "card 4111 1111 1111 1111, my employee number is E123456, ask Tom in Paris",
    "Nothing personal here at all.",
]


def test_when_the_policy_wants_no_ner_type_then_ner_is_skipped_and_patterns_find_the_same(detector: Detector) -> None:
    employee = CustomRecognizer(
        name="employee-id",
        entity_type="EMPLOYEE_ID",
        patterns=[PatternSpec(regex=r"\bE\d{6}\b", score=0.2)],
        context=["employee"],
    )
    patterns = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "EMPLOYEE_ID"]
    narrow = PrivacyRules(detect=patterns, custom_recognizers=[employee])
    full = PrivacyRules(custom_recognizers=[employee])

    before = detector.ner_texts
    skipped = detector.analyze(PATTERN_TEXTS, narrow)
    assert detector.ner_texts == before  # no text went through the NER model
    with_ner = detector.analyze(PATTERN_TEXTS, full)
    assert detector.ner_texts == before + len(PATTERN_TEXTS)

    assert skipped == [[d for d in spans if d.entity_type in patterns] for spans in with_ner]
    assert [d.entity_type for d in skipped[1]] == ["CREDIT_CARD", "EMPLOYEE_ID"]  # context words still count
    assert any(d.entity_type == "PERSON" for d in with_ner[0])


@pytest.mark.parametrize(
    "text",
    [
        "Ticket 404777 reassigned to the night shift",
        "Change request CR-194154 was approved",
        "Duplicate of #169909, see the earlier comment",
    ],
)
def test_when_a_bare_number_lacks_the_trunk_prefix_its_region_requires_then_it_is_no_phone_number(
    patterns_detector: Detector, text: str
) -> None:
    assert "PHONE_NUMBER" not in [t for t, _ in found(patterns_detector, text)]


@pytest.mark.parametrize(
    "text",
    [
        "Sent: Friday, 02.09.2025",
        "Meeting notes 2025-02-11: budget",
        "consent signed 18/11/2025.",
        "effective 2026-01-05, approved by HR",
    ],
)
def test_when_digits_are_a_calendar_date_then_they_are_no_phone_number(patterns_detector: Detector, text: str) -> None:
    assert "PHONE_NUMBER" not in [t for t, _ in found(patterns_detector, text)]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("Can someone call me on 413 4270? I have questions.", "413 4270"),
        ("please ring 84 23 30 after lunch", "84 23 30"),
        ("my mobile is 768 0115", "768 0115"),
    ],
)
def test_when_a_phone_word_stands_before_a_short_number_then_it_is_a_phone_number(
    patterns_detector: Detector, text: str, number: str
) -> None:
    assert ("PHONE_NUMBER", number) in found(patterns_detector, text)
