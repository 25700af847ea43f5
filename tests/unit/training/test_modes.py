"""How ``auto`` picks the per-sample gradient mode, and where a run trains."""

from __future__ import annotations

import pytest
import torch

from appliance.training.devices import resolve_device
from appliance.training.modes import choose_mode, per_sample_gradient_bytes

CPU = torch.device("cpu")
GIB = 2**30


@pytest.mark.parametrize(
    ("requested", "params", "batch", "free", "expected"),
    [
        ("auto", 150_000, 64, 4 * GIB, "hooks"),  # a classifier head: tiny per-sample gradients
        ("auto", 460_800, 16, 4 * GIB, "hooks"),  # LoRA r=8 on SmolLM2
        ("auto", 22_700_000, 64, 4 * GIB, "ghost"),  # the whole MiniLM encoder: 5.8 GB of per-sample gradients
        ("auto", 22_700_000, 64, 140 * GIB, "hooks"),  # ... which an H200 holds
        ("hooks", 22_700_000, 64, 1 * GIB, "hooks"),  # an explicit mode is obeyed
        ("ghost", 10, 1, 140 * GIB, "ghost"),
        ("off", 10, 1, 140 * GIB, "off"),
    ],
)
def test_auto_uses_hooks_while_per_sample_gradients_fit_a_quarter_of_free_memory(
    requested: str, params: int, batch: int, free: int, expected: str
) -> None:
    assert (
        choose_mode(requested, trainable_parameters=params, physical_batch=batch, device=CPU, free_bytes=free)
        == expected
    )


def test_per_sample_gradients_cost_one_gradient_per_example() -> None:
    assert per_sample_gradient_bytes(1000, 8) == 32_000


def test_cpu_is_cpu_and_cuda_falls_back_to_cpu_where_there_is_none() -> None:
    assert resolve_device("cpu") == CPU
    if not torch.cuda.is_available():
        assert resolve_device("auto") == CPU
        assert resolve_device("cuda:1") == CPU
