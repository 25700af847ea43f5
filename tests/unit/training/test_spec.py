"""TrainingSpec refuses bad values at construction, naming the field."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from appliance.errors import InvalidInput
from appliance.training import ModelCard, TrainingSpec, holdout_rows


def spec(**overrides: Any) -> TrainingSpec:
    base: dict[str, Any] = {"task": "classifier", "base_model_dir": Path("/m"), "target_epsilon": 3.0, "delta": 1e-5}
    return TrainingSpec(**{**base, **overrides})


def test_a_plain_spec_is_private_with_documented_defaults() -> None:
    s = spec()
    assert s.private
    assert (s.dp_mode, s.accountant, s.device, s.gpus) == ("auto", "rdp", "auto", 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task", "regression"),
        ("dp_mode", "fast"),
        ("accountant", "gdp"),
        ("target_epsilon", 0.0),
        ("target_epsilon", math.inf),
        ("target_epsilon", math.nan),
        ("target_epsilon", 1000.0),
        ("delta", 0.0),
        ("delta", 1.0),
        ("epochs", 0),
        ("batch_size", 0),
        ("max_grad_norm", 0.0),
        ("max_grad_norm", math.nan),
        ("learning_rate", -1.0),
        ("device", "gpu"),
        ("device", "cuda:x"),
        ("max_seq_len", 4),
        ("train_top_layers", -1),
        ("lora_rank", 0),
        ("lora_dropout", 1.0),
        ("lora_target_modules", ()),
        ("lora_target_modules", ("q proj",)),
        ("holdout_fraction", 0.9),
        ("max_physical_batch", 0),
        ("gpus", 0),
        ("checkpoint_every_steps", -1),
        ("checkpoint_every_s", -1.0),
    ],
)
def test_an_invalid_value_is_refused_naming_its_field(field: str, value: Any) -> None:
    with pytest.raises(InvalidInput, match=rf"training\.{field} "):
        spec(**{field: value})


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:7"])
def test_devices_the_settings_allow_are_accepted(device: str) -> None:
    assert spec(device=device).device == device


def test_without_dp_the_target_epsilon_is_not_checked_and_the_spec_says_it_is_not_private() -> None:
    s = spec(dp_mode="off", target_epsilon=math.inf)
    assert not s.private


def test_specs_are_frozen_values() -> None:
    s = spec()
    assert replace(s, epochs=5) == spec(epochs=5)
    with pytest.raises(AttributeError):
        s.epochs = 9  # type: ignore[misc]


def test_a_card_without_dp_serialises_infinite_epsilon_as_a_string() -> None:
    card = ModelCard(
        task="classifier",
        base_model="all-minilm-l6-v2",
        dataset_hash="sha256:00",
        epsilon=math.inf,
        delta=1e-5,
        target_epsilon=math.inf,
        noise_multiplier=0.0,
        sample_rate=0.1,
        steps=10,
        epochs=1,
        accountant="rdp",
        max_grad_norm=1.0,
        dp_mode="off",
        secure_mode=False,
        train_examples=90,
        holdout_examples=10,
        metrics={"holdout_accuracy": 0.5},
        wall_time_s=1.0,
        device="cpu",
        gpus=1,
        library_versions={"opacus": "1.6.0"},
        labels=("a", "b"),
    )
    out = card.to_dict()
    assert out["epsilon"] == "inf"
    assert out["labels"] == ["a", "b"]
    assert out["metrics"] == {"holdout_accuracy": 0.5}


@pytest.mark.parametrize(
    ("rows", "fraction", "held"),
    [(100, 0.1, 10), (60, 0.2, 12), (10, 0.01, 1), (9, 0.1, 0), (5, 0.5, 2), (50, 0.0, 0), (19, 0.1, 1)],
)
def test_the_held_out_share_is_truncated_and_at_least_one_from_ten_rows(rows: int, fraction: float, held: int) -> None:
    assert holdout_rows(rows, fraction) == held
