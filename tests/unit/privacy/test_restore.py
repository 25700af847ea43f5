from __future__ import annotations

from collections.abc import Iterable, Mapping

import pytest

from appliance.privacy.restore import StreamRestorer, restore

VAULT = {"<PERSON_1>": "Anna Berg", "<EMAIL_ADDRESS_1>": "anna@example.org", "<PERSON_12>": "Jo Lee"}


def lookup(tokens: Iterable[str]) -> Mapping[str, str]:
    return {t: VAULT[t] for t in tokens if t in VAULT}


ANSWER = "Dear <PERSON_1>, we wrote to <EMAIL_ADDRESS_1>. <PERSON_12> and <PERSON_2> agree 😀."
RESTORED = "Dear Anna Berg, we wrote to anna@example.org. Jo Lee and <PERSON_2> agree 😀."


def test_known_tokens_are_restored_and_unknown_ones_left_as_they_are() -> None:
    assert restore(ANSWER, lookup) == (RESTORED, 3)


@pytest.mark.parametrize(
    "forged",
    [
        "<PERSON_99>",
        "<person_1>",
        "<PERSON_01>",
        "<PERSON_1 >",
        "< PERSON_1>",
        "<PERSON_>",
        "<EMAIL_ADDRESS_3f9a1c2b>",
        "<<PERSON_3>>",
    ],
)
def test_forged_or_malformed_tokens_are_untouched(forged: str) -> None:
    text = f"x {forged} y"
    assert restore(text, lookup)[0] == text


def test_each_token_is_looked_up_once_per_stream() -> None:
    asked: list[list[str]] = []

    def counting(tokens: Iterable[str]) -> Mapping[str, str]:
        asked.append(list(tokens))
        return lookup(tokens)

    s = StreamRestorer(counting)
    s.feed("<PERSON_1> <PERSON_1> ")
    s.feed("<PERSON_1> <PERSON_9>")
    s.feed("<PERSON_9>")
    s.flush()
    assert asked == [["<PERSON_1>"], ["<PERSON_9>"]]


@pytest.mark.parametrize("split", range(len(ANSWER) + 1))
def test_a_token_split_at_any_point_across_two_chunks_is_restored(split: int) -> None:
    s = StreamRestorer(lookup)
    out = s.feed(ANSWER[:split]) + s.feed(ANSWER[split:]) + s.flush()
    assert out == RESTORED


def test_one_character_chunks_are_restored() -> None:
    s = StreamRestorer(lookup)
    out = "".join(s.feed(ch) for ch in ANSWER) + s.flush()
    assert out == RESTORED
    assert s.restored == 3


@pytest.mark.parametrize(("a", "b"), [(3, 9), (5, 11), (6, 20), (0, 14), (14, 30), (40, 52)])
def test_a_token_split_across_three_chunks_is_restored(a: int, b: int) -> None:
    s = StreamRestorer(lookup)
    out = s.feed(ANSWER[:a]) + s.feed(ANSWER[a:b]) + s.feed(ANSWER[b:]) + s.flush()
    assert out == RESTORED


def test_text_without_token_prefixes_is_released_immediately() -> None:
    s = StreamRestorer(lookup)
    assert s.feed("Hello wor") == "Hello wor"
    assert s.feed("ld <PERS") == "ld "
    assert s.feed("ON_1") == ""
    assert s.feed(">!") == "Anna Berg!"
    assert s.flush() == ""


def test_an_unfinished_token_at_the_end_is_flushed_as_is() -> None:
    s = StreamRestorer(lookup)
    assert s.feed("see <PERSON_") == "see "
    assert s.flush() == "<PERSON_"


def test_a_long_lt_run_is_not_held_forever() -> None:
    s = StreamRestorer(lookup)
    held = "<" + "A" * 80
    assert s.feed(held) == held
