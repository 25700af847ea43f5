"""How ``auto`` picks the per-sample gradient mode, and where a run trains."""

from __future__ import annotations

import pytest
import torch

from appliance.training.devices import resolve_device
from appliance.training.modes import choose_mode, per_sample_gradient_bytes

CPU = torch.device("cpu")
GPU = torch.device("cuda", 0)
GIB = 2**30


@pytest.mark.parametrize(
    ("requested", "task", "device", "params", "batch", "free", "expected"),
    [
        ("auto", "lora", CPU, 460_800, 16, 4 * GIB, "hooks"),  # LoRA r=8 on SmolLM2
        ("auto", "lora", GPU, 460_800, 16, 140 * GIB, "hooks"),
        ("auto", "lora", GPU, 135_000_000, 64, 20 * GIB, "ghost"),  # an adapter too big for hooks
        ("auto", "classifier", CPU, 150_000, 64, 4 * GIB, "ghost"),  # a head on a CPU: ghost is 7x faster
        ("auto", "classifier", GPU, 150_000, 64, 140 * GIB, "hooks"),
        ("auto", "classifier", GPU, 22_700_000, 64, 4 * GIB, "ghost"),  # the whole encoder: 5.8 GB per batch
        ("auto", "classifier", GPU, 22_700_000, 64, 140 * GIB, "hooks"),  # ... which an H200 holds
        ("hooks", "classifier", CPU, 22_700_000, 64, 1 * GIB, "hooks"),  # an explicit mode is obeyed
        ("ghost", "lora", GPU, 10, 1, 140 * GIB, "ghost"),
        ("off", "lora", CPU, 10, 1, 140 * GIB, "off"),
    ],
)
def test_auto_picks_by_task_device_and_whether_per_sample_gradients_fit_a_quarter_of_free_memory(
    requested: str, task: str, device: torch.device, params: int, batch: int, free: int, expected: str
) -> None:
    mode = choose_mode(
        requested, task=task, trainable_parameters=params, physical_batch=batch, device=device, free_bytes=free
    )
    assert mode == expected


def test_per_sample_gradients_cost_one_gradient_per_example() -> None:
    assert per_sample_gradient_bytes(1000, 8) == 32_000


def test_cpu_is_cpu_and_cuda_falls_back_to_cpu_where_there_is_none() -> None:
    assert resolve_device("cpu") == CPU
    if not torch.cuda.is_available():
        assert resolve_device("auto") == CPU
        assert resolve_device("cuda:1") == CPU
