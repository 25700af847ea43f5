"""What a caller hands the DP training engine and what it gets back.

This module is the contract between the engine (``appliance.training.engine``) and its
callers (the job worker, the bench). It holds plain data types only: importing it loads
neither torch nor Opacus.

The caller's duties, in one place:

- **Examples arrive clean.** Rows are already validated and anonymized by the tenant's
  policy; the engine never sees raw PII and never writes examples anywhere.
- **The caller owns every byte at rest.** Checkpoints come out as ``bytes`` through
  :class:`CheckpointSink` (seal them with the tenant's key); the trained model is written
  into the ``output_dir`` the caller names (seal it with ``appliance.models.sealed`` and
  remove the directory; put it on a memory file system if plaintext must never touch a
  disk). The engine writes nothing else.
- **Budget first.** The ledger checks the budget before calling :func:`train`; the epsilon
  the engine reports is what Opacus's accountant says for the run (see
  ``appliance.training.accounting``, the same functions the ledger uses).
- **Cancelled and crashed runs still spent privacy.** :class:`TrainingCancelled` carries the
  epsilon and accountant history of the steps that ran; a resumed run continues that
  history, so its final epsilon equals an uninterrupted run's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from appliance.errors import InvalidInput

Task = Literal["classifier", "lora"]
"""``classifier``: a sequence-classification head (and optionally the top encoder layers) on
the MiniLM encoder, served by ``/v1/classifications``. ``lora``: a LoRA adapter on the
SmolLM2 chat model, merged into a full causal-LM directory served by ``/v1/chat/completions``."""

DpMode = Literal["auto", "hooks", "ghost", "off"]
"""How per-sample gradients are clipped. ``hooks``: Opacus's per-sample gradient hooks
(fastest, memory grows with batch x parameters); ``ghost``: ghost clipping (two backward
passes, memory close to non-private training); ``auto``: the engine picks per task and
device (see ``appliance.training.modes``). ``off`` trains WITHOUT differential privacy and
exists for baselines only (the bench, the memorization check): a product job must never
pass it, and its card says ``epsilon = inf``."""

AccountantName = Literal["rdp", "prv"]
"""Opacus accountants. ``rdp`` (the default) is the one ``make_private_with_epsilon`` was
built around: exact composition by concatenating histories and cheap to evaluate, so the
ledger can recompute a dataset's total at every job. ``prv`` is tighter (a smaller epsilon
for the same noise) but numerical, and slower on long mixed histories."""

HistoryEntry = tuple[float, float, int]
"""One accountant history entry: ``(noise_multiplier, sample_rate, steps)``, as Opacus keeps them."""


@dataclass(frozen=True)
class LabeledText:
    """A classification row."""

    text: str
    label: str


@dataclass(frozen=True)
class PromptCompletion:
    """A generation row; the loss is taken on the completion only (the prompt is context)."""

    prompt: str
    completion: str


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatExample:
    """A conversation; the loss is taken on the assistant turns only."""

    messages: tuple[ChatMessage, ...]


Example = LabeledText | PromptCompletion | ChatExample
"""``classifier`` takes :class:`LabeledText` rows; ``lora`` takes :class:`PromptCompletion`
and :class:`ChatExample` rows (mixed is fine)."""


@dataclass(frozen=True)
class TrainingSpec:
    """One training run. Invalid values raise :class:`~appliance.errors.InvalidInput` naming
    the field, at construction (so a job can be refused before it is queued).

    ``batch_size`` is the *expected* logical batch: Opacus samples each example into each
    step independently with probability ``batch_size / n`` (Poisson sampling), which the
    privacy analysis requires. A step runs ``ceil(n / batch_size)`` times per epoch.
    Physical batches larger than ``max_physical_batch`` are split (Opacus's
    ``BatchMemoryManager``) without changing the privacy accounting.
    """

    task: Task
    base_model_dir: Path
    """An HF-format directory: the MiniLM encoder the registry serves for embeddings
    (``classifier``) or the SmolLM2 chat model directory (``lora``). Read only."""
    target_epsilon: float
    delta: float
    """Should be below ``1 / n`` (the caller's ledger sets its default from the policy)."""
    epochs: int = 3
    batch_size: int = 64
    max_grad_norm: float = 1.0
    learning_rate: float = 5e-3
    seed: int = 0
    """**Public** (shown with the job and on the card): the new head's or LoRA adapter's initial
    weights and the held-out split. The noise and the Poisson batches never come from it: each
    run draws a secret seed for them (see ``appliance.training.engine``), as DP requires."""
    dp_mode: DpMode = "auto"
    accountant: AccountantName = "rdp"
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``. A CUDA device
    that is not present falls back to CPU (the card records the device actually used)."""
    secure_mode: bool = False
    """Opacus ``secure_mode``: noise from a cryptographically secure generator, guarding
    against floating-point attacks on the noise. Opacus takes that generator only from the
    ``torchcsprng`` package, which has no release for PyTorch 2.x, so the configuration
    refuses ``training.secure_mode`` and the engine raises ConfigError if it gets here."""
    max_seq_len: int = 128
    """Tokens per example; longer ones are truncated (classifier) or cut at the end (lora)."""
    train_top_layers: int = 0
    """``classifier`` only: also train the top N encoder layers (0 = pooler and head only)."""
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    holdout_fraction: float = 0.1
    """Share of examples kept out of training to measure the card's metrics (0 = none). The
    held-out rows are chosen by ``seed`` and are not trained on."""
    max_physical_batch: int = 64
    """Largest batch run through the model at once (memory bound); larger logical batches
    are accumulated."""
    gpus: int = 1
    """Above 1, the run is spread over that many processes with Opacus ``DPDDP`` (the worker
    launches them with ``torchrun``; see ``appliance.training.distributed``)."""
    checkpoint_every_steps: int = 0
    """Hand a checkpoint to the sink every N optimizer steps (0 = only by time)."""
    checkpoint_every_s: float = 300.0
    """... and whenever this many seconds passed since the last one (0 = only by steps)."""
    dataset_hash: str = ""
    """The dataset's content hash, copied to the card (the engine does not compute it)."""
    base_model_name: str = ""
    """The registry name of the base model, for the card (defaults to the directory name)."""

    def __post_init__(self) -> None:
        _check(self.task in ("classifier", "lora"), "task", "must be 'classifier' or 'lora'")
        _check(self.dp_mode in ("auto", "hooks", "ghost", "off"), "dp_mode", "must be auto, hooks, ghost or off")
        _check(self.accountant in ("rdp", "prv"), "accountant", "must be 'rdp' or 'prv'")
        if self.dp_mode != "off":
            _check(
                math.isfinite(self.target_epsilon) and 0.01 <= self.target_epsilon <= 100,
                "target_epsilon",
                "must be between 0.01 and 100",
            )
        _check(0 < self.delta < 1, "delta", "must be between 0 and 1 (exclusive), usually below 1/n")
        _check(1 <= self.epochs <= 1000, "epochs", "must be between 1 and 1000")
        _check(1 <= self.batch_size <= 65536, "batch_size", "must be between 1 and 65536")
        _check(math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0, "max_grad_norm", "must be positive")
        _check(
            math.isfinite(self.learning_rate) and 0 < self.learning_rate <= 10, "learning_rate", "must be in (0, 10]"
        )
        _check(_is_device(self.device), "device", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        _check(8 <= self.max_seq_len <= 8192, "max_seq_len", "must be between 8 and 8192")
        _check(0 <= self.train_top_layers <= 64, "train_top_layers", "must be between 0 and 64")
        _check(1 <= self.lora_rank <= 256, "lora_rank", "must be between 1 and 256")
        _check(1 <= self.lora_alpha <= 1024, "lora_alpha", "must be between 1 and 1024")
        _check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        _check(
            len(self.lora_target_modules) > 0 and all(m.isidentifier() for m in self.lora_target_modules),
            "lora_target_modules",
            "must name at least one module (e.g. q_proj)",
        )
        _check(0 <= self.holdout_fraction <= 0.5, "holdout_fraction", "must be between 0 and 0.5")
        _check(1 <= self.max_physical_batch <= 65536, "max_physical_batch", "must be between 1 and 65536")
        _check(1 <= self.gpus <= 64, "gpus", "must be between 1 and 64")
        _check(self.checkpoint_every_steps >= 0, "checkpoint_every_steps", "must not be negative")
        _check(self.checkpoint_every_s >= 0, "checkpoint_every_s", "must not be negative")

    @property
    def private(self) -> bool:
        return self.dp_mode != "off"


def holdout_rows(rows: int, fraction: float) -> int:
    """How many of ``rows`` examples the engine keeps out of training for the card's metrics:
    ``int(rows * fraction)``, and at least one when the fraction is positive and there are ten
    rows or more. The ledger plans a job's sample rate from the rows left (import this rather
    than copying the rule)."""
    held = int(rows * fraction)
    if fraction > 0 and rows >= 10:
        held = max(held, 1)
    return held


def _check(ok: bool, name: str, why: str) -> None:
    if not ok:
        raise InvalidInput(f"training.{name} {why}")


def _is_device(device: str) -> bool:
    if device in ("auto", "cpu", "cuda"):
        return True
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


@dataclass(frozen=True)
class Progress:
    """Handed to ``on_progress`` after every optimizer step (and once at the start, step 0)."""

    step: int
    total_steps: int
    epoch: int
    """1-based epoch the step belongs to."""
    loss: float | None
    """Mean training loss of the step's batch (``None`` before the first step or for an
    empty Poisson batch)."""
    epsilon_spent: float
    """Accountant epsilon after ``step`` steps at the run's delta (0 at step 0, ``inf``
    without DP)."""
    elapsed_s: float
    eta_s: float | None


@dataclass(frozen=True)
class ModelCard:
    """What a compliance officer reads about a trained model. JSON-safe via :meth:`to_dict`."""

    task: Task
    base_model: str
    dataset_hash: str
    epsilon: float
    """From Opacus's accountant for exactly the steps that ran (``inf`` without DP)."""
    delta: float
    target_epsilon: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    epochs: int
    accountant: AccountantName
    max_grad_norm: float
    dp_mode: DpMode
    """The mode that ran (``auto`` is resolved to ``hooks`` or ``ghost``)."""
    secure_mode: bool
    train_examples: int
    holdout_examples: int
    metrics: Mapping[str, float]
    """``holdout_accuracy`` and ``holdout_loss`` (classifier) or ``holdout_loss``,
    ``holdout_perplexity`` and ``truncated_rows`` (lora: rows cut at ``max_seq_len``), plus
    ``train_loss`` of the last epoch."""
    wall_time_s: float
    device: str
    gpus: int
    library_versions: Mapping[str, str]
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    """``classifier``: the labels in class-index order (the served model's ``id2label``)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: infinite epsilon becomes the string ``"inf"``."""
        out = asdict(self)
        for key in ("epsilon", "target_epsilon"):
            if not math.isfinite(out[key]):
                out[key] = "inf"
        out["labels"] = list(self.labels)
        out["metrics"] = dict(self.metrics)
        out["library_versions"] = dict(self.library_versions)
        return out


@dataclass(frozen=True)
class TrainingResult:
    output_dir: Path
    """The caller's ``output_dir``, now holding a complete HF-format model directory that the
    existing runners load unchanged (a ``...ForSequenceClassification`` directory with the
    labels as ``id2label``, or a merged causal LM with its tokenizer)."""
    card: ModelCard
    history: tuple[HistoryEntry, ...]
    """The accountant history of the whole run (empty without DP), for the ledger."""


class TrainingCancelled(Exception):
    """``should_stop()`` returned true. The steps that ran spent privacy all the same: charge
    the ledger ``epsilon_spent`` (or recompose ``history``). Nothing is written to ``output_dir``."""

    def __init__(self, *, steps: int, epsilon_spent: float, history: Sequence[HistoryEntry]) -> None:
        super().__init__(f"training cancelled after {steps} steps (epsilon spent {epsilon_spent:.4g})")
        self.steps = steps
        self.epsilon_spent = epsilon_spent
        self.history = tuple(history)


class CheckpointSink(Protocol):
    """Where the engine hands its checkpoints. The caller seals them (the tenant's key, the
    encrypted blob store) and keeps at least the last one; the engine never writes state to disk.

    ``state`` holds the trainable weights, the optimizer, the accountant history, the run's
    secret seed (from which the noise and the batches are drawn), the RNG states and the step:
    pass the last saved bytes as ``resume=`` to continue. Whoever reads them can replay the
    run's noise, so they must be sealed, never logged or stored in the clear.
    ``save`` runs on the training thread; a slow sink slows training."""

    def save(self, step: int, state: bytes) -> None: ...
