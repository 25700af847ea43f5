"""Which way Opacus computes per-sample gradients for a run (``dp_mode``).

Two correct ways exist, with different costs:

- ``hooks``: Opacus's per-sample gradient hooks materialise one gradient per example and
  trainable parameter. Fastest per step, but memory grows with batch x trainable parameters.
- ``ghost``: ghost clipping computes each example's gradient *norm* without materialising
  the gradient, then runs a second backward pass with the clipping weights. Memory stays
  close to non-private training; the second pass costs time.

Measured on one H200 by a separate fp32 script (Opacus 1.6, no autocast, fixed batches, step
time relative to non-private training, same batch): LoRA on SmolLM2-135M hooks 1.511x (just
above the 1.5x target) / ghost 2.02x; a mean-pooling MiniLM encoder fully trained hooks 2.07x
time but 5.3x memory / ghost 2.76x time, 1.07x memory. Measured on a 2-core CPU
(``bench/dp.py``): LoRA hooks 1.17x / ghost 1.35x; MiniLM fully trained hooks 2.36x / ghost
2.04x; MiniLM head only hooks 11.6x / ghost 1.73x (per-sample gradient bookkeeping dwarfs a
head's tiny matmuls). So ``auto`` picks:

- ``lora``: hooks while the per-sample gradients fit in a quarter of the device's free
  memory, ghost beyond;
- ``classifier``: ghost on a CPU (faster there for the head and for the whole encoder);
  on a GPU hooks while they fit, ghost beyond.

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
    task: str,
    trainable_parameters: int,
    physical_batch: int,
    device: torch.device,
    free_bytes: int | None = None,
) -> Resolved:
    """The mode a run uses: ``requested`` unless it is ``auto`` (see the module doc)."""
    if requested in ("hooks", "ghost", "off"):
        return requested  # type: ignore[return-value]
    if task == "classifier" and device.type == "cpu":
        return "ghost"
    free = available_memory_bytes(device) if free_bytes is None else free_bytes
    need = per_sample_gradient_bytes(trainable_parameters, physical_batch)
    return "hooks" if need <= HOOKS_MEMORY_SHARE * free else "ghost"
