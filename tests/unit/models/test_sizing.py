"""Defaults that follow the device: batch sizes and queues from memory, precision from the GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from appliance.models import sizing
from appliance.models.batching import BatchedTextRunner
from appliance.models.embeddings import LocalEmbeddingRunner
from appliance.models.sizing import ChatLimits, DeviceMemory

NOWHERE = Path("/nonexistent")
"""Runners built here are never loaded; only their limits are read."""
GIB = 1 << 30
SMOLLM2_BF16 = 2 * 30 * 3 * 64 * 2
"""SmolLM2-135M: keys and values of 30 layers, 3 KV heads of 64, bfloat16 (23 KB a token)."""


@pytest.mark.parametrize(
    ("memory", "per_token", "context", "limits"),
    [
        (DeviceMemory("cpu", 0, 0), SMOLLM2_BF16, 8192, ChatLimits(8, 64)),
        (DeviceMemory("cuda", 139 * GIB, 141 * GIB), SMOLLM2_BF16, 4096, ChatLimits(256, 1024)),
        (DeviceMemory("cuda", 20 * GIB, 24 * GIB), SMOLLM2_BF16, 4096, ChatLimits(182, 728)),
        (DeviceMemory("cuda", 1 * GIB, 16 * GIB), 2 * 32 * 8 * 128 * 2, 4096, ChatLimits(8, 64)),
    ],
)
def test_chat_limits_follow_free_memory_and_the_kv_size(
    memory: DeviceMemory, per_token: int, context: int, limits: ChatLimits
) -> None:
    assert sizing.chat_limits(memory, kv_bytes_per_token=per_token, context=context) == limits


def test_a_gpu_queue_takes_512_concurrent_embedding_requests_without_refusing() -> None:
    batch, queue = sizing.text_limits("cuda")
    assert batch >= 256
    assert queue >= 512


@pytest.mark.parametrize(
    ("device", "given", "expected"), [("cpu", None, (64, 64)), ("cuda", None, (256, 2048)), ("cuda", 16, (16, 16))]
)
def test_text_runners_derive_what_the_settings_leave_unset(
    device: str, given: int | None, expected: tuple[int, int]
) -> None:
    runner: BatchedTextRunner[list[float], object] = LocalEmbeddingRunner(  # type: ignore[assignment]
        "never-loaded", NOWHERE, device=device, max_batch=given, max_queue=given
    )
    assert (runner._max_batch, runner._max_queue) == expected


@pytest.mark.parametrize(("name", "dtype"), [("auto", None), ("bfloat16", torch.bfloat16), ("float32", torch.float32)])
def test_the_dtype_setting_names_a_torch_dtype(name: str, dtype: torch.dtype | None) -> None:
    assert sizing.parse_dtype(name) == dtype


def test_a_cpu_keeps_float32_weights() -> None:
    assert sizing.default_dtype(torch.device("cpu")) == torch.float32
