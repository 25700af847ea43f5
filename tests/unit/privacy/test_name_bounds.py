from __future__ import annotations

from collections.abc import Callable

import pytest

from appliance.privacy.name_bounds import widen_names
from appliance.privacy.spans import Detection


def person(text: str, value: str, nth: int = 0) -> Detection:
    start = -1
    for _ in range(nth + 1):
        start = text.index(value, start + 1)
    return Detection(start, start + len(value), "PERSON", 0.9)


def widened(text: str, *found: Detection) -> list[tuple[str, str]]:
    return [(d.entity_type, text[d.start : d.end]) for d in widen_names(text, list(found))]


@pytest.mark.parametrize(
    ("text", "core", "whole"),
    [
        ("Please ask Dr. Amara Okafor to sign.", "Amara Okafor", "Dr. Amara Okafor"),
        ("Prof. Dr. Anna Berg will attend.", "Anna Berg", "Prof. Dr. Anna Berg"),
        ("thanks dr okafor", "okafor", "dr okafor"),
        ("Signed: Jane Roe, PhD on Monday", "Jane Roe", "Jane Roe, PhD"),
        ("Rodrigo Bautista Jr. called", "Rodrigo Bautista", "Rodrigo Bautista Jr."),
        ("Wei Chen B.Eng. joined", "Wei Chen", "Wei Chen B.Eng."),
        ("Ask Sheikh Hamad al-Thani first", "Hamad al-Thani", "Sheikh Hamad al-Thani"),
        ("Pak Budi sent the invoice", "Budi", "Pak Budi"),
        ("Tanaka-san will join at ten", "Tanaka", "Tanaka-san"),
        ("Mehmet Bey approved it", "Mehmet", "Mehmet Bey"),
        ("talked to de Souza yesterday", "Souza", "de Souza"),
        ("Sent to van der Berg today", "Berg", "van der Berg"),
        # Initials, the rest of a hyphenated word, an unmarked name word in the same case.
        ("Recommend onsite. - K. Dimitrov", "Dimitrov", "K. Dimitrov"),
        ("Signed J. R. Okonkwo today", "Okonkwo", "J. R. Okonkwo"),
        ("Name on card: PARK CHAE-WON\nNumber: 4111", "PARK CHAE", "PARK CHAE-WON"),
        ("Action: Bekele-Wolde to call", "Wolde", "Bekele-Wolde"),
        ("Saludos,\nSiyabonga Qwabe\nDirector", "Siyabonga", "Siyabonga Qwabe"),
        ("Emergency contact: Daulet Bekmukhambetov, +420 212", "Bekmukhambetov", "Daulet Bekmukhambetov"),
        ("Court date: CABAHUG, Rommelito - hearing on Monday", "CABAHUG", "CABAHUG, Rommelito"),
        ("Great stay. Four stars. — Deepak A.", "Deepak", "Deepak A."),
        ("Traveller: Okonkwo, Tinashe\nCost centre: 4410", "Tinashe", "Okonkwo, Tinashe"),
        ("Class 4B\n2  CHACKO, Reshma\n3  Halvorsen, Ingrid", "Reshma", "CHACKO, Reshma"),
    ],
)
def test_when_a_name_has_a_title_suffix_or_particle_then_the_span_covers_it(text: str, core: str, whole: str) -> None:
    assert widened(text, person(text, core)) == [("PERSON", whole)]


def test_when_a_detector_found_two_parts_of_one_name_then_they_become_one_span() -> None:
    text = "The score of Ludwig van Beethoven was found."
    assert widened(text, person(text, "Ludwig"), person(text, "Beethoven")) == [("PERSON", "Ludwig van Beethoven")]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("the de facto owner is Anna", "Anna"),
        ("Drive to Mr", "Mr"),
        ("Anna, Ben and Carla", "Ben"),
        ("call Anna Berg on Monday", "Anna Berg"),
        # Beside it: an English word, a town, a brand, a weekday, another casing, a tab.
        ("Anna Berg Regional Director", "Anna Berg"),
        ("Anna Berg Lisbon office", "Anna Berg"),
        ("Ask Anna Grafana access", "Anna"),
        ("Anna Berg Monday", "Anna Berg"),
        ("Anna BERG-LUND", "Anna"),
        ("Anna Berg\tParalegal", "Anna Berg"),
        ("I met Anna A. lot of people came", "Anna"),  # an initial mid-sentence is no closing one
        ("Notes: Regional, Anna wrote", "Anna"),  # an English word before the comma
    ],
)
def test_when_no_name_word_is_beside_a_span_then_it_is_left_as_it_is(text: str, value: str) -> None:
    assert widened(text, person(text, value)) == [("PERSON", value)]


def test_when_another_detection_holds_the_neighbouring_words_then_the_name_does_not_grow_over_them() -> None:
    text = "Mr. Anna Berg"
    title = Detection(0, 3, "TITLE", 0.5)
    assert widened(text, title, person(text, "Anna Berg")) == [("TITLE", "Mr."), ("PERSON", "Anna Berg")]


def test_when_two_names_are_separate_people_then_they_stay_separate() -> None:
    text = "Anna Berg and Ben Lee"
    assert widened(text, person(text, "Anna Berg"), person(text, "Ben Lee")) == [
        ("PERSON", "Anna Berg"),
        ("PERSON", "Ben Lee"),
    ]


def _model_reads(text: str, words: dict[str, float]) -> Callable[[int, int], float]:
    """A name model's reading that gives each listed word its probability and others none."""

    def probability(start: int, end: int) -> float:
        return max((p for w, p in words.items() if text.find(w) < end and start < text.find(w) + len(w)), default=0.0)

    return probability


@pytest.mark.parametrize(
    ("text", "core", "reading", "whole"),
    [
        # A town's name the model reads as the name's first word (0.3 is enough beside a name).
        ("Visa for Luz Dary Quintero", "Dary Quintero", {"Luz": 0.45}, "Luz Dary Quintero"),
        # Up to three words on a side: "Íñigo" lies beyond "Sáenz".
        ("moves to Íñigo Sáenz de Heredia now", "de Heredia", {"Íñigo": 0.4}, "Íñigo Sáenz de Heredia"),
        # A function word only when the model is sure, and not where a sentence opens.
        ("Pay Will Ashcombe today", "Ashcombe", {"Will": 0.95}, "Will Ashcombe"),
        ("Pay Will Ashcombe today", "Ashcombe", {"Will": 0.6}, "Ashcombe"),
        # An English word likewise: "Health" after a clinic's name is no part of a name.
        ("Bluewattle Health outpatients", "Bluewattle", {"Health": 0.5}, "Bluewattle"),
        ("Luz Dary Quintero", "Dary Quintero", {"Luz": 0.1}, "Dary Quintero"),
    ],
)
def test_when_the_model_reads_a_neighbour_as_part_of_the_name_then_the_span_grows_over_it(
    text: str, core: str, reading: dict[str, float], whole: str
) -> None:
    found = widen_names(text, [person(text, core)], _model_reads(text, reading))
    assert [text[d.start : d.end] for d in found] == [whole]
