"""Towns and holidays the name model takes for people (appliance/privacy/gazetteers.py): a
place that is no name becomes a LOCATION, a place that is also a name only where the text
makes it a place, a holiday is no person, and a person stays a person. Sentences written for
these tests."""

from __future__ import annotations

import gzip

import pytest

from appliance.privacy.detection import Detector
from appliance.privacy.gazetteers import brand_key, brand_kind, is_country, is_holiday, judge_gazetteers, place_kind
from appliance.privacy.rules import PrivacyRules
from appliance.privacy.spans import Detection


def judged(text: str, guess: str, *, locations: bool = True) -> list[tuple[str, str]]:
    """Judge one PERSON guess over the first occurrence of ``guess``: what is left of it."""
    start = text.index(guess)
    found = [Detection(start, start + len(guess), "PERSON", 0.9, "NameModel")]
    judge_gazetteers(text, found, locations=locations)
    return [(text[d.start : d.end], d.entity_type) for d in found]


def test_the_gazetteer_tells_places_that_are_names_from_those_that_are_not() -> None:
    assert place_kind("Tiruchirappalli") == "p"
    assert place_kind("  luang   PRABANG ") == "p"
    assert place_kind("Florence") == "n"
    assert place_kind("Jackson") == "n"
    assert place_kind("Anna Berg") is None
    assert is_country("Lebanon") and is_country("georgia")
    assert not is_country("Mitchell")


@pytest.mark.parametrize(
    ("text", "guess", "place"),
    [
        ("Customers in Tiruchirappalli were offline for an hour.", "Tiruchirappalli", "Tiruchirappalli"),
        ("The Kaohsiung warehouse closes early on Friday.", "Kaohsiung", "Kaohsiung"),
        # The guess is part of the town's name: the whole name becomes the place.
        ("We flew into Kota Kinabalu late on Sunday.", "Kinabalu", "Kota Kinabalu"),
        # A town that is also a name, where the text makes it a place.
        ("The board met in Florence last week.", "Florence", "Florence"),
        ("Ship it to 12 Harbour Road, Jackson by Monday.", "Jackson", "Jackson"),
        ('{"city": "Houston", "zip": "77002"}', "Houston", "Houston"),
        ("Our Dallas office is moving.", "Dallas", "Dallas"),
        ("She lives in Lagos, Nigeria.", "Lagos", "Lagos"),
        # A street in an address line: a house number, then a postcode or a known town.
        ("Address: 124 Anna Salai, Chennai. ID verified.", "Anna Salai", "Anna Salai"),
        ("Gate code for 178 Masarykova, Brno: ask reception.", "Masarykova", "Masarykova"),
        ("Property: Jungfernstieg 49, 20354 Hamburg", "Jungfernstieg", "Jungfernstieg"),
        ("Billing address: Knez Mihailova 12, Belgrade", "Knez Mihailova", "Knez Mihailova"),
    ],
)
def test_a_guess_that_names_a_town_becomes_a_location(text: str, guess: str, place: str) -> None:
    assert judged(text, guess) == [(place, "LOCATION")]


@pytest.mark.parametrize(
    ("text", "guess"),
    [
        # Names that are also towns, with nothing that makes them a place.
        ("Florence will send the minutes tonight.", "Florence"),
        ("PO-1187,Jackson,Okafor,j.okafor@example.org", "Jackson"),
        # Towns' names borne by people, said of a person.
        ("Please book a call with Bahar for Thursday.", "Bahar"),
        ("Thanks for the slides.\nBest,\nBahar", "Bahar"),
        ("Reviewed by: K. Mysuru", "Mysuru"),
        ("Dr. Kaohsiung signed the form.", "Kaohsiung"),
        ("Florence Nightingale trained nurses.", "Florence"),
        ("[09:14] Bahar: the build is green again", "Bahar"),
        # A list of names is no "town, country".
        ("They had four children: Hayden, Mitchell, Stephanie and Joan.", "Mitchell"),
        # A number and a comma beside a name, but no address: a list, a count, a name at work.
        ("Seats: Anna Berg 3, Ben Okoro 2", "Anna Berg"),
        ("Ticket 4471 Maria Lopez, can you check it?", "Maria Lopez"),
        ("Owner: Dr Kondwani Mwale 12, Lilongwe", "Kondwani Mwale"),  # titled: a person
    ],
)
def test_a_person_named_like_a_town_stays_a_person(text: str, guess: str) -> None:
    assert judged(text, guess) == [(guess, "PERSON")]


def test_without_location_in_the_policy_a_town_is_left_in_the_clear_only_on_a_place_cue() -> None:
    # "in" says it is a place: no person, and the policy does not hide places.
    assert judged("Customers in Tiruchirappalli were offline.", "Tiruchirappalli", locations=False) == []
    # No cue: a town's name could still be someone's, so it stays hidden as a person.
    assert judged("Tiruchirappalli was offline for an hour.", "Tiruchirappalli", locations=False) == [
        ("Tiruchirappalli", "PERSON")
    ]


def test_other_types_pass_untouched() -> None:
    text = "Customers in Mysuru were offline."
    found = [Detection(13, 19, "LOCATION", 0.85, "SpacyRecognizer")]
    judge_gazetteers(text, found, locations=True)
    assert found == [Detection(13, 19, "LOCATION", 0.85, "SpacyRecognizer")]


@pytest.mark.parametrize(
    ("text", "guess"),
    [
        ("The clinic is closed on Jamhuri Day.", "Jamhuri"),
        ("We close early for Eid al-Adha this year.", "Adha"),
        ("Deliveries pause over Rosh Hashanah.", "Rosh Hashanah"),
        ("She observes Martin Luther King Jr. Day, so no flights that Monday.", "Martin Luther King Jr."),
        ("Happy Diwali to the whole team!", "Diwali"),
        # Festivals that no national calendar lists (name_training/festivals.txt).
        ("I'm on leave over Bihu; Jesse swaps with me that week.", "Bihu"),
        ("Collections rose after Inti Raymi.", "Inti Raymi"),
        ("Guest list for the Naadam dinner", "Naadam"),
    ],
)
def test_a_guess_inside_a_holiday_is_no_person(text: str, guess: str) -> None:
    assert judged(text, guess) == []


@pytest.mark.parametrize(
    ("text", "guess"),
    [
        # The person, not the holiday named after him.
        ("Martin Luther King Jr. spoke in Memphis.", "Martin Luther King Jr."),
        # A name that is also a holiday's, addressed as a person.
        ("Hi Chuseok, the parcel has arrived.", "Chuseok"),
    ],
)
def test_a_person_beside_or_named_like_a_holiday_stays_a_person(text: str, guess: str) -> None:
    assert judged(text, guess) == [(guess, "PERSON")]


@pytest.mark.parametrize(
    ("text", "guess"),
    [
        ("The reply-to domain was registered on 25 April 2026.", "April"),
        ("Results are due on the 4th of May.", "May"),
        ("Subject: June 3rd planning", "June"),
        ("Payroll runs again in August.", "August"),
        ("The freeze lasts until the end of May.", "May"),
        ("The applicant will provide the May and June payslips.", "May"),
        ("The applicant will provide the May and June payslips.", "June"),
        ("Office hours: Monday-Friday, 9 to 5.", "Monday"),
        ("It closed in March for repairs.", "March"),  # a month that is no name: no cue needed
        ("Thursday works better for the vendor.", "Thursday"),
    ],
)
def test_a_month_or_a_weekday_in_a_date_is_no_person(text: str, guess: str) -> None:
    assert judged(text, guess) == []


@pytest.mark.parametrize(
    ("text", "guess"),
    [
        ("June will send the minutes tonight.", "June"),  # no date here: it may be a person
        ("Hi April, thanks for the notes.", "April"),
        ("Please book a call with May for Thursday.", "May"),
        ("April Ludgate approved the budget.", "April"),
        ("Ms August signed the lease.", "August"),
        ("[10:02] June: the build is green", "June"),
    ],
)
def test_a_person_named_like_a_month_stays_a_person(text: str, guess: str) -> None:
    assert judged(text, guess) == [(guess, "PERSON")]


def test_the_brand_list_tells_brands_that_are_names_from_those_that_are_not() -> None:
    assert brand_key("Ben & Jerry\u2019s") == brand_key("ben jerry") == "ben jerry"
    assert brand_key("Dr. Martens") == brand_key("Dr Martens")
    assert brand_key("Kuehne+Nagel") == "kuehne nagel"
    assert brand_kind("Grafana") == "b"
    assert brand_kind("Dyson") == "b"  # a family name, but not one Faker knows
    assert brand_kind("Jenkins") == "n" and brand_kind("Paul Smith") == "n"
    assert brand_kind("Anna Berg") is None


@pytest.mark.parametrize(
    ("text", "guess"),
    [
        ("Open the Grafana panel for the last hour.", "Grafana"),  # no name: no cue needed
        ("Ordered a Dyson fan on Monday.", "Dyson"),
        ("Who's taking the Herman Miller call?", "Herman Miller"),
        ("The Jenkins pipeline failed again.", "Jenkins"),
        ("Please take notice that Ana Lima of Baker McKenzie acts for us.", "Baker McKenzie"),
        ("The McDonald's next door was loud.", "McDonald's"),
        ("Dinner is at Ben & Jerry's on the corner.", "Ben"),
        ("Visitor: Mr Okafor (Johnson & Johnson)", "Johnson"),
        ("Cool the sample to 300 Kelvin first.", "Kelvin"),
        ("Allow 5 working days.\nSuzuki Customer Care", "Suzuki"),
        # A company's role before it, or another listed brand joined to a lone word.
        ("Employer: Hilton\nStart date: 1 May", "Hilton"),
        ("Chargeback: merchant Porsche, amount EUR 90.", "Porsche"),
        ("We compared offers from Suzuki and Bosch.", "Suzuki"),
        ("We compared offers from Suzuki and Bosch.", "Bosch"),
        ("Deploy notes: Paul Smith and Grafana both renewed.", "Paul Smith"),  # beside a brand that is no name
        ("Experience with Grafana is a plus.", "Grafana"),  # "with" makes no person of a brand that is no name
    ],
)
def test_a_brand_is_no_person(text: str, guess: str) -> None:
    assert judged(text, guess) == []


@pytest.mark.parametrize(
    ("text", "guess"),
    [
        ("Paul Smith approved the refund.", "Paul Smith"),  # a brand's name, borne by many people
        # Two full names that are brands, joined: people as likely as firms, so people.
        ("Paul Smith and John Lewis approved the refund.", "Paul Smith"),
        ("Paul Smith and John Lewis approved the refund.", "John Lewis"),
        ("Mr Porsche and Ms Bosch joined the call.", "Porsche"),  # titled
        ("Mr Dyson called about the invoice.", "Dyson"),
        ("Jenkins said the build is green.", "Jenkins"),
        ("Hi Alexa, your parcel is here.", "Alexa"),
        ("Ask Michael Dell about the quote.", "Michael Dell"),
    ],
)
def test_a_person_named_like_a_brand_stays_a_person(text: str, guess: str) -> None:
    assert judged(text, guess) == [(guess, "PERSON")]


def test_the_shipped_brand_list_is_what_the_builder_makes() -> None:
    from appliance.privacy.name_model import NAME_MODEL_DIR
    from appliance.privacy.name_training.brands import BRANDS_FILE, build

    with gzip.open(NAME_MODEL_DIR / BRANDS_FILE, "rt", encoding="utf-8") as fh:
        shipped = [line.rstrip("\n") for line in fh if line.strip()]
    assert build() == shipped


def test_the_holiday_list_holds_holidays_and_no_lone_names() -> None:
    assert is_holiday("Mashujaa Day") and is_holiday("eid al-adha") and is_holiday("Diwali")
    assert not is_holiday("Noel")  # a given name: one-word names are left out
    assert not is_holiday("Anna Berg")


def test_the_shipped_holiday_list_is_what_the_builder_makes() -> None:
    import gzip

    from appliance.privacy.name_model import NAME_MODEL_DIR
    from appliance.privacy.name_training.holiday_names import HOLIDAYS_FILE, build

    with gzip.open(NAME_MODEL_DIR / HOLIDAYS_FILE, "rt", encoding="utf-8") as fh:
        shipped = [line.rstrip("\n") for line in fh if line.strip()]
    assert build() == shipped


def test_the_shipped_gazetteer_is_what_the_builder_makes() -> None:
    import gzip

    from appliance.privacy.name_model import NAME_MODEL_DIR
    from appliance.privacy.name_training.places import PLACES_FILE, build

    with gzip.open(NAME_MODEL_DIR / PLACES_FILE, "rt", encoding="utf-8") as fh:
        shipped = [line.rstrip("\n") for line in fh if line.strip()]
    assert build() == shipped


@pytest.fixture(scope="module")
def detector() -> Detector:
    from appliance.config import PrivacySettings

    return Detector(PrivacySettings())


def test_the_detector_hides_the_town_as_a_place_and_the_person_as_a_person(detector: Detector) -> None:
    text = "Ngozi Adeyemi says customers in Tiruchirappalli and Mysuru were offline over Mashujaa Day."
    (found,) = detector.analyze([text], PrivacyRules())
    by_value = {text[d.start : d.end]: d.entity_type for d in found}
    assert by_value.get("Ngozi Adeyemi") == "PERSON"
    assert "PERSON" not in {by_value.get("Tiruchirappalli"), by_value.get("Mysuru")}
    assert not any(d.entity_type == "PERSON" and "Mashujaa" in text[d.start : d.end] for d in found)
