"""The batched chat runner on the real SmolLM2 (greedy unless a test says otherwise)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.errors import InvalidInput, Overloaded
from appliance.models.base import ChatChunk, ChatMessage, ChatRequest, ChatResult, GenerationTimeout
from appliance.models.chat import (
    CAPTURE_OPTIONS,
    SAMPLING_MODES,
    LocalChatRunner,
    _stop_holdback,
    batch_bucket,
    graph_plan,
)
from tests.unit.models import support

FRANCE = "What is the capital of France?"


def ask(text: str, **kw: object) -> ChatRequest:
    kw.setdefault("temperature", 0.0)
    kw.setdefault("max_tokens", 24)
    return ChatRequest([ChatMessage("user", text)], **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "stops", "held"),
    [
        ("Hello wor", ["world"], 3),
        ("Hello", ["world"], 0),
        ("a <|", ["<|end|>", "zz"], 2),
        ("abc", [], 0),
    ],
)
def test_text_that_may_start_a_stop_string_is_held_back(text: str, stops: list[str], held: int) -> None:
    assert _stop_holdback(text, stops) == held


@pytest.mark.parametrize(
    "request_",
    [
        ChatRequest([]),
        ask("hi", max_tokens=0),
        ask("hi", temperature=3.0),
        ask("hi", top_p=0.0),
        ask("hi", stop=["a", "b", "c", "d", "e"]),
        ask("hi", stop=[""]),
    ],
)
def test_when_request_is_invalid_then_it_is_refused_before_queueing(request_: ChatRequest) -> None:
    runner = LocalChatRunner("never-loaded", Path("/nonexistent"))
    with pytest.raises(InvalidInput):
        asyncio.run(runner.complete(request_))


@pytest.mark.slow
def test_smollm2_knows_the_capital_of_france(chat: LocalChatRunner) -> None:
    result = asyncio.run(chat.complete(ask(FRANCE)))
    assert "Paris" in result.text
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens > 10
    assert 0 < result.usage.completion_tokens < 24


@pytest.mark.slow
def test_the_observer_sees_exactly_the_templated_prompt(chat: LocalChatRunner) -> None:
    support.SEEN.clear()
    request = ask("Repeat after me: token PERSON_1a2b", max_tokens=2)
    asyncio.run(chat.complete(request))
    seen = [s for s in support.SEEN if s.kind == "chat"]
    assert len(seen) == 1
    assert seen[0].texts == (chat.render(request),)
    assert "PERSON_1a2b" in seen[0].texts[0]
    assert "<|im_start|>user" in seen[0].texts[0]


@pytest.mark.slow
def test_streamed_deltas_join_to_the_unstreamed_text_for_the_same_seed(chat: LocalChatRunner) -> None:
    request = ask("Write one sentence about the sea.", temperature=0.9, top_p=0.9, seed=1234, max_tokens=20)

    async def both() -> tuple[list[ChatChunk], str]:
        chunks = [c async for c in chat.stream(request)]
        whole = await chat.complete(request)
        return chunks, whole.text

    chunks, whole = asyncio.run(both())
    assert "".join(c.text for c in chunks) == whole
    assert len([c for c in chunks if c.text]) > 3
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert chunks[-1].finish_reason in ("stop", "length")
    assert chunks[-1].usage is not None


@pytest.mark.slow
def test_a_stop_string_ends_the_answer_before_it_and_is_never_streamed(chat: LocalChatRunner) -> None:
    async def go() -> list[ChatChunk]:
        return [c async for c in chat.stream(ask(FRANCE, stop=["Paris"]))]

    chunks = asyncio.run(go())
    text = "".join(c.text for c in chunks)
    assert "Paris" not in text
    assert text.startswith("The capital of France")
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.slow
def test_max_tokens_ends_with_finish_reason_length(chat: LocalChatRunner) -> None:
    result = asyncio.run(chat.complete(ask("Tell me a long story about a dragon.", max_tokens=3)))
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 3


@pytest.mark.slow
def test_concurrent_requests_share_forward_passes_and_answer_as_if_alone(chat: LocalChatRunner) -> None:
    questions = [FRANCE, "Name three colors.", "What is 2+2?", "Write a haiku about rain."]
    alone = asyncio.run(chat.complete(ask(FRANCE)))
    before = chat.stats

    async def together() -> list[ChatResult]:
        return list(await asyncio.gather(*(chat.complete(ask(q, max_tokens=16)) for q in questions)))

    results = asyncio.run(together())
    tokens = sum(r.usage.completion_tokens for r in results)
    after = chat.stats
    passes = after.forward_passes - before.forward_passes
    # One request at a time needs one forward pass per generated token.
    assert passes < tokens
    assert after.max_batch_seen >= 2
    assert results[0].text == alone.text  # left padding and cache merging do not change the answer


@pytest.mark.slow
def test_a_request_joins_a_running_batch_between_steps(chat: LocalChatRunner) -> None:
    async def go() -> tuple[float, float]:
        long = chat.stream(ask("Count slowly from one to fifty in words.", max_tokens=48))
        await long.__anext__()  # the long request is decoding now
        started = time.monotonic()
        short = await chat.complete(ask(FRANCE, max_tokens=8))
        short_done = time.monotonic() - started
        async for chunk in long:
            if chunk.finish_reason:
                break
        long_done = time.monotonic() - started
        assert short.text
        return short_done, long_done

    before = chat.stats
    short_done, long_done = asyncio.run(go())
    after = chat.stats
    assert short_done < long_done  # it did not wait for the long one to drain
    grew = {k: v - before.batch_sizes.get(k, 0) for k, v in after.batch_sizes.items()}
    assert grew.get(2, 0) > 0  # some decode steps ran both sequences in one pass


@pytest.fixture(scope="module")
def tiny(request: pytest.FixtureRequest) -> Iterator[LocalChatRunner]:
    """One slot and one waiting place: the edges of the queue are easy to reach."""
    runner = LocalChatRunner(
        "smollm2-tiny-queue", support.smollm2_dir(support.store_root(request.config)), max_batch=1, max_queue=1
    )
    runner.warmup()
    yield runner
    runner.close()


@pytest.mark.slow
def test_when_the_queue_is_full_the_next_request_is_overloaded_with_retry_after(tiny: LocalChatRunner) -> None:
    async def go() -> Overloaded:
        running = tiny.stream(ask("Tell me a long story.", max_tokens=200))
        await running.__anext__()
        waiting = asyncio.ensure_future(tiny.complete(ask(FRANCE, max_tokens=4)))
        while tiny.queued == 0:
            await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as caught:
            await tiny.complete(ask(FRANCE, max_tokens=4))
        await running.aclose()  # frees the slot, so the waiting one runs
        result = await asyncio.wait_for(waiting, timeout=30)
        assert result.text
        return caught.value

    err = asyncio.run(go())
    assert err.status == 429
    assert err.retry_after_s >= 1


@pytest.mark.slow
def test_a_client_that_goes_away_stops_its_generation_and_frees_its_slot(tiny: LocalChatRunner) -> None:
    async def go() -> float:
        task = asyncio.ensure_future(tiny.complete(ask("Tell me a very long story.", max_tokens=400)))
        while tiny.stats.decode_steps == before.decode_steps:
            await asyncio.sleep(0.01)
        task.cancel()  # what a disconnecting HTTP client does to its handler
        with pytest.raises(asyncio.CancelledError):
            await task
        started = time.monotonic()
        await tiny.complete(ask(FRANCE, max_tokens=8))
        return time.monotonic() - started

    before = tiny.stats
    waited = asyncio.run(go())
    generated = tiny.stats.completion_tokens - before.completion_tokens
    assert generated <= 8  # only the second request's tokens were ever completed
    assert waited < 15  # 400 tokens would take far longer than 8


@pytest.mark.slow
def test_a_request_past_its_timeout_fails_with_a_timeout(tiny: LocalChatRunner) -> None:
    with pytest.raises(GenerationTimeout) as caught:
        asyncio.run(tiny.complete(ask("Tell me a very long story.", max_tokens=400, timeout_s=0.5)))
    assert caught.value.status == 503


# ---------------------------------------------------------------- the decode loop


def _generate_reference(model_dir: Path, question: str, tokens: int) -> tuple[str, int]:
    """transformers ``generate()`` on the same weights, greedy: the text and how many tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :].tolist()  # an end token counts, as the runner counts it
    return tokenizer.decode(new, skip_special_tokens=True), len(new)


@pytest.mark.slow
def test_greedy_output_is_token_for_token_what_generate_produces(
    chat: LocalChatRunner, request: pytest.FixtureRequest
) -> None:
    questions = ["Name three colors.", "Write a haiku about rain."]

    async def together() -> list[ChatResult]:
        return list(await asyncio.gather(*(chat.complete(ask(q, max_tokens=12)) for q in questions)))

    results = asyncio.run(together())  # batched: right-padded prefill, slot cache, batched sampling
    model_dir = support.smollm2_dir(support.store_root(request.config))
    for question, result in zip(questions, results, strict=True):
        text, count = _generate_reference(model_dir, question, 12)
        assert result.text == text
        assert result.usage.completion_tokens == count


def sampled(text: str, seed: int, **kw: object) -> ChatRequest:
    kw.setdefault("max_tokens", 10)
    return ask(text, temperature=0.8, top_p=0.9, seed=seed, **kw)


@pytest.mark.slow
def test_seeded_sampling_repeats_alone_and_in_any_batch(chat: LocalChatRunner) -> None:
    request = sampled("Write one sentence about the sea.", seed=42)

    async def go() -> tuple[str, list[ChatResult], str]:
        alone = (await chat.complete(request)).text
        crowd = await asyncio.gather(
            chat.complete(sampled("Tell me about bread.", seed=1)),
            chat.complete(request),
            chat.complete(ask("Name a fruit.")),
        )
        other = (await chat.complete(sampled("Write one sentence about the sea.", seed=43))).text
        return alone, list(crowd), other

    alone, crowd, other = asyncio.run(go())
    assert crowd[1].text == alone  # the same draw whichever rows share the batch
    assert other != alone  # and the seed matters


@pytest.mark.slow
def test_requests_joining_and_leaving_do_not_disturb_a_running_one(chat: LocalChatRunner) -> None:
    long = ask("Describe a busy market in the morning.", max_tokens=20)

    async def go() -> tuple[str, str]:
        alone = (await chat.complete(long)).text
        stream = chat.stream(long)
        parts = [(await stream.__anext__()).text]
        # Others join mid-way, one sampled, one cancelled after a few tokens, one finishing quickly.
        quick = asyncio.ensure_future(chat.complete(ask(FRANCE, max_tokens=2)))
        drawn = asyncio.ensure_future(chat.complete(sampled("Tell me a story.", seed=5, max_tokens=4)))
        doomed = chat.stream(ask("Count to a hundred.", max_tokens=100))
        await doomed.__anext__()
        await doomed.aclose()
        async for chunk in stream:
            parts.append(chunk.text)
        await asyncio.gather(quick, drawn)
        return alone, "".join(parts)

    alone, crowded = asyncio.run(go())
    assert crowded == alone


@pytest.mark.slow
def test_when_cuda_graphs_cannot_be_captured_the_runner_decodes_eagerly(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    runner = LocalChatRunner(
        "graphs-on-cpu", support.smollm2_dir(support.store_root(request.config)), max_batch=2, cuda_graphs=True
    )
    try:
        with caplog.at_level("WARNING"):
            result = asyncio.run(runner.complete(ask(FRANCE, max_tokens=7)))
        assert "Paris" in result.text
        assert "CUDA graph capture failed" in caplog.text
    finally:
        runner.close()


# ---------------------------------------------------------------- CUDA graph planning (no CUDA needed)


@pytest.mark.parametrize("max_batch", [1, 3, 8, 64, 100, 256])
def test_the_graphs_captured_at_load_cover_every_decode_step(max_batch: int) -> None:
    plan = graph_plan(max_batch)
    assert len(plan) == len(set(plan))
    for rows in range(1, max_batch + 1):
        bucket = batch_bucket(rows, max_batch)
        assert rows <= bucket <= max_batch
        assert all((bucket, mode) in plan for mode in SAMPLING_MODES)


def test_graphs_are_captured_in_thread_local_mode_so_other_threads_cuda_work_cannot_break_them() -> None:
    import torch

    assert CAPTURE_OPTIONS == {"capture_error_mode": "thread_local"}
    accepted = inspect.signature(torch.cuda.graph.__init__).parameters
    assert set(CAPTURE_OPTIONS) <= set(accepted)


@pytest.mark.slow
def test_graphs_are_planned_at_load_and_a_failed_capture_leaves_the_runner_eager(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    runner = LocalChatRunner(
        "graphs-at-load", support.smollm2_dir(support.store_root(request.config)), max_batch=2, cuda_graphs=True
    )
    try:
        with caplog.at_level("WARNING"):
            runner.warmup()  # the capture is tried here, at load, not by the first request
        assert "CUDA graph capture failed" in caplog.text
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert "Paris" in asyncio.run(runner.complete(ask(FRANCE, max_tokens=7))).text
        assert "CUDA graph capture failed" not in caplog.text
    finally:
        runner.close()
