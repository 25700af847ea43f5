"""A real (freshly trained) sequence classifier behind the dynamic batcher."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.errors import ConfigError, InvalidInput, Overloaded
from appliance.models.base import ClassificationResult, GenerationTimeout, ModelInput
from appliance.models.classifier import LocalClassifierRunner
from appliance.models.store import minilm_directory

HELD_OUT = [
    ("Refund the double charge on my card", "billing"),
    ("The app shows an error and crashes", "technical"),
    ("Please send me a copy of my invoice", "billing"),
    ("The login page gives me an error", "technical"),
    ("How much will I be charged next month", "billing"),
    ("The program freezes when I click save", "technical"),
]


@pytest.fixture(scope="module")
def seen() -> list[ModelInput]:
    return []


@pytest.fixture(scope="module")
def classifier(support_classifier: Path, seen: list[ModelInput]) -> Iterator[LocalClassifierRunner]:
    runner = LocalClassifierRunner("support-clf", support_classifier, max_batch=8, observer=seen.append)
    runner.warmup()
    yield runner
    runner.close()


@pytest.mark.slow
def test_held_out_sentences_get_the_right_label(classifier: LocalClassifierRunner) -> None:
    result = asyncio.run(classifier.classify([text for text, _ in HELD_OUT]))
    assert [item.label for item in result.items] == [label for _, label in HELD_OUT]
    assert classifier.labels == ("billing", "technical")
    for item in result.items:
        assert item.labels[0].label == item.label
        assert item.score == item.labels[0].score > 0.5
        assert item.labels[0].score >= item.labels[1].score
        assert math.isclose(sum(s.score for s in item.labels), 1.0, abs_tol=1e-5)  # softmax
        assert item.tokens > 3
    assert result.prompt_tokens == sum(item.tokens for item in result.items)


@pytest.mark.slow
def test_concurrent_requests_are_merged_and_each_caller_gets_its_own_answer(
    classifier: LocalClassifierRunner,
) -> None:
    texts = [text for text, _ in HELD_OUT] * 4
    alone = asyncio.run(classifier.classify([texts[3]])).items[0]
    before = classifier.stats

    async def many() -> list[ClassificationResult]:
        return list(await asyncio.gather(*(classifier.classify([t]) for t in texts)))

    results = asyncio.run(many())
    after = classifier.stats
    assert after.forward_passes - before.forward_passes <= len(texts) / 4  # max_batch 8: 3 passes at best
    assert after.max_batch_seen > 1
    assert [r.items[0].label for r in results] == [label for _, label in HELD_OUT] * 4
    assert results[3].items[0].score == pytest.approx(alone.score, abs=1e-5)


@pytest.mark.slow
def test_a_request_larger_than_a_batch_is_split_and_kept_in_order(classifier: LocalClassifierRunner) -> None:
    texts = [text for text, _ in HELD_OUT] * 3  # 18 texts, max_batch 8
    before = classifier.stats.forward_passes
    result = asyncio.run(classifier.classify(texts))
    assert classifier.stats.forward_passes - before >= 3
    assert [item.label for item in result.items] == [label for _, label in HELD_OUT] * 3


@pytest.mark.slow
def test_the_observer_sees_the_texts_classified(classifier: LocalClassifierRunner, seen: list[ModelInput]) -> None:
    seen.clear()
    asyncio.run(classifier.classify(["<PERSON_1> was charged twice"]))
    assert seen == [ModelInput("support-clf", "classifier", ("<PERSON_1> was charged twice",))]


@pytest.mark.slow
def test_a_full_queue_is_overloaded(support_classifier: Path) -> None:
    # The worker lingers a whole second for more work, so the first two requests stay queued.
    runner = LocalClassifierRunner("slow-clf", support_classifier, max_queue=2, max_wait_ms=1000)
    runner.warmup()

    async def three() -> list[ClassificationResult | BaseException]:
        calls = [runner.classify([f"invoice {i}"]) for i in range(3)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    try:
        first, second, third = asyncio.run(three())
    finally:
        runner.close()
    assert isinstance(first, ClassificationResult) and isinstance(second, ClassificationResult)
    assert isinstance(third, Overloaded) and third.status == 429


@pytest.mark.slow
def test_a_call_past_its_time_limit_times_out_and_never_reaches_the_model(support_classifier: Path) -> None:
    runner = LocalClassifierRunner(
        "late-clf", support_classifier, max_wait_ms=300, request_timeout_s=0.05
    )  # lingers longer than callers wait
    runner.warmup()
    try:
        with pytest.raises(GenerationTimeout):
            asyncio.run(runner.classify(["my invoice is wrong"]))
        time.sleep(0.5)  # past the linger: the worker found the abandoned job gone
        assert runner.stats.forward_passes == 0
        assert runner.stats.requests == 1
    finally:
        runner.close()


@pytest.mark.slow
def test_multi_label_models_score_each_label_with_a_sigmoid(
    support_classifier: Path, tmp_path: Path, classifier: LocalClassifierRunner
) -> None:
    multi = tmp_path / "multi"
    shutil.copytree(support_classifier, multi)
    config = json.loads((multi / "config.json").read_text())
    (multi / "config.json").write_text(json.dumps({**config, "problem_type": "multi_label_classification"}))
    runner = LocalClassifierRunner("multi-clf", multi)
    runner.warmup()
    try:
        text = "Refund the double charge on my card"
        sigmoid = asyncio.run(runner.classify([text])).items[0]
        softmax = asyncio.run(classifier.classify([text])).items[0]
    finally:
        runner.close()
    assert runner.multi_label and not classifier.multi_label
    assert sigmoid.label == softmax.label == "billing"
    scores = {s.label: s.score for s in sigmoid.labels}
    assert all(0 < s < 1 for s in scores.values())
    # Same logits, other squashing: the softmax's top score follows from the two sigmoids.
    logit = {label: math.log(p / (1 - p)) for label, p in scores.items()}
    assert softmax.score == pytest.approx(1 / (1 + math.exp(logit["technical"] - logit["billing"])), abs=1e-4)


@pytest.mark.parametrize(
    ("texts", "message"),
    [([], "at least one"), (["fine", 3], "list of strings"), ([None], "list of strings")],
    ids=["empty", "a number", "none"],
)
def test_bad_input_is_refused_before_anything_loads(texts: list[object], message: str) -> None:
    runner = LocalClassifierRunner("never-loaded", Path("/nonexistent"))
    with pytest.raises(InvalidInput, match=message):
        asyncio.run(runner.classify(texts))  # type: ignore[arg-type]


def test_a_directory_without_a_trained_classification_head_is_refused() -> None:
    # The embedding model loads as a classifier only with a randomly initialised head:
    # its scores would mean nothing, so loading stops with the missing weights named.
    runner = LocalClassifierRunner("not-a-classifier", minilm_directory())
    with pytest.raises(ConfigError, match=r"no trained classification head .*classifier\.weight"):
        runner.warmup()
    runner.close()


def _without_pad_token(source: Path, target: Path, *, eos: str | None) -> Path:
    from transformers import AutoTokenizer

    shutil.copytree(source, target)
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    tokenizer.pad_token = None
    if eos is not None:
        tokenizer.eos_token = eos
    tokenizer.save_pretrained(str(target))
    return target


@pytest.mark.slow
def test_a_tokenizer_without_a_pad_token_pads_with_its_end_token(
    support_classifier: Path, tmp_path: Path, classifier: LocalClassifierRunner
) -> None:
    """GPT-2 and Llama style classifiers ship no pad token; batches of unequal texts still work."""
    runner = LocalClassifierRunner("no-pad", _without_pad_token(support_classifier, tmp_path / "no-pad", eos="[SEP]"))
    runner.warmup()
    try:
        texts = [text for text, _ in HELD_OUT]
        assert [i.label for i in asyncio.run(runner.classify(texts)).items] == [label for _, label in HELD_OUT]
    finally:
        runner.close()


def test_a_tokenizer_with_neither_pad_nor_end_token_is_refused(support_classifier: Path, tmp_path: Path) -> None:
    runner = LocalClassifierRunner("no-pad-no-eos", _without_pad_token(support_classifier, tmp_path / "x", eos=None))
    with pytest.raises(ConfigError, match="no padding token"):
        runner.warmup()
    runner.close()
