"""The memorization check's arithmetic, on the tiny Llama (the figures come from bench/dp.py)."""

from __future__ import annotations

import math
import random
from pathlib import Path

from appliance.training.canary import CANARY_PROMPT, exposure, plant, random_secret
from tests.unit.training.support import generation


def test_the_canary_is_planted_the_asked_number_of_times_among_the_rows() -> None:
    rows = generation(10)
    planted = plant(rows, "1 2 3", 3)
    assert len(planted) == 13
    assert sum(r.prompt == CANARY_PROMPT and r.completion.endswith("1 2 3.") for r in planted) == 3


def test_exposure_is_the_log_rank_of_the_canary_among_random_secrets(tiny_llama_dir: Path) -> None:
    secret = random_secret(random.Random(0))
    found = exposure(tiny_llama_dir, secret, candidates=15, batch=16)
    assert 1 <= found.rank <= 16
    assert found.exposure == math.log2(16) - math.log2(found.rank)
    assert found.canary_log_perplexity > 0
