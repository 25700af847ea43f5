"""The engine on tiny real models: accounting, progress, cancel, checkpoint/resume, modes."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from safetensors.torch import load_file

from appliance.errors import ConfigError, InvalidInput
from appliance.models.classifier import LocalClassifierRunner
from appliance.training import (
    LabeledText,
    Progress,
    PromptCompletion,
    TrainingCancelled,
    TrainingSpec,
    epsilon_of,
    train,
)
from appliance.training.accounting import quiet_order_warning
from tests.unit.training.support import labeled

ROWS = labeled(60)
SECRET = 0x5EC2E7  # tests only: fixes the run's secret where two runs must draw the same batches and noise


def spec_for(model: Path, **overrides: Any) -> TrainingSpec:
    base: dict[str, Any] = {
        "task": "classifier",
        "base_model_dir": model,
        "target_epsilon": 4.0,
        "delta": 1e-3,
        "epochs": 2,
        "batch_size": 8,
        "learning_rate": 1e-2,
        "max_seq_len": 16,
        "holdout_fraction": 0.2,
        "dp_mode": "hooks",
        "device": "cpu",
    }
    return TrainingSpec(**{**base, **overrides})


class Sink:
    def __init__(self) -> None:
        self.saved: list[tuple[int, bytes]] = []

    def save(self, step: int, state: bytes) -> None:
        self.saved.append((step, state))


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


@pytest.fixture(scope="module")
def finished(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted run, checkpointing every 3 steps, shared by several tests."""
    seen: list[Progress] = []
    sink = Sink()
    out = tmp_path_factory.mktemp("finished") / "model"
    result = train(
        spec_for(tiny_bert_dir, checkpoint_every_steps=3), ROWS, out, on_progress=seen.append, checkpoints=sink
    )
    return {"result": result, "progress": seen, "sink": sink}


def test_the_reported_epsilon_is_what_an_opacus_accountant_says_for_the_steps_that_ran(
    finished: dict[str, Any],
) -> None:
    card = finished["result"].card
    accountant = RDPAccountant()
    for _ in range(card.steps):
        accountant.step(noise_multiplier=card.noise_multiplier, sample_rate=card.sample_rate)
    assert card.epsilon == pytest.approx(accountant.get_epsilon(delta=card.delta), rel=1e-12)
    assert card.epsilon <= card.target_epsilon + 0.01
    assert card.epsilon > 0.9 * card.target_epsilon  # the noise was chosen for exactly these steps
    assert finished["result"].history == ((card.noise_multiplier, card.sample_rate, card.steps),)
    with quiet_order_warning():  # the noise make_private_with_epsilon would have chosen for this loader
        chosen = get_noise_multiplier(
            target_epsilon=4.0, target_delta=1e-3, sample_rate=card.sample_rate, epochs=2, accountant="rdp"
        )
    assert card.noise_multiplier == chosen


def test_the_card_says_how_the_model_was_made(finished: dict[str, Any]) -> None:
    card = finished["result"].card
    assert (card.task, card.dp_mode, card.accountant, card.device, card.gpus) == (
        "classifier",
        "hooks",
        "rdp",
        "cpu",
        1,
    )
    assert card.steps == 2 * math.ceil(card.train_examples / 8)
    assert card.sample_rate == 1 / math.ceil(card.train_examples / 8)
    assert (card.train_examples, card.holdout_examples) == (48, 12)
    assert set(card.metrics) >= {"holdout_accuracy", "holdout_loss", "train_loss"}
    assert card.labels == ("billing", "shipping", "technical")
    assert {"torch", "opacus", "transformers"} <= set(card.library_versions)


def test_progress_comes_at_the_start_and_after_every_step_with_growing_epsilon(finished: dict[str, Any]) -> None:
    seen: list[Progress] = finished["progress"]
    card = finished["result"].card
    assert [p.step for p in seen] == list(range(card.steps + 1))
    assert all(p.total_steps == card.steps for p in seen)
    assert seen[0].epsilon_spent == 0 and seen[0].loss is None
    epsilons = [p.epsilon_spent for p in seen]
    assert epsilons == sorted(epsilons)
    assert seen[-1].epsilon_spent == pytest.approx(card.epsilon)
    assert seen[-1].eta_s == 0


def test_the_output_loads_in_the_served_classifier_runner_with_the_labels(finished: dict[str, Any]) -> None:
    runner = LocalClassifierRunner("tiny", finished["result"].output_dir, max_batch=4)
    try:
        runner.warmup()
        result = asyncio.run(runner.classify(["my refund has a charge issue"]))
        assert {s.label for s in result.items[0].labels} == {"billing", "shipping", "technical"}
    finally:
        runner.close()


def test_a_run_resumed_from_a_checkpoint_ends_exactly_like_the_uninterrupted_one(
    finished: dict[str, Any], tiny_bert_dir: Path, tmp_path: Path
) -> None:
    sink: Sink = finished["sink"]
    assert [step for step, _ in sink.saved] == [3, 6, 9]
    step, state = sink.saved[1]
    seen: list[Progress] = []
    # The run drew its own secret; only the checkpoint knows it, and the rest of the run
    # (batches, noise) can be drawn again exactly only from there.
    resumed = train(
        spec_for(tiny_bert_dir, checkpoint_every_steps=3), ROWS, tmp_path / "m", resume=state, on_progress=seen.append
    )
    whole = finished["result"]
    assert seen[0].step == step
    assert resumed.card.epsilon == whole.card.epsilon
    assert resumed.history == whole.history
    ours, theirs = weights(resumed.output_dir), weights(whole.output_dir)
    for name in ("classifier.weight", "bert.pooler.dense.weight"):
        torch.testing.assert_close(ours[name], theirs[name])


def test_a_checkpoint_of_another_dataset_is_refused(
    finished: dict[str, Any], tiny_bert_dir: Path, tmp_path: Path
) -> None:
    _, state = finished["sink"].saved[0]
    with pytest.raises(InvalidInput, match="another run"):
        train(spec_for(tiny_bert_dir), labeled(60, seed=1), tmp_path / "m", resume=state)
    with pytest.raises(InvalidInput, match="cannot be read"):
        train(spec_for(tiny_bert_dir), ROWS, tmp_path / "m", resume=b"not a checkpoint")


def test_a_cancelled_run_reports_the_epsilon_its_steps_spent_and_writes_nothing(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    steps = 0

    def count(p: Progress) -> None:
        nonlocal steps
        steps = p.step

    with pytest.raises(TrainingCancelled) as caught:
        train(spec_for(tiny_bert_dir), ROWS, tmp_path / "m", on_progress=count, should_stop=lambda: steps >= 4)
    cancelled = caught.value
    assert cancelled.steps == 4
    sigma, q, ran = cancelled.history[0]
    assert ran == 4
    assert cancelled.epsilon_spent == pytest.approx(epsilon_of([(sigma, q, 4)], 1e-3))
    assert 0 < cancelled.epsilon_spent < 4.0
    assert not (tmp_path / "m").exists()


def test_hooks_and_ghost_clipping_train_the_same_model_from_the_same_secret(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    spec = spec_for(tiny_bert_dir, train_top_layers=1, epochs=1)
    hooks = train(spec, ROWS, tmp_path / "hooks", secret=SECRET)
    ghost = train(replace(spec, dp_mode="ghost"), ROWS, tmp_path / "ghost", secret=SECRET)
    assert ghost.card.dp_mode == "ghost"
    assert ghost.card.epsilon == hooks.card.epsilon
    ours, theirs = weights(ghost.output_dir), weights(hooks.output_dir)
    base = load_file(str(tiny_bert_dir / "model.safetensors"))
    top = "bert.encoder.layer.1.attention.self.query.weight"
    assert not torch.allclose(ours[top], base["encoder.layer.1.attention.self.query.weight"])
    for name in ("classifier.weight", top):
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_empty_poisson_batches_still_take_a_noisy_step_that_the_accountant_counts(
    mode: str, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    rows = ROWS[:20]  # batch 1 of 20: about a third of the steps draw no example at all
    result = train(
        spec_for(tiny_bert_dir, batch_size=1, epochs=1, holdout_fraction=0, dp_mode=mode), rows, tmp_path / "m"
    )
    assert result.card.steps == 20
    assert result.history == ((result.card.noise_multiplier, 1 / 20, 20),)


def test_without_dp_the_card_says_so(tiny_bert_dir: Path, tmp_path: Path) -> None:
    result = train(spec_for(tiny_bert_dir, dp_mode="off", epochs=1), ROWS, tmp_path / "m")
    assert result.card.epsilon == math.inf and result.history == ()
    assert result.card.to_dict()["epsilon"] == "inf"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([LabeledText("a", "x")] * 10, "at least two different labels"),
        ([PromptCompletion("a", "b")] * 10, r"\(text, label\) rows only"),
        ([], "at least one example"),
    ],
)
def test_examples_that_do_not_fit_the_task_are_refused(
    rows: list[Any], message: str, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match=message):
        train(spec_for(tiny_bert_dir), rows, tmp_path / "m")


def test_a_non_empty_output_directory_is_refused(tiny_bert_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("x")
    with pytest.raises(InvalidInput, match="absent or empty"):
        train(spec_for(tiny_bert_dir), ROWS, tmp_path / "m")


def test_secure_mode_without_its_random_generator_package_is_a_clear_configuration_error(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch", reason="always present")
    try:
        import torchcsprng  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="secure_mode"):
            train(spec_for(tiny_bert_dir, secure_mode=True), ROWS, tmp_path / "m")
    else:
        pytest.skip("torchcsprng is installed here")


def test_each_epoch_runs_one_step_per_batch_of_the_data_loader(tiny_bert_dir: Path) -> None:
    from appliance.training.engine import Run

    run = Run(spec_for(tiny_bert_dir, batch_size=1, holdout_fraction=0), labeled(93), rank=0, world=1)
    assert run.steps_per_epoch == 93
    assert len(list(run._epoch_batches(0))) == 93


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_splitting_a_batch_into_physical_batches_changes_memory_not_the_result(
    mode: str, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    spec = spec_for(tiny_bert_dir, epochs=1, batch_size=16, dp_mode=mode)
    whole = train(spec, ROWS, tmp_path / "whole", secret=SECRET)
    split = train(replace(spec, max_physical_batch=3), ROWS, tmp_path / "split", secret=SECRET)
    assert split.history == whole.history
    torch.testing.assert_close(
        weights(split.output_dir)["classifier.weight"],
        weights(whole.output_dir)["classifier.weight"],
        rtol=1e-4,
        atol=1e-6,
    )


def _batches(run: Any, epoch: int = 0) -> list[list[int]]:
    return [b.tolist() for b in run._epoch_batches(epoch)]


def test_two_runs_with_the_same_public_seed_draw_different_batches_and_noise(tiny_bert_dir: Path) -> None:
    """The seed is public (it is shown with the job): were the noise and the Poisson batches
    drawn from it, anyone could replay them and the guarantee would be void."""
    from appliance.training.engine import Run

    spec = spec_for(tiny_bert_dir, seed=7)
    one, two = (Run(spec, ROWS, rank=0, world=1) for _ in range(2))
    assert _batches(one) != _batches(two)
    assert one.noise_generator is not None and two.noise_generator is not None
    assert not torch.equal(
        torch.randn(16, generator=one.noise_generator), torch.randn(16, generator=two.noise_generator)
    )
    # What the public seed still decides is the same in both: the held-out split, the head's init.
    assert torch.equal(one.task.module.classifier.weight, two.task.module.classifier.weight)


def test_with_the_same_secret_two_runs_draw_the_same_batches_and_noise_and_each_epoch_its_own(
    tiny_bert_dir: Path,
) -> None:
    from appliance.training.engine import Run

    one, two = (Run(spec_for(tiny_bert_dir, seed=s), ROWS, rank=0, world=1, secret=SECRET) for s in (0, 1))
    assert _batches(one) == _batches(two)  # the batches follow the secret, not the public seed
    assert _batches(one, 0) != _batches(one, 1)
    assert one.noise_generator is not None and two.noise_generator is not None
    assert torch.equal(torch.randn(16, generator=one.noise_generator), torch.randn(16, generator=two.noise_generator))


def test_two_trainings_with_the_same_spec_end_with_different_weights(tiny_bert_dir: Path, tmp_path: Path) -> None:
    spec = spec_for(tiny_bert_dir, epochs=1)
    first = train(spec, ROWS, tmp_path / "a")
    second = train(spec, ROWS, tmp_path / "b")
    assert first.card.epsilon == second.card.epsilon  # the accounting does not depend on the secret
    assert not torch.equal(
        weights(first.output_dir)["classifier.weight"], weights(second.output_dir)["classifier.weight"]
    )


def test_the_secret_is_in_the_checkpoint_and_nowhere_on_the_card_or_in_progress(
    finished: dict[str, Any],
) -> None:
    import io

    states = [torch.load(io.BytesIO(b), weights_only=True) for _, b in finished["sink"].saved]
    secrets = {s["secret"] for s in states}
    assert len(secrets) == 1  # one run, one secret
    (secret,) = secrets
    assert isinstance(secret, int) and secret.bit_length() > 32
    shown = repr(finished["result"].card.to_dict()) + repr(finished["progress"]) + repr(finished["result"].history)
    assert str(secret) not in shown and hex(secret)[2:] not in shown


def test_a_checkpoint_from_before_secret_seeds_is_refused_with_a_reason(
    finished: dict[str, Any], tiny_bert_dir: Path, tmp_path: Path
) -> None:
    import io

    state = torch.load(io.BytesIO(finished["sink"].saved[0][1]), weights_only=True)
    del state["secret"]
    state["format"] = 1
    old = io.BytesIO()
    torch.save(state, old)
    with pytest.raises(InvalidInput, match="predates secret"):
        train(spec_for(tiny_bert_dir, checkpoint_every_steps=3), ROWS, tmp_path / "m", resume=old.getvalue())
