"""Two processes with gloo on the CPU: Opacus DPDDP through PyTorch's elastic launcher."""

from __future__ import annotations

from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant

from appliance.models.store import is_hf_directory
from appliance.training import Progress, TrainingSpec, train
from tests.unit.training.support import labeled


@pytest.mark.slow
def test_two_processes_train_one_model_whose_epsilon_matches_the_single_process_accounting(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    spec = TrainingSpec(
        task="classifier", base_model_dir=tiny_bert_dir, target_epsilon=4.0, delta=1e-3, epochs=1, batch_size=8,
        max_seq_len=16, holdout_fraction=0.2, dp_mode="hooks", device="cpu", gpus=2,
    )  # fmt: skip
    seen: list[Progress] = []
    result = train(spec, labeled(40), tmp_path / "m", on_progress=seen.append)
    card = result.card
    assert card.gpus == 2 and card.steps == 4
    accountant = RDPAccountant()
    for _ in range(card.steps):
        accountant.step(noise_multiplier=card.noise_multiplier, sample_rate=card.sample_rate)
    assert card.epsilon == pytest.approx(accountant.get_epsilon(delta=spec.delta), rel=1e-12)
    assert [p.step for p in seen] == [0, 1, 2, 3, 4]
    assert is_hf_directory(result.output_dir)
