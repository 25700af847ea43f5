"""A local sentence-embedding model, dynamically batched (see :mod:`appliance.models.batching`)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from appliance.models.base import EmbeddingResult
from appliance.models.batching import BatchedTextRunner


def encode_base64(vector: Sequence[float]) -> str:
    """OpenAI's ``encoding_format: base64``: float32 little-endian bytes, base64-encoded."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_base64(data: str) -> list[float]:
    return [float(x) for x in np.frombuffer(base64.b64decode(data), dtype="<f4")]


class LocalEmbeddingRunner(BatchedTextRunner[list[float], EmbeddingResult]):
    kind = "embedding"
    dimensions = 0

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        return await self._submit(texts)

    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(self._dir), device=self._device, local_files_only=True)
        model.eval()
        self.dimensions = int(model.get_embedding_dimension() or 0)
        with torch.inference_mode():
            model(self._to_device(model.preprocess(["warm up"])))
        self._model: Any = model

    def _forward_texts(self, texts: list[str]) -> tuple[list[list[float]], list[int]]:
        features = self._to_device(self._model.preprocess(texts))
        vectors: list[list[float]] = self._model(features)["sentence_embedding"].float().cpu().tolist()
        return vectors, features["attention_mask"].sum(dim=1).tolist()

    def _result(self, outputs: list[list[float]], tokens: list[int]) -> EmbeddingResult:
        return EmbeddingResult(outputs, sum(tokens))
