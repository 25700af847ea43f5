"""Names through the whole detector (spaCy, the name model, the rules, whole-name widening).

The sentences are written for these tests; none comes from the bench corpora the quality
figures are measured on.
"""

from __future__ import annotations

import pytest

from appliance.config import PrivacySettings
from appliance.privacy.detection import Detector
from appliance.privacy.rules import PrivacyRules

RULES = PrivacyRules()


def people(detector: Detector, text: str) -> list[str]:
    return [text[d.start : d.end] for d in detector.analyze([text], RULES)[0] if d.entity_type == "PERSON"]


def covered(detector: Detector, text: str, name: str) -> bool:
    """Every word of ``name`` lies inside some detection (of any type)."""
    import re

    start = text.index(name)
    spans = [(d.start, d.end) for d in detector.analyze([text], RULES)[0]]
    words = [(m.start() + start, m.end() + start) for m in re.finditer(r"[^\W_]+", name)]
    return all(any(s <= ws and we <= e for s, e in spans) for ws, we in words)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("confirm with Thandiwe Mokoena on +27 21 555 0147", "Thandiwe Mokoena"),
        ("account holder Marie-Hélène Dufresne", "Marie-Hélène Dufresne"),
        ("Quang Tran wrote from the Lyon office", "Quang Tran"),
        ("The refund for Oluwaseun Adebayo-Okonkwo is approved.", "Oluwaseun Adebayo-Okonkwo"),
        ("Please book a room for Bolormaa Tsendsuren on Tuesday.", "Bolormaa Tsendsuren"),
        ("hi its nokuthula again, did the parcel ship?", "nokuthula"),
        ("Escalated by Dr. Ikechukwu Nwosu, PhD after the second outage.", "Dr. Ikechukwu Nwosu, PhD"),
        ("Lease signed by Juan Carlos de la Fuente y Olmedo.", "Juan Carlos de la Fuente y Olmedo"),
        ("Send the keys to Aroha Te Whata in the morning.", "Aroha Te Whata"),
        ("Meeting notes: Siddharth Venkataraman presented the Q3 numbers.", "Siddharth Venkataraman"),
    ],
)
def test_when_a_name_from_any_culture_sits_in_business_text_then_no_part_of_it_survives(
    detector: Detector, text: str, name: str
) -> None:
    assert covered(detector, text, name)


@pytest.mark.parametrize(
    "text",
    [
        "The capital of France is Paris.",
        "Apple released a new iPhone in September.",
        "Our Lyon office is closed on Monday.",
        "Bill me later for the Jira upgrade.",
        "Toyota and Siemens are our biggest customers in Kenya.",
    ],
)
def test_when_capitalized_words_are_places_companies_or_ordinary_words_then_no_person_is_found(
    detector: Detector, text: str
) -> None:
    assert people(detector, text) == []


@pytest.mark.parametrize(
    ("text", "name"),
    [
        # A CSV row: the address beside the name is no reason to leave the name alone.
        ("id,name,email\n4,Tarni Whitcombe,tw4471@example.org", "Tarni Whitcombe"),
        # A function word the model reads as the first name ("Will"), a family name in
        # capitals before the given name behind a form label.
        ("Please pay Will Ashcombe for the overtime.", "Will Ashcombe"),
        ("Patient: TANAGER, Ellis", "TANAGER, Ellis"),
        # A title that only stands before a name, in English, French, Afrikaans and Swahili.
        ("Seat 14C is held for Dr. Brightwater on Friday.", "Dr. Brightwater"),
        ("The proposal came from Madame Kouyaté last week.", "Madame Kouyaté"),
        # Words the model reads as the name's, though they are also places' names.
        ("The visa letter for Luz Stella Quiñonez arrived today.", "Luz Stella Quiñonez"),
    ],
)
def test_when_a_name_is_in_a_record_titled_or_read_by_the_model_beside_it_then_all_of_it_is_covered(
    detector: Detector, text: str, name: str
) -> None:
    assert covered(detector, text, name)


@pytest.mark.parametrize(
    "text",
    [
        "rename `lovelace()` to parse_rows before merging",
        "Kruger Transport delivered the pallets late.",
        "The invoice from Mensah & Sons Ltd is overdue.",
        "Per diem rates were raised in March.",
        "hi um the door code is wrong again",
        "Visit us at Via Roma 8, 39100 Bolzano, any weekday.",
        "Compute the Hamming distance between the two strings.",
        "The Wechsler score improved after therapy.",
        "Our Dr. Oetker order arrived damaged.",
    ],
)
def test_when_a_name_is_code_a_firm_a_term_a_town_or_a_hesitation_then_no_person_is_found(
    detector: Detector, text: str
) -> None:
    assert people(detector, text) == []


def test_when_a_city_follows_a_name_then_only_the_name_is_a_person(detector: Detector) -> None:
    text = "Quang Tran wrote from the Lyon office"
    assert people(detector, text) == ["Quang Tran"]


@pytest.mark.parametrize(
    "text",
    [
        "Postmortem: cache outage\nAuthors: Selam Bekele, Jørgen Kjærsgaard\nReviewers: Z. Łuczak, J. A. Villaseñor\n\nRoot cause: a bad deploy.",
        "Name\tRole\tCity\nNyasha Madziva\tParalegal\tHarare\nMrs Ruth Achieng\tOperations Manager\tKisumu",
        "Escalated by Meenakshi Sundaram\nEmail: ops@example.org\nBadge: 4411",
    ],
)
def test_when_a_name_ends_a_line_or_a_cell_then_the_next_line_or_cell_is_not_part_of_it(
    detector: Detector, text: str
) -> None:
    found = people(detector, text)
    assert found, "the names themselves are still found"
    assert all("\n" not in p and "\t" not in p for p in found), found
    for label in ("Reviewers", "Root", "Paralegal", "Operations", "Email", "Badge"):
        assert all(label not in p for p in found), found


def test_when_the_name_model_is_off_then_the_detector_still_finds_names_with_spacy_alone() -> None:
    plain = Detector(PrivacySettings(name_model="off"))
    assert people(plain, "Yesterday Angela Merkel visited the office.") == ["Angela Merkel"]


def test_when_a_text_is_longer_than_one_model_window_then_names_at_its_end_are_found(detector: Detector) -> None:
    filler = "The quarterly report covers revenue, churn and support volume in every region. " * 40
    text = filler + "Please send it to Thandiwe Mokoena."
    assert people(detector, text)[-1:] == ["Thandiwe Mokoena"]


def test_when_a_long_text_is_read_in_windows_then_a_cued_name_at_its_end_is_found(detector: Detector) -> None:
    filler = "The quarterly report covers revenue, churn and support volume in every region. " * 40
    text = filler + "Best regards,\nThandiwe Mokoena"
    assert "Thandiwe Mokoena" in people(detector, text)
