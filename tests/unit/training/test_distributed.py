"""Two processes with gloo on the CPU: Opacus DPDDP through PyTorch's elastic launcher."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import torch
from opacus.accountants import RDPAccountant

from appliance.models.store import is_hf_directory
from appliance.training import Progress, TrainingSpec, train
from tests.unit.training.support import labeled

SECRET = 0x2F0A_5EC2_E7D1_44B3  # tests only; looked for in everything the run printed or logged


class Sink:
    def __init__(self) -> None:
        self.saved: list[tuple[int, bytes]] = []

    def save(self, step: int, state: bytes) -> None:
        self.saved.append((step, state))


@pytest.mark.slow
def test_two_processes_train_one_model_whose_epsilon_matches_the_single_process_accounting(
    tiny_bert_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    spec = TrainingSpec(
        task="classifier", base_model_dir=tiny_bert_dir, target_epsilon=4.0, delta=1e-3, epochs=1, batch_size=8,
        max_seq_len=16, holdout_fraction=0.2, dp_mode="hooks", device="cpu", gpus=2, checkpoint_every_steps=2,
    )  # fmt: skip
    seen: list[Progress] = []
    sink = Sink()
    caplog.set_level(logging.DEBUG)
    result = train(spec, labeled(40), tmp_path / "m", on_progress=seen.append, checkpoints=sink, secret=SECRET)
    card = result.card
    assert card.gpus == 2 and card.steps == 4
    accountant = RDPAccountant()
    for _ in range(card.steps):
        accountant.step(noise_multiplier=card.noise_multiplier, sample_rate=card.sample_rate)
    assert card.epsilon == pytest.approx(accountant.get_epsilon(delta=spec.delta), rel=1e-12)
    assert [p.step for p in seen] == [0, 1, 2, 3, 4]
    assert is_hf_directory(result.output_dir)

    # The ranks got the run's secret in-process (rank 0 wrote it into its checkpoint), and it
    # shows nowhere the launcher or the ranks print or log, nor on the card.
    assert [step for step, _ in sink.saved] == [2]
    assert torch.load(io.BytesIO(sink.saved[0][1]), weights_only=True)["secret"] == SECRET
    out, err = capfd.readouterr()
    shown = out + err + caplog.text + repr(card.to_dict())
    assert caplog.records  # the launcher did log (its configuration)
    for needle in (str(SECRET), f"{SECRET:x}", f"{SECRET:X}"):
        assert needle not in shown
