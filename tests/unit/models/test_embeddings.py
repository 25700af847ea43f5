"""Dynamic batching of MiniLM embeddings, and the base64 wire format."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
from pathlib import Path

import pytest

from appliance.errors import InvalidInput
from appliance.models.base import EmbeddingResult
from appliance.models.embeddings import LocalEmbeddingRunner, decode_base64, encode_base64
from tests.unit.models import support


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.mark.parametrize("vector", [[0.0], [1.0, -2.5, 3.25], [1e-8, 123456.0, -0.0]])
def test_base64_is_float32_little_endian_and_round_trips(vector: list[float]) -> None:
    encoded = encode_base64(vector)
    raw = base64.b64decode(encoded)
    assert raw == struct.pack(f"<{len(vector)}f", *vector)
    assert decode_base64(encoded) == pytest.approx(vector, rel=1e-6)


@pytest.mark.slow
def test_related_sentences_are_closer_than_unrelated_ones(embeddings: LocalEmbeddingRunner) -> None:
    result = asyncio.run(
        embeddings.embed(
            ["The cat sits on the mat.", "A kitten is resting on a rug.", "Quarterly tax filing deadlines"]
        )
    )
    cat, kitten, tax = result.vectors
    assert len(cat) == embeddings.dimensions == 384
    assert cosine(cat, kitten) > cosine(cat, tax) + 0.2
    assert result.prompt_tokens > 10


@pytest.mark.slow
def test_concurrent_requests_are_merged_into_few_forward_passes(embeddings: LocalEmbeddingRunner) -> None:
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(24)]
    alone = asyncio.run(embeddings.embed([texts[5]])).vectors[0]
    before = embeddings.stats

    async def many() -> list[EmbeddingResult]:
        return list(await asyncio.gather(*(embeddings.embed([t]) for t in texts)))

    results = asyncio.run(many())
    after = embeddings.stats
    assert after.forward_passes - before.forward_passes < len(texts) / 4
    assert results[5].vectors[0] == pytest.approx(alone, abs=1e-5)  # each caller gets its own vector back


@pytest.mark.slow
def test_a_request_larger_than_a_batch_is_split_and_kept_in_order(embeddings: LocalEmbeddingRunner) -> None:
    texts = [f"item {i}" for i in range(70)]  # max_batch is 32 here
    result = asyncio.run(embeddings.embed(texts))
    singles = asyncio.run(embeddings.embed([texts[0], texts[69]]))
    assert len(result.vectors) == 70
    assert result.vectors[0] == pytest.approx(singles.vectors[0], abs=1e-5)
    assert result.vectors[69] == pytest.approx(singles.vectors[1], abs=1e-5)


@pytest.mark.slow
def test_the_observer_sees_the_texts_embedded(embeddings: LocalEmbeddingRunner) -> None:
    support.SEEN.clear()
    asyncio.run(embeddings.embed(["PERSON_77 lives here"]))
    assert [s.texts for s in support.SEEN if s.kind == "embedding"] == [("PERSON_77 lives here",)]


def test_empty_input_is_refused() -> None:
    runner = LocalEmbeddingRunner("never-loaded", Path("/nonexistent"))
    with pytest.raises(InvalidInput):
        asyncio.run(runner.embed([]))
