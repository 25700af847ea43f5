"""The ``classifier`` task: a sequence-classification head, and optionally the top encoder
layers, on a BERT-style encoder (the MiniLM the registry serves for embeddings).

What is trained is what is served: the output is a ``BertForSequenceClassification``
directory, and ``/v1/classifications`` runs it through ``AutoModelForSequenceClassification``,
which classifies from the pooler over the [CLS] state. So training uses that same path
(pooler + head over [CLS]), not the mean pooling the embedding endpoint uses.

The frozen lower part of the encoder is a fixed function of the text, so its outputs are
computed once in eval mode and reused every epoch (when they fit in ``FEATURE_CACHE_BYTES``;
otherwise per batch). DP-SGD on the trainable top over those features is exactly DP-SGD on
the whole model with the bottom frozen, at a fraction of the cost.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from appliance.errors import InvalidInput
from appliance.training.spec import Example, TrainingSpec
from appliance.training.tasks import disable_dropout, split_holdout
from appliance.training.text import Encoded, encode_texts, labeled_rows

FEATURE_CACHE_BYTES = 1 << 30
"""Frozen-encoder outputs are cached in memory up to this size (else recomputed per batch)."""

_CHUNK = 64


class ClassifierTop(nn.Module):
    """The trainable part: the top encoder layers (possibly none), the pooler and the head.

    Takes the frozen part's hidden states ``[B, T, H]`` and attention mask ``[B, T]``."""

    def __init__(self, layers: Sequence[nn.Module], pooler: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.pooler = pooler
        self.classifier = classifier

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if len(self.layers):
            additive = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
            for layer in self.layers:
                out = layer(hidden, attention_mask=additive)
                hidden = out[0] if isinstance(out, tuple) else out
        logits: torch.Tensor = self.classifier(self.pooler(hidden))
        return logits


class ClassifierTask:
    autocast = False  # a small head over cached encoder outputs: bf16 would save little

    def __init__(self, spec: TrainingSpec, examples: Sequence[Example], device: torch.device) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        rows = labeled_rows(examples)
        self.labels = tuple(sorted({r.label for r in rows}))
        index = {label: i for i, label in enumerate(self.labels)}
        id2label = dict(enumerate(self.labels))
        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(spec.base_model_dir), local_files_only=True)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call] # the head is missing from the encoder by design: no load report
        try:
            model: Any = AutoModelForSequenceClassification.from_pretrained(
                str(spec.base_model_dir),
                num_labels=len(self.labels),
                id2label=id2label,
                label2id=index,
                local_files_only=True,
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        encoder = getattr(model, "base_model", None)
        layers = getattr(getattr(encoder, "encoder", None), "layer", None)
        pooler = getattr(encoder, "pooler", None)
        classifier = getattr(model, "classifier", None)
        if not isinstance(layers, nn.ModuleList) or pooler is None or not isinstance(classifier, nn.Linear):
            raise InvalidInput("classifier training needs a BERT-style encoder (encoder layers, a pooler and a head)")
        if spec.train_top_layers > len(layers):
            raise InvalidInput(f"training.train_top_layers is {spec.train_top_layers}; the encoder has {len(layers)}")
        with torch.no_grad():  # a zero head starts from uniform predictions: DP noise then has less to undo
            classifier.weight.zero_()
            classifier.bias.zero_()
        model.config.problem_type = "single_label_classification"
        model.requires_grad_(False)
        disable_dropout(model)
        self._model = model.to(device)
        self._device = device
        self._frozen = len(layers) - spec.train_top_layers
        self.module: nn.Module = ClassifierTop(list(layers[self._frozen :]), pooler, classifier)
        self.module.requires_grad_(True)

        encoded = encode_texts(self._tokenizer, [r.text for r in rows], spec.max_seq_len)
        targets = torch.tensor([index[r.label] for r in rows], dtype=torch.long)
        train_idx, held_idx = split_holdout(len(rows), spec.holdout_fraction, spec.seed)
        self._train, self._train_y = encoded.take(train_idx), targets[train_idx]
        self._held, self._held_y = encoded.take(held_idx), targets[held_idx]
        self.n_train = len(train_idx)
        self.n_holdout = len(held_idx)
        self._cache = self._features(self._train) if self._fits(self._train) else None

    def _fits(self, encoded: Encoded) -> bool:
        hidden = int(self._model.config.hidden_size)
        width = 1 if self._frozen == len(self._layers) else int(encoded.input_ids.shape[1])
        return len(encoded) * width * hidden * 4 <= FEATURE_CACHE_BYTES

    @property
    def _layers(self) -> nn.ModuleList:
        layers: nn.ModuleList = self._model.base_model.encoder.layer
        return layers

    @contextlib.contextmanager
    def _bottom_only(self) -> Iterator[None]:
        """The encoder with only its frozen layers (the top ones run in ``ClassifierTop``)."""
        encoder = self._model.base_model.encoder
        full = encoder.layer
        encoder.layer = nn.ModuleList(list(full[: self._frozen]))
        try:
            yield
        finally:
            encoder.layer = full

    @torch.no_grad()
    def _features(self, encoded: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen part's output for ``encoded`` rows: hidden states (only [CLS] when no
        encoder layer is trained) and the matching mask."""
        self._model.eval()
        hidden_parts, mask_parts = [], []
        head_only = self._frozen == len(self._layers)
        with self._bottom_only():
            for start in range(0, len(encoded), _CHUNK):
                part = encoded.take(torch.arange(start, min(start + _CHUNK, len(encoded))))
                inputs = {"input_ids": part.input_ids, "attention_mask": part.attention_mask}
                if part.token_type_ids is not None:
                    inputs["token_type_ids"] = part.token_type_ids
                out = self._model.base_model(**{k: v.to(self._device) for k, v in inputs.items()})
                hidden = out.last_hidden_state
                mask = part.attention_mask.to(self._device)
                if head_only:
                    hidden, mask = hidden[:, :1], mask[:, :1]
                width = hidden.shape[1] if head_only else int(encoded.input_ids.shape[1])
                hidden_parts.append(nn.functional.pad(hidden, (0, 0, 0, width - hidden.shape[1])))
                mask_parts.append(nn.functional.pad(mask, (0, width - mask.shape[1])))
        if not hidden_parts:
            return torch.zeros((0, 1, 1), device=self._device), torch.zeros((0, 1), device=self._device)
        return torch.cat(hidden_parts), torch.cat(mask_parts)

    def _batch(self, encoded: Encoded, cache: tuple[torch.Tensor, torch.Tensor] | None, indices: torch.Tensor) -> Any:
        if cache is not None:
            hidden, mask = cache[0][indices.to(cache[0].device)], cache[1][indices.to(cache[1].device)]
            width = max(1, int(mask.sum(dim=1).max().item())) if len(indices) else 1
            return hidden[:, :width], mask[:, :width]
        return self._features(encoded.take(indices))

    def logits(self, module: nn.Module, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        hidden, mask = self._batch(self._train, self._cache, indices)
        return module(hidden, mask), self._train_y[indices].to(self._device), None

    @torch.no_grad()
    def predict(self, encoded: Encoded) -> torch.Tensor:
        hidden, mask = self._features(encoded)
        out: list[torch.Tensor] = []
        for start in range(0, len(encoded), _CHUNK):
            out.append(self.module(hidden[start : start + _CHUNK], mask[start : start + _CHUNK]).float().cpu())
        return torch.cat(out) if out else torch.zeros((0, len(self.labels)))

    def evaluate(self) -> dict[str, float]:
        if not self.n_holdout:
            return {}
        logits = self.predict(self._held)
        loss = float(nn.functional.cross_entropy(logits, self._held_y).item())
        accuracy = float((logits.argmax(dim=1) == self._held_y).float().mean().item())
        return {"holdout_accuracy": accuracy, "holdout_loss": loss if math.isfinite(loss) else float("nan")}

    def save(self, output_dir: Path) -> None:
        self._model.save_pretrained(str(output_dir))
        self._tokenizer.save_pretrained(str(output_dir))
