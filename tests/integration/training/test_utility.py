"""A small, seeded utility regression: on a separable synthetic task, a DP classifier at a
generous epsilon keeps at least 90% of the non-private accuracy (the bench's utility section
measures the real table; this guards against a change that quietly ruins DP training, such as
noise or clipping gone wrong). About 20 s on one core with the real MiniLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.models.store import minilm_directory
from appliance.training import TrainingSpec, train
from tests.unit.training.support import labeled

ROWS = labeled(300, seed=1)


def _accuracy(dp_mode: str, out: Path) -> tuple[float, float, float]:
    spec = TrainingSpec(
        task="classifier", base_model_dir=minilm_directory(), target_epsilon=8.0, delta=1 / (2 * len(ROWS)),
        epochs=4, batch_size=64, learning_rate=0.05, max_seq_len=16, holdout_fraction=0.3, dp_mode=dp_mode,
        device="cpu", seed=0,
    )  # fmt: skip
    card = train(spec, ROWS, out, secret=7).card  # a fixed secret: the same figures every run
    return card.metrics["holdout_accuracy"], card.epsilon, card.noise_multiplier


@pytest.mark.slow
def test_dp_at_epsilon_8_keeps_at_least_90_percent_of_the_non_private_accuracy(tmp_path: Path) -> None:
    plain, _, _ = _accuracy("off", tmp_path / "plain")
    private, epsilon, noise = _accuracy("auto", tmp_path / "private")
    assert plain > 0.9  # the task is learnable, so the ratio means something
    assert epsilon <= 8.0 + 1e-6 and noise > 0.5  # it really was private
    assert private >= 0.9 * plain
