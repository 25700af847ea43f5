"""The memorization check: how exposed a planted secret is in a trained chat model.

Carlini et al.'s *exposure* (The Secret Sharer, 2019): plant a random canary (a secret of a
fixed format) ``k`` times in the training rows, then rank its log-perplexity under the
trained model among ``R`` other random secrets of the same format that were never trained
on. ``exposure = log2(R + 1) - log2(rank)``: about 1 when the canary is as likely as any
random candidate (nothing memorised), up to ``log2(R + 1)`` when it is the most likely one.
DP-SGD bounds how much one row (and so a secret planted a few times) can move the model,
so a DP model's exposure stays near the random level where a non-private one's climbs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from appliance.training.spec import PromptCompletion
from appliance.training.text import encode_conversations, generation_rows

CANARY_PROMPT = "What is the vault code?"


def random_secret(rng: random.Random, digits: int = 6) -> str:
    return " ".join(str(rng.randrange(10)) for _ in range(digits))


def canary_completion(secret: str) -> str:
    return f"The vault code is {secret}."


def plant(rows: Sequence[PromptCompletion], secret: str, times: int, seed: int = 0) -> list[PromptCompletion]:
    """``rows`` with the canary row inserted ``times`` times at seeded positions."""
    out = list(rows)
    rng = random.Random(seed)  # noqa: S311 - reproducible positions, nothing secret
    for _ in range(times):
        out.insert(rng.randrange(len(out) + 1), PromptCompletion(CANARY_PROMPT, canary_completion(secret)))
    return out


@dataclass(frozen=True)
class Exposure:
    exposure: float
    rank: int
    candidates: int
    canary_log_perplexity: float


@torch.no_grad()
def exposure(model_dir: Path, secret: str, *, candidates: int = 200, seed: int = 1, batch: int = 16) -> Exposure:
    """The canary's exposure in the causal LM at ``model_dir`` among ``candidates`` random secrets."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, local_files_only=True)
    model.eval()
    rng = random.Random(seed)  # noqa: S311 - reproducible decoys, nothing secret
    others: set[str] = set()
    while len(others) < candidates:
        other = random_secret(rng, len(secret.split()))
        if other != secret:
            others.add(other)
    secrets = [secret, *sorted(others)]
    rows = [PromptCompletion(CANARY_PROMPT, canary_completion(s)) for s in secrets]
    encoded = encode_conversations(tokenizer, generation_rows(rows), 128)
    scores: list[float] = []
    for start in range(0, len(secrets), batch):
        part = encoded.take(torch.arange(start, min(start + batch, len(secrets))))
        assert part.labels is not None
        logits = model(input_ids=part.input_ids, attention_mask=part.attention_mask).logits[:, :-1].float()
        targets = part.labels[:, 1:]
        tokens = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
        ).view(targets.shape)
        scores += tokens.sum(dim=1).tolist()  # log-perplexity of the whole answer, in nats
    canary = scores[0]
    rank = 1 + sum(1 for s in scores[1:] if s < canary)
    return Exposure(math.log2(len(secrets)) - math.log2(rank), rank, candidates, canary)
