"""The llama.cpp engine on the packaged SmolLM2 GGUF: batched sequences in one llama_decode.

These tests need the optional ``llamacpp`` extra, which ``scripts/test`` installs; without
it they are skipped with a reason that says so, unless ``APPLIANCE_REQUIRE_LLAMACPP=1`` (set
by ``scripts/test`` when the setup installed the extra): then a missing engine fails the
collection, so CI cannot pass by skipping the engine it meant to test.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance.models import llamacpp
from appliance.models.base import ChatChunk, ChatMessage, ChatRequest, ChatResult, ModelInput
from appliance.models.llamacpp import LlamaCppChatRunner
from appliance.models.store import PACKAGE_SCHEME, SMOLLM2_PACKAGE, ModelStore
from tests.unit.models import support

REQUIRE = "APPLIANCE_REQUIRE_LLAMACPP"
if not llamacpp.available() and os.environ.get(REQUIRE) == "1":
    pytest.fail(
        f"{REQUIRE}=1 (the setup installed the llamacpp extra) but llama_cpp cannot be imported",
        pytrace=False,
    )
pytestmark = pytest.mark.skipif(
    not llamacpp.available(),
    reason="LLAMA.CPP ENGINE NOT TESTED: the optional extra is missing (scripts/_setup.sh installs .[llamacpp])",
)

GERMANY = "What is the capital of Germany?"


def ask(text: str, **kw: object) -> ChatRequest:
    kw.setdefault("temperature", 0.0)
    kw.setdefault("max_tokens", 24)
    return ChatRequest([ChatMessage("user", text)], **kw)  # type: ignore[arg-type]


def gguf() -> Path:
    path = ModelStore(Path("/nonexistent")).gguf_file(PACKAGE_SCHEME + SMOLLM2_PACKAGE)
    assert path is not None
    return path


SEEN: list[ModelInput] = []


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppChatRunner]:
    runner = LlamaCppChatRunner("smollm2-gguf", gguf(), max_batch=4, max_queue=8, observer=SEEN.append)
    runner.warmup()
    yield runner
    runner.close()


@pytest.mark.slow
def test_the_build_has_no_amx_kernels() -> None:
    info = llamacpp.system_info()
    assert "AMX_INT8 = 1" not in info


@pytest.mark.slow
def test_smollm2_on_llamacpp_knows_the_capital_of_germany(engine: LlamaCppChatRunner) -> None:
    result = asyncio.run(engine.complete(ask(GERMANY)))
    assert "Berlin" in result.text
    assert result.finish_reason == "stop"
    assert 0 < result.usage.completion_tokens < 24
    assert result.usage.prompt_tokens > 10


@pytest.mark.slow
def test_the_prompt_is_the_chat_template_transformers_renders(
    engine: LlamaCppChatRunner, request: pytest.FixtureRequest
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(support.smollm2_dir(support.store_root(request.config))))
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Say hi to <PERSON_1>.")]
    expected = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages], tokenize=False, add_generation_prompt=True
    )
    SEEN.clear()
    request_ = ChatRequest(messages, temperature=0, max_tokens=1)
    asyncio.run(engine.complete(request_))
    assert engine.render(request_) == expected
    assert [s.texts for s in SEEN] == [(expected,)]  # the observer sees exactly what the model gets


@pytest.mark.slow
def test_concurrent_prompts_are_prefilled_and_decoded_in_shared_multi_token_batches(
    engine: LlamaCppChatRunner,
) -> None:
    questions = [GERMANY, "Name three colors.", "What is 2+2? Answer with a number.", "Write a haiku about rain."]
    before = engine.stats

    async def together() -> list[ChatResult]:
        return list(await asyncio.gather(*(engine.complete(ask(q, max_tokens=12)) for q in questions)))

    results = asyncio.run(together())
    after = engine.stats
    tokens = sum(r.usage.completion_tokens for r in results)
    assert after.forward_passes - before.forward_passes < tokens  # one llama_decode serves several sequences
    assert after.max_batch_seen == 4
    assert "Berlin" in results[0].text
    assert "4" in results[2].text
    assert all(r.text for r in results)


@pytest.mark.slow
def test_seeded_sampling_repeats(engine: LlamaCppChatRunner) -> None:
    """(Whatever runs beside it too: the joining test below.)"""
    request = ask("Write one sentence about the sea.", temperature=0.9, top_p=0.9, seed=11, max_tokens=12)

    async def go() -> tuple[str, str, str]:
        first = (await engine.complete(request)).text
        again = (await engine.complete(request)).text
        other = (await engine.complete(ask("Write one sentence about the sea.", temperature=0.9, seed=12))).text
        return first, again, other

    first, again, other = asyncio.run(go())
    assert again == first
    assert other != first


@pytest.mark.slow
def test_stop_strings_and_length_end_the_answer_as_on_torch(engine: LlamaCppChatRunner) -> None:
    async def go() -> tuple[list[ChatChunk], ChatResult]:
        stopped = [c async for c in engine.stream(ask(GERMANY, stop=["Berlin"]))]
        cut = await engine.complete(ask("Tell me a long story about a dragon.", max_tokens=3))
        return stopped, cut

    stopped, cut = asyncio.run(go())
    text = "".join(c.text for c in stopped)
    assert "Berlin" not in text
    assert text.startswith("The capital of Germany")
    assert stopped[-1].finish_reason == "stop"
    assert (cut.finish_reason, cut.usage.completion_tokens) == ("length", 3)


@pytest.mark.slow
def test_a_cancelled_stream_frees_its_sequence_for_the_next_request() -> None:
    runner = LlamaCppChatRunner("smollm2-one-slot", gguf(), max_batch=1, max_queue=1)
    runner.warmup()

    async def go() -> float:
        long = runner.stream(ask("Tell me a very long story.", max_tokens=400))
        await long.__anext__()
        await long.aclose()  # what a disconnecting client does
        started = time.monotonic()
        result = await runner.complete(ask(GERMANY, max_tokens=8))
        assert "Berlin" in result.text
        return time.monotonic() - started

    try:
        waited = asyncio.run(go())
        assert runner.stats.completion_tokens <= 8  # the cancelled stream never completed
        assert waited < 10
    finally:
        runner.close()


@pytest.mark.slow
def test_token_pieces_decode_incrementally_without_broken_characters(engine: LlamaCppChatRunner) -> None:
    text = "Café naïve façade — 東京 🙂🎉 done."
    ids = engine._encode(text)
    detok = engine._detokenizer()
    pieces = [detok.push(token) for token in ids] + [detok.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


@pytest.mark.slow
def test_prompts_behind_the_same_system_turn_share_its_cache_cells(engine: LlamaCppChatRunner) -> None:
    async def go() -> list[ChatResult]:
        return [
            await engine.complete(ask(GERMANY, max_tokens=8)),
            await engine.complete(ask("Name three colors.", max_tokens=4)),
            await engine.complete(ask(GERMANY, max_tokens=8)),
        ]

    before = engine.shared_prefix_tokens
    first, _, again = asyncio.run(go())
    system_turn = len(engine._encode(engine.render(ask("x")).split("<|im_start|>user")[0]))
    assert engine.shared_prefix_tokens - before >= 2 * system_turn  # both later prompts skipped it
    assert again.text == first.text
    assert "Berlin" in again.text


@pytest.mark.slow
def test_a_gguf_is_re_encoded_once_into_the_store_and_still_answers(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    q8 = store.gguf_as(gguf(), "q8_0")
    assert q8.read_bytes()[:4] == b"GGUF"
    assert q8.stat().st_size > gguf().stat().st_size  # 8.5 bits a weight instead of 5
    built = q8.stat().st_mtime_ns
    assert store.gguf_as(gguf(), "q8_0") == q8
    assert q8.stat().st_mtime_ns == built  # made once
    assert store.gguf_as(gguf(), "as-is") == gguf()
    runner = LlamaCppChatRunner("smollm2-q8", q8, max_batch=1)
    try:
        assert "Berlin" in asyncio.run(runner.complete(ask(GERMANY, max_tokens=8))).text
    finally:
        runner.close()


# ---------------------------------------------------------------- same numbers as llama.cpp alone

PROMPTS = [GERMANY, "Name three colors.", "Write a haiku about rain.", "Describe a busy market in the morning."]


@pytest.mark.slow
def test_greedy_answers_are_token_for_token_those_of_llama_cpp_pythons_own_llama() -> None:
    """Same GGUF, same prompt tokens, greedy: the engine's batching, prefix sharing and
    sampler chain change nothing. The raw ``Llama`` gets ``flash_attn=True`` because the
    engine's context leaves flash attention to llama.cpp (``auto``: on for the CPU); at
    llama-cpp-python's default (off) 2 of 8 answers of 24 tokens differed from the engine's
    after 6-10 identical tokens, a near tie resolved by the other attention kernel."""
    from llama_cpp import Llama

    runner = LlamaCppChatRunner("smollm2-vs-raw", gguf(), max_batch=2, threads=1)
    raw = Llama(model_path=str(gguf()), n_ctx=2048, n_threads=1, n_threads_batch=1, flash_attn=True, verbose=True)
    try:
        for question in PROMPTS:
            result = asyncio.run(runner.complete(ask(question)))
            tokens: list[int] = []
            for token in raw.generate(runner._encode(runner.render(ask(question))), temp=0.0, top_k=1, reset=True):
                tokens.append(token)
                if len(tokens) >= 24 or raw.token_eos() == token:
                    break
            detok = runner._detokenizer()
            text = "".join(detok.push(t) for t in tokens if t != raw.token_eos()) + detok.flush()
            assert (result.text, result.usage.completion_tokens) == (text, len(tokens)), question
    finally:
        raw.close()
        runner.close()


def _logits(runner: LlamaCppChatRunner, index: int) -> np.ndarray:
    ll = runner._ll
    size = ll.llama_vocab_n_tokens(runner._vocab)
    return np.ctypeslib.as_array(ll.llama_get_logits_ith(runner._ctx, index), shape=(size,)).copy()


@pytest.fixture
def idle() -> Iterator[LlamaCppChatRunner]:
    """A loaded engine whose worker has nothing to do, so the test may drive its context."""
    runner = LlamaCppChatRunner("smollm2-idle", gguf(), max_batch=4, threads=1)
    runner.warmup()
    yield runner
    runner.close()


def _prefill(runner: LlamaCppChatRunner, seq: int, tokens: list[int]) -> None:
    runner._decode([(token, position, seq, True) for position, token in enumerate(tokens)])


@pytest.mark.slow
def test_a_sequences_next_token_is_bit_identical_whatever_shares_its_llama_decode(
    idle: LlamaCppChatRunner,
) -> None:
    """What one ``llama_decode`` carries besides a sequence (other sequences' next tokens, a
    newcomer's prompt) does not change that sequence's numbers, as long as its cells are where
    they were."""
    ll = idle._ll
    prompt = idle._encode(idle.render(ask(GERMANY)))
    other = idle._encode(idle.render(ask("Write a haiku about rain.")))
    step = (42, len(prompt), 0, True)

    def fresh() -> None:
        ll.llama_memory_clear(idle._memory, True)
        _prefill(idle, 0, prompt)

    fresh()
    idle._decode([step])
    alone = _logits(idle, 0)
    neighbours: dict[str, list[tuple[int, int, int, bool]]] = {
        "beside three running sequences": [(7, 30, s, True) for s in (1, 2, 3)],
        "beside a joining prompt": [(t, p, 1, p == len(other) - 1) for p, t in enumerate(other)],
    }
    for name, items in neighbours.items():
        fresh()
        if name.startswith("beside three"):
            for s in (1, 2, 3):
                _prefill(idle, s, other[:30])
        idle._decode([step, *items])
        assert np.array_equal(_logits(idle, 0), alone), name


@pytest.mark.slow
def test_a_sequences_numbers_do_not_depend_on_the_cells_other_requests_held_or_hold(
    idle: LlamaCppChatRunner,
) -> None:
    """llama.cpp sums attention over cache cells in cell order, so in one cache shared by
    all sequences a sequence placed after another's 300 cells got logits up to 1.2 apart
    from the same sequence alone. With a cache stream per sequence, what other requests
    left in the cache, or hold beside it, changes nothing."""
    ll = idle._ll
    prompt = idle._encode(idle.render(ask(GERMANY)))
    step = (42, len(prompt), 0, True)
    ll.llama_memory_clear(idle._memory, True)
    _prefill(idle, 0, prompt)
    idle._decode([step])
    alone = _logits(idle, 0)
    ll.llama_memory_clear(idle._memory, True)
    _prefill(idle, 1, list(range(100, 400)))  # another request's 300 cells first...
    _prefill(idle, 2, list(range(400, 700)))
    _prefill(idle, 0, prompt)
    ll.llama_memory_seq_rm(idle._memory, 1, -1, -1)  # ...which then finished
    idle._decode([step])
    assert np.array_equal(_logits(idle, 0), alone), "after a request that finished"
    ll.llama_memory_seq_rm(idle._memory, 0, len(prompt), -1)
    idle._decode([step, (7, 300, 2, True)])  # beside a longer one, in the same step
    assert np.array_equal(_logits(idle, 0), alone), "beside a longer sequence"
    ll.llama_memory_seq_rm(idle._memory, 0, -1, -1)
    _prefill(idle, 0, prompt)  # in a slot a longer request held before
    idle._decode([step])
    assert np.array_equal(_logits(idle, 0), alone), "in a slot used before"


@pytest.mark.parametrize(
    ("busy", "gaps"),
    [
        (set(), []),
        ({0}, []),
        ({0, 1, 2}, []),
        ({0, 2, 3, 5}, [1, 4]),
        ({3, 6}, [4, 5]),  # free slots below the lowest busy one split nothing
    ],
)
def test_free_slots_between_busy_ones_get_a_throwaway_token(busy: set[int], gaps: list[int]) -> None:
    assert LlamaCppChatRunner._gaps(busy) == gaps


@pytest.mark.slow
def test_a_throwaway_token_in_a_free_slot_changes_nothing_and_leaves_it_empty(idle: LlamaCppChatRunner) -> None:
    ll = idle._ll
    prompt = idle._encode(idle.render(ask(GERMANY)))
    ll.llama_memory_clear(idle._memory, True)
    _prefill(idle, 0, prompt)
    _prefill(idle, 2, prompt)
    idle._decode([(42, len(prompt), 0, True)])
    alone = _logits(idle, 0)
    ll.llama_memory_seq_rm(idle._memory, 0, len(prompt), -1)
    idle._decode([(42, len(prompt), 0, True), (idle._specials_token(), 0, 1, False), (42, len(prompt), 2, True)])
    assert np.array_equal(_logits(idle, 0), alone)
    assert np.array_equal(_logits(idle, 2), alone)  # the same sequence in slot 2
    ll.llama_memory_seq_rm(idle._memory, 1, -1, -1)  # what _forward does after the step
    assert ll.llama_memory_seq_pos_max(idle._memory, 1) == -1


@pytest.mark.slow
@pytest.mark.parametrize("question", PROMPTS)
def test_a_running_greedy_answer_is_unchanged_by_requests_that_join_and_leave(
    engine: LlamaCppChatRunner, question: str
) -> None:
    """As on the torch runner (test_chat.py): three requests join mid-answer (a short one,
    a sampled one, one cancelled after its first chunk) and the running answer stays token
    for token what it was alone. (With one cache shared by all sequences, 2 of 8 such
    answers changed after 6-15 identical tokens: the strict cell-placement test above.)"""
    request = ask(question)
    story = ask("Tell me a story.", temperature=0.9, seed=5, max_tokens=6)

    async def go() -> tuple[ChatResult, ChatResult, str, ChatResult, ChatResult]:
        alone = await engine.complete(request)
        story_alone = await engine.complete(story)
        stream = engine.stream(request)
        parts = [(await stream.__anext__()).text]
        quick = asyncio.ensure_future(engine.complete(ask("Name a fruit.", max_tokens=2)))
        drawn = asyncio.ensure_future(engine.complete(story))
        doomed = engine.stream(ask("Count to a hundred.", max_tokens=100))
        await doomed.__anext__()
        await doomed.aclose()
        finish = None
        async for chunk in stream:
            parts.append(chunk.text)
            finish = chunk.finish_reason or finish
        await quick
        assert finish == alone.finish_reason
        return alone, story_alone, "".join(parts), await drawn, await engine.complete(request)

    alone, story_alone, crowded, story_crowded, again = asyncio.run(go())
    assert crowded == alone.text
    assert again.text == alone.text  # and after them, in a slot they used
    assert story_crowded.text == story_alone.text  # a seeded draw joining a running answer
