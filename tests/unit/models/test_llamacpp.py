"""The llama.cpp engine on the packaged SmolLM2 GGUF: batched sequences in one llama_decode.

These tests need the optional ``llamacpp`` extra, which ``scripts/test`` installs; without
it they are skipped with a reason that says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.models import llamacpp
from appliance.models.base import ChatChunk, ChatMessage, ChatRequest, ChatResult, ModelInput
from appliance.models.llamacpp import LlamaCppChatRunner
from appliance.models.store import PACKAGE_SCHEME, SMOLLM2_PACKAGE, ModelStore
from tests.unit.models import support

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
    """(Unlike the torch runner's, llama.cpp's numbers may move in the last bits with the
    batch around a sequence, so a seeded answer is repeatable when run the same way.)"""
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
