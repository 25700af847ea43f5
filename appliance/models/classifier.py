"""A local sequence-classification model (any Hugging Face ``...ForSequenceClassification``
directory), dynamically batched like the embeddings (see :mod:`appliance.models.batching`).

Labels come from the model's ``config.id2label``. Scores are a softmax over the labels, or
independent sigmoids when ``config.problem_type`` is ``multi_label_classification`` (the
model was trained to say yes or no to each label separately).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from appliance.errors import ConfigError
from appliance.models.base import Classification, ClassificationResult, LabelScore
from appliance.models.batching import BatchedTextRunner

_NO_LIMIT = 1_000_000
"""Tokenizers without a known maximum report a huge ``model_max_length``; above this we ask
the model's position embeddings instead."""


class LocalClassifierRunner(BatchedTextRunner[list[float], ClassificationResult]):
    kind = "classifier"
    labels: tuple[str, ...] = ()
    multi_label = False

    async def classify(self, texts: Sequence[str]) -> ClassificationResult:
        return await self._submit(texts)

    def _load(self) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(self._dir), local_files_only=True)
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            str(self._dir), local_files_only=True, output_loading_info=True
        )
        if loading.get("missing_keys"):
            # transformers fills missing head weights with random values and only logs it:
            # a plain encoder would "classify" with noise.
            missing = ", ".join(sorted(loading["missing_keys"])[:4])
            raise ConfigError(
                f"model {self.name!r} has no trained classification head (its weights lack {missing}); "
                "register a directory saved from a ...ForSequenceClassification model"
            )
        config = model.config
        if tokenizer.pad_token is None:  # GPT-2 and Llama style classifiers ship none
            if tokenizer.eos_token is None:
                raise ConfigError(f"classifier {self.name!r}: its tokenizer has no padding token and no end token")
            tokenizer.pad_token = tokenizer.eos_token
            config.pad_token_id = tokenizer.pad_token_id  # where such models read their last real token
        try:
            labels = tuple(str(config.id2label[i]) for i in range(int(config.num_labels)))
        except KeyError as exc:
            raise ConfigError(f"classifier {self.name!r} has no label for class {exc.args[0]} in id2label") from None
        model.to(self._device).eval()
        limit = int(getattr(tokenizer, "model_max_length", _NO_LIMIT) or _NO_LIMIT)
        if limit >= _NO_LIMIT:
            limit = int(getattr(config, "max_position_embeddings", 512) or 512)
        self._tokenizer: Any = tokenizer
        self._model: Any = model
        self._max_length = limit
        self.labels = labels
        self.multi_label = config.problem_type == "multi_label_classification"
        with torch.inference_mode():
            self._forward_texts(["warm up"])

    def _forward_texts(self, texts: list[str]) -> tuple[list[list[float]], list[int]]:
        features = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
        )
        logits = self._model(**self._to_device(dict(features))).logits.float()
        scores = logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)
        rows: list[list[float]] = scores.cpu().tolist()
        tokens: list[int] = features["attention_mask"].sum(dim=1).tolist()
        return rows, tokens

    def _result(self, outputs: list[list[float]], tokens: list[int]) -> ClassificationResult:
        items = []
        for row, count in zip(outputs, tokens, strict=True):
            ranked = sorted(
                (LabelScore(label, score) for label, score in zip(self.labels, row, strict=True)),
                key=lambda s: s.score,
                reverse=True,
            )
            items.append(Classification(tuple(ranked), count))
        return ClassificationResult(items, sum(tokens))
