"""What English tells about a PERSON guess (appliance/privacy/name_lexicon.py): ordinary
words, places and eponyms are no people; names that are also words, and any word addressed
like a person, still are. Sentences written for these tests."""

from __future__ import annotations

import gzip

import pytest

from appliance.privacy.detection import Detector
from appliance.privacy.name_lexicon import (
    LEXICON_FILE,
    NAME_WORDS_FILE,
    common_words,
    is_name_word,
    is_ordinary,
    judge_names,
)
from appliance.privacy.name_model import NAME_MODEL_DIR
from appliance.privacy.rules import PrivacyRules
from appliance.privacy.spans import Detection


def judged(text: str, guess: str, *, locations: bool = True) -> list[tuple[str, str]]:
    """Judge one PERSON guess over the first occurrence of ``guess``: what is left of it."""
    start = text.index(guess)
    found = [Detection(start, start + len(guess), "PERSON", 0.9, "NameModel")]
    judge_names(text, found, locations=locations)
    return [(text[d.start : d.end], d.entity_type) for d in found]


@pytest.mark.parametrize(
    ("text", "guess"),
    [
        ("Housekeeping will restock the minibar at noon.", "Housekeeping"),
        ("Payslips for October are attached.", "Payslips"),
        ("the on-call rota is in the wiki", "rota"),
        ("AFFIDAVIT OF SERVICE", "AFFIDAVIT"),
        ("Diagnosis: autoimmune thyroiditis, stable.", "thyroiditis"),
        ("Guest Relations will call you back.", "Guest Relations"),
        # A month beside it is no rest of a name, though "June" is also one.
        ("The applicant will provide the May and June payslips.", "payslips"),
        # A name in the next field of a form is no rest of this one.
        ("Pt: Ilse Vantomme   Therapist: Kabelo Tshabalala", "Therapist"),
        ("Ilse Vantomme\tManager\tGhent", "Manager"),
        # A hyphenated word that is one ordinary word once joined, though "Mark" is a name.
        ("Mark-ups on imported parts have risen.", "Mark-ups"),
        # A reference's letters before its number.
        ("Customer Ana Lima (account TCK-415439) reports fraud.", "TCK"),
        ("PNR REQ-153811: VAN DE VELDE, Wannes", "PNR REQ"),
        # Lower-case English words in a text that writes names with capitals.
        ("Call notes. To be frank, the margin is thin.", "frank"),
        ("Call summary: general enquiry about opening hours.", "general"),
        ("Internal Comms will send the newsletter.", "Internal Comms"),  # a department
        # A job title, or a title with a lower-case role: no name left once the role is off.
        ("Thanks,\nJo Lee\nScrum Master, Abuja office", "Scrum Master"),
        ("Hon. judge's chambers confirmed the date.", "Hon. judge"),
        # Software, named by the word after it.
        ("Known issue: Flask plugin crashes on start.", "Flask"),
        ("The Kafka cluster restarts at two.", "Kafka"),
    ],
)
def test_a_guess_of_only_ordinary_words_is_dropped(text: str, guess: str) -> None:
    assert judged(text, guess) == []


@pytest.mark.parametrize(
    ("text", "guess"),
    [
        ("Please ask Mr Head to sign the lease.", "Head"),  # a title before it
        ("Hi Gift, the contract is ready.", "Gift"),  # a greeting
        ("We owe the win to Tamer's patience.", "Tamer"),  # a capitalized possessive
        ("who approved Will Sutherland's trip?", "Sutherland"),  # the rest of the name beside it
        ("Hope Mensah joined the board.", "Hope Mensah"),  # a name that is also a word
        ("James will present the roadmap.", "James"),  # not "jam" + "es"
        ("Anne-Marie signed the lease.", "Anne-Marie"),  # a hyphenated name is no joined word
        ("Ticket from KOFI MENSAH-123 is closed.", "KOFI"),  # a capitalized name before a hyphen and digits only
        ("Ask Kafka about the cluster.", "Kafka"),  # a person before a word that is no software noun
        ("Acme\tDebjani Mukherjee\tOperations Manager", "Debjani Mukherjee"),  # the next cell's word
        ("grace is out today, ask bill", "grace"),  # all lower case: chat, left to the model
        ("Sorry. Thanks frank, see you Monday.", "frank"),  # addressed
    ],
)
def test_an_ordinary_word_addressed_or_written_like_a_person_is_kept(text: str, guess: str) -> None:
    assert judged(text, guess) == [(guess, "PERSON")]


def test_a_job_title_after_a_name_is_trimmed_off() -> None:
    assert judged("Kind regards, Ama Owusu Senior Analyst", "Ama Owusu Senior Analyst") == [
        ("Ama Owusu Senior", "PERSON")  # "Senior" may be a surname: only the role word goes
    ]
    assert judged("Signed: Tomas Berg Director", "Tomas Berg Director") == [("Tomas Berg", "PERSON")]
    assert judged("Ask Mike Judge about it.", "Mike Judge") == [("Mike Judge", "PERSON")]  # a surname, capitalized


def test_lower_case_ordinary_words_at_the_edges_are_trimmed_off() -> None:
    assert judged("the flaky Grafana panel again", "flaky Grafana") == [("Grafana", "PERSON")]
    assert judged("thanks van der Merwe", "van der Merwe") == [("van der Merwe", "PERSON")]  # particles stay


@pytest.mark.parametrize(
    ("text", "guess", "place"),
    [
        ("Deliver to 14 Samora Machel Avenue, Harare.", "Samora Machel", "Samora Machel Avenue"),
        ("Office: 210 Avenida Benito Juárez, Oaxaca", "Benito Juárez", "Avenida Benito Juárez"),
        ("Flights into Jomo Kenyatta International Airport are late.", "Jomo Kenyatta", None),
        ("Büro: Friedrich-Ebert-Straße 12, Bonn", "Friedrich-Ebert-Straße", "Friedrich-Ebert-Straße"),
        ("Meet at the Airport at six.", "Airport", "Airport"),
        # The guess is only part of a person's name inside a place's name.
        ("The parcel is held at Benito Juárez International Airport.", "Juárez", "Benito Juárez International Airport"),
        ("Flights into Jomo Kenyatta International Airport are late.", "Jomo", None),
        ("The lights on Rue Victor Hugo go up in December.", "Hugo", "Rue Victor Hugo"),
        ("Deliver to 136 Avenue John Brown\nBanda Aceh", "Brown", "Avenue John Brown"),
        ("Büro: Friedrich-Ebert-Straße 12, Bonn", "Friedrich", "Friedrich-Ebert-Straße"),
        ("Excursions: Place Charles de Gaulle and the Louvre.", "de Gaulle", "Place Charles de Gaulle"),
        ("Cargo will be trucked via José Rizal Street tomorrow.", "José", "José Rizal Street"),
    ],
)
def test_a_guess_that_names_a_place_becomes_a_location(text: str, guess: str, place: str | None) -> None:
    expected = place or "Jomo Kenyatta International Airport"
    assert judged(text, guess) == [(expected, "LOCATION")]
    assert judged(text, guess, locations=False) == []  # a policy without places: simply no person


def test_a_surname_that_is_also_a_place_word_stays_a_person() -> None:
    assert judged("Anna Park will join the call.", "Anna Park") == [("Anna Park", "PERSON")]
    # A name before a place's name, apart from it, is no part of the place.
    assert judged("Ask Kwame Mensah, Airport Road office.", "Kwame Mensah") == [("Kwame Mensah", "PERSON")]
    assert judged("Ana Lima flew into Jomo Kenyatta International Airport.", "Ana Lima") == [("Ana Lima", "PERSON")]
    assert judged("Ask Peter Hall about the invoice.", "Peter Hall") == [("Peter Hall", "PERSON")]


@pytest.mark.parametrize(
    ("text", "guess"),
    [
        ("History of Hashimoto's thyroiditis.", "Hashimoto"),
        ("By Ohm's law the current doubles.", "Ohm"),
        ("She won a Fulbright scholarship.", "Fulbright"),
        ("Order panels from Umoja Solar this week.", "Umoja Solar"),
        ("Tamarind Foods confirmed the order.", "Tamarind"),
        ("Update the Gantt chart before Friday.", "Gantt"),
        ("Your Epstein-Barr virus test is negative.", "Epstein-Barr"),
        ("Grow it on a Petri dish overnight.", "Petri"),
        ("Controls follow the Sarbanes-Oxley Act.", "Sarbanes-Oxley"),
    ],
)
def test_eponyms_and_organisations_are_no_people(text: str, guess: str) -> None:
    assert judged(text, guess) == []


@pytest.mark.parametrize(
    ("text", "guess"),
    [
        ("Maria Lopez's disease is in remission.", "Maria Lopez"),  # two words: a patient
        ("Call Okonkwo's law firm tomorrow.", "Okonkwo"),  # a firm, not a law
        ("Please file Okafor's chart by noon.", "Okafor"),  # a patient's chart: a possessive
        ("Hi Anna board members are waiting.", "Anna"),  # addressed: a person
    ],
)
def test_a_person_before_an_eponym_head_is_kept(text: str, guess: str) -> None:
    assert judged(text, guess) == [(guess, "PERSON")]


def test_the_shipped_lexicon_holds_english_words_and_no_names() -> None:
    words = common_words()
    assert {"payslip", "payslips", "thyroiditis", "housekeeping", "rota"} <= words
    assert not {"james", "hope", "lee", "mark", "rose", "maria", "okafor", "nguyen"} & words
    assert is_ordinary("Payslip's") and not is_ordinary("Charles")
    with gzip.open(NAME_MODEL_DIR / LEXICON_FILE, "rt", encoding="utf-8") as fh:
        listed = fh.read().split()
    assert listed == sorted(set(listed)) and all(w.islower() and w.isascii() for w in listed)


@pytest.mark.slow
def test_the_shipped_lexicon_is_what_the_builder_makes() -> None:
    pytest.importorskip("faker")
    from appliance.privacy.name_training.lexicon import build

    assert build() == sorted(common_words())


def test_the_shipped_name_words_are_names_that_are_also_english_words() -> None:
    with gzip.open(NAME_MODEL_DIR / NAME_WORDS_FILE, "rt", encoding="utf-8") as fh:
        listed = fh.read().split()
    assert {"frank", "grace", "bill", "hope", "will"} <= set(listed)
    assert not {"rupert", "adam", "maria", "okafor", "housekeeping"} & set(listed)  # nouns only, or no English word
    assert is_name_word("Frank") and not is_name_word("Haider")


@pytest.mark.slow
def test_the_shipped_name_words_are_what_the_builder_makes() -> None:
    pytest.importorskip("faker")
    from appliance.privacy.name_training.lexicon import build_name_words

    with gzip.open(NAME_MODEL_DIR / NAME_WORDS_FILE, "rt", encoding="utf-8") as fh:
        assert build_name_words() == fh.read().split()


def people(detector: Detector, text: str) -> list[tuple[str, str]]:
    return [
        (text[d.start : d.end], d.entity_type)
        for d in detector.analyze([text], PrivacyRules())[0]
        if d.entity_type in ("PERSON", "LOCATION")
    ]


def test_a_name_that_is_also_a_word_opening_a_sentence_needs_the_name_model(detector: Detector) -> None:
    # spaCy calls the capital that opens a sentence a person; the name model reads what follows.
    text = "The pilot went well. Frank feedback from the users was more useful than the survey."
    assert not [v for v, t in people(detector, text) if t == "PERSON"]
    assert ("Frank", "PERSON") in people(detector, "The pilot went well. Frank said the users were happy.")
    # A name that is no English word keeps spaCy's guess as before.
    assert ("Haider", "PERSON") in people(detector, "Hi, it's the school. Haider is fine, but call us back.")


def test_a_chat_mention_names_a_person_unless_it_names_a_group(detector: Detector) -> None:
    assert ("khalifa", "PERSON") in people(detector, "@khalifa can you look at the deploy? prod is down")
    found = people(detector, "@here the deploy is done, ping @support if it breaks")
    assert not [v for v, t in found if t == "PERSON" and v in ("here", "support")]
    assert people(detector, "mail it to tomas@example.org please") == []


def test_work_shorthand_is_no_name_but_a_surname_like_it_stays(detector: Detector) -> None:
    found = people(detector, "pls check the sku on prod, ssh into the box and fix the config")
    assert not [v for v, t in found if t == "PERSON"]
    assert ("Aïssatou Sow", "PERSON") in people(detector, "Referral: Aïssatou Sow introduced us to the team.")


def test_an_airline_name_field_is_a_person_with_its_title(detector: Detector) -> None:
    text = "PASSENGER NAME RECORD\n1. ONYANGO/AKINYI MS   2. KOH/TECKSOON DR\n1 KQ 709"
    persons = [v for v, t in people(detector, text) if t == "PERSON"]
    assert persons == ["ONYANGO/AKINYI MS", "KOH/TECKSOON DR"]
    assert not [v for v, t in people(detector, "Route it to HR/FINANCE MS by noon.") if "FINANCE" in v]


def test_sign_offs_and_labels_of_other_languages_are_no_names(detector: Detector) -> None:
    for text, name in [
        ("Cordialement,\nMarvi Memon\nRegional Sales Director", "Marvi Memon"),
        ("Mit freundlichen Grüßen\nDr. Inoue Mizuki\nData Protection Officer", "Dr. Inoue Mizuki"),
        ("Saludos cordiales,\nBehrouz Farahani", "Behrouz Farahani"),
        ("Nombre: Emir Hadžić\nCiudad: Sarajevo", "Emir Hadžić"),
    ]:
        persons = [v for v, t in people(detector, text) if t == "PERSON"]
        assert persons == [name], (text, persons)


def test_the_detector_keeps_people_and_drops_headings_and_eponyms(detector: Detector) -> None:
    text = (
        "Housekeeping\n\nDear Ms Wanjiru Kamau, your Hashimoto's thyroiditis review with Dr. Tendai Moyo is on Monday."
    )
    found = people(detector, text)
    persons = [v for v, t in found if t == "PERSON"]
    assert any("Wanjiru Kamau" in v for v in persons) and any("Tendai Moyo" in v for v in persons)
    assert not any(v in ("Housekeeping", "Hashimoto", "thyroiditis") for v in persons)
