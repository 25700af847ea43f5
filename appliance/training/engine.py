"""The DP training engine: one call trains a classifier head or a LoRA adapter with Opacus."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from appliance.errors import NotSupportedYet
from appliance.training.spec import CheckpointSink, Example, Progress, TrainingResult, TrainingSpec


def train(
    spec: TrainingSpec,
    examples: Sequence[Example],
    output_dir: Path,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoints: CheckpointSink | None = None,
    resume: bytes | None = None,
) -> TrainingResult:
    """Train ``spec`` on ``examples`` and write the model into ``output_dir``.

    - ``output_dir`` must be empty or absent; on success it holds an HF-format directory the
      existing runners load (seal it, then delete it). On failure or cancel it is left empty.
    - ``on_progress`` is called after every optimizer step, on the training thread.
    - ``should_stop`` is polled before every step; when it returns true the run raises
      :class:`~appliance.training.spec.TrainingCancelled` with the epsilon already spent.
    - ``checkpoints.save(step, bytes)`` receives the run's state per the spec's checkpoint
      interval; ``resume`` is such bytes, and the resumed run ends with the same accountant
      history (and so the same epsilon) as an uninterrupted one with the same seed.

    Raises :class:`~appliance.errors.InvalidInput` for examples that do not fit the task
    (wrong row type, fewer than two labels, too few rows for the batch size).
    """
    raise NotSupportedYet("the training engine lands in the next commit on this branch")
