"""Which way Opacus computes per-sample gradients for a run (``dp_mode``).

Two correct ways exist, with different costs:

- ``hooks``: Opacus's per-sample gradient hooks materialise one gradient per example and
  trainable parameter. Fastest per step, but memory grows with batch x trainable parameters.
- ``ghost``: ghost clipping computes each example's gradient *norm* without materialising
  the gradient, then runs a second backward pass with the clipping weights. Memory stays
  close to non-private training; the second pass costs time.

Measured on one H200 (Opacus 1.6, step time relative to non-private training, same batch):
LoRA on SmolLM2-135M hooks 1.51x / ghost 2.02x; MiniLM encoder fully trained hooks 2.07x
time but 5.3x memory / ghost 2.76x time, 1.07x memory. So ``auto`` picks hooks while the
per-sample gradients fit in a quarter of the free memory of the device, and ghost beyond.

The engine's task setup also removes the pitfalls either mode has with these models:
only LoRA matrices (``lora``) or the top encoder layers, pooler and head (``classifier``)
are trainable, so SmolLM2's tied ``embed_tokens``/``lm_head`` (which ghost clipping refuses
when trainable), its ``LlamaRMSNorm`` (no per-sample rule: functorch fallback) and BERT's
shared position-id buffer (which ghost clipping needs per sample) are all frozen.
"""

from __future__ import annotations

from typing import Literal

import torch

from appliance.training.devices import available_memory_bytes

Resolved = Literal["hooks", "ghost", "off"]

HOOKS_MEMORY_SHARE = 0.25
"""``auto`` uses hooks while their per-sample gradients take at most this share of free memory."""


def per_sample_gradient_bytes(trainable_parameters: int, physical_batch: int, dtype_bytes: int = 4) -> int:
    """What the hooks mode materialises per physical batch: one gradient per example."""
    return trainable_parameters * physical_batch * dtype_bytes


def choose_mode(
    requested: str,
    *,
    trainable_parameters: int,
    physical_batch: int,
    device: torch.device,
    free_bytes: int | None = None,
) -> Resolved:
    """The mode a run uses: ``requested`` unless it is ``auto``."""
    if requested in ("hooks", "ghost", "off"):
        return requested  # type: ignore[return-value]
    free = available_memory_bytes(device) if free_bytes is None else free_bytes
    need = per_sample_gradient_bytes(trainable_parameters, physical_batch)
    return "hooks" if need <= HOOKS_MEMORY_SHARE * free else "ghost"
