"""Defaults that follow the hardware: weight precision, batch sizes and queue depths.

A fixed ``max_batch = 8, max_queue = 64`` suits a 2-core box and wastes a datacenter GPU:
there the same defaults answered 400 of 512 concurrent embedding requests with 429 while
the GPU idled. So where a setting is left unset (``None``), the runner derives it here
from the device it loaded on: on a GPU from the free memory and the model's key/value
size per token; on a CPU the small fixed values that measured best on 2 cores. A setting
that is given always wins.

Pure functions over plain numbers, so every rule is testable without the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CPU_CHAT = (8, 64)
"""(max_batch, max_queue) for chat on a CPU."""
CPU_TEXT = (64, 64)
"""(max_batch, max_queue) for embeddings and classifiers on a CPU."""
GPU_TEXT = (256, 2048)
"""(max_batch, max_queue) for embeddings and classifiers on a GPU: 256 texts per pass was
the encoder's best batch on an H200, and the queue holds several waves of concurrent
callers (512 at once must not be refused)."""
GPU_CONTEXT_CAP = 4096
"""Most tokens one chat sequence may hold on a GPU, where each slot's cache is reserved up
front (a model with a longer context is served up to this many; raise it with the
model option ``max_context``... or serve the model through an upstream engine)."""
GPU_MEMORY_SHARE = 0.8
"""Share of the GPU's free memory (after loading the weights) the chat cache may take;
the rest is for activations, the sampler and graph pools."""
GPU_CHAT_MAX_BATCH = 256
QUEUE_WAVES = 4
"""A chat queue holds this many batches' worth of waiting requests."""


@dataclass(frozen=True)
class DeviceMemory:
    """What a device offers, in bytes (``free`` after the model's weights are loaded)."""

    kind: str
    free: int
    total: int


@dataclass(frozen=True)
class ChatLimits:
    max_batch: int
    max_queue: int


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on a GPU that computes it natively (Ampere and later), else float32.

    Small models decode no faster in bfloat16 when each step is bound by kernel launches
    (the old eager runner on an H200: 41 ms per step in bfloat16 against 25 in float32 for
    SmolLM2 at batch 64). With the step replayed as a CUDA graph bfloat16 can win: transformers'
    own static-cache compiled ``generate()`` took 3.7 against 7.6 ms per step there. That is
    the reason for this default, not a measurement of this appliance's graph step, which no
    GPU has timed yet. bfloat16 also takes half the memory.
    """
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def parse_dtype(name: str) -> torch.dtype | None:
    """The ``models.dtype`` setting: ``auto`` (None: :func:`default_dtype`) or a dtype name."""
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    return None if name == "auto" else names[name]


def device_memory(device: torch.device) -> DeviceMemory:
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return DeviceMemory("cuda", int(free), int(total))
    return DeviceMemory(device.type, 0, 0)


def chat_limits(memory: DeviceMemory, *, kv_bytes_per_token: int, context: int) -> ChatLimits:
    """How many sequences a chat model can run at once, and how many may wait.

    On a GPU each running sequence reserves ``context`` tokens of cache: the slot count is
    what :data:`GPU_MEMORY_SHARE` of the free memory holds, at least the CPU default and at
    most :data:`GPU_CHAT_MAX_BATCH`. The queue holds :data:`QUEUE_WAVES` batches.
    """
    if memory.kind != "cuda":
        return ChatLimits(*CPU_CHAT)
    per_slot = max(1, kv_bytes_per_token * context)
    fits = int(memory.free * GPU_MEMORY_SHARE) // per_slot
    batch = max(CPU_CHAT[0], min(GPU_CHAT_MAX_BATCH, fits))
    return ChatLimits(batch, max(CPU_CHAT[1], QUEUE_WAVES * batch))


def text_limits(kind: str) -> tuple[int, int]:
    """(max_batch, max_queue) for an embedding or classifier model on a device of ``kind``."""
    return GPU_TEXT if kind == "cuda" else CPU_TEXT
