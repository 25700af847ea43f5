"""What the engine needs from a task: the module Opacus makes private, batches of logits and
targets, a held-out evaluation and a way to write the served model directory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from appliance.training.spec import Example, TrainingSpec, holdout_rows


class TaskRun(Protocol):
    module: nn.Module
    """Holds every trainable parameter (and nothing frozen that Opacus would have to see)."""
    n_train: int
    labels: tuple[str, ...]
    autocast: bool
    """Whether bf16 autocast is exact enough for this task's forward pass on CUDA."""

    def logits(
        self, module: nn.Module, indices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int] | None]:
        """``(logits [N, C], targets [N], shape)`` for training rows ``indices``, computed with
        ``module`` (the Opacus-wrapped ``self.module``). ``shape`` is ``(batch, seq)`` when
        ``N`` counts tokens (the privacy unit is still the sequence), else ``None``."""
        ...

    def evaluate(self) -> dict[str, float]:
        """Metrics on the held-out rows (empty without held-out rows)."""
        ...

    def save(self, output_dir: Path) -> None:
        """Write the complete HF-format model directory the serving runner loads."""
        ...


def trainable_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def split_holdout(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train, held-out) row indices; the held-out share is never trained on."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = holdout_rows(n, fraction)
    return order[held:].sort().values, order[:held].sort().values


def build_task(spec: TrainingSpec, examples: Sequence[Example], device: torch.device) -> TaskRun:
    if spec.task == "classifier":
        from appliance.training.classifier import ClassifierTask

        return ClassifierTask(spec, examples, device)
    from appliance.training.lora import LoraTask

    return LoraTask(spec, examples, device)


def disable_dropout(module: nn.Module) -> None:
    """DP-SGD's noise already regularises; dropout would only add variance (and the
    per-sample hooks need the modules in training mode, where dropout would be active)."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
