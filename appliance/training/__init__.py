"""Differentially-private fine-tuning with Opacus.

The caller's side of the contract is :mod:`appliance.training.spec` (data types, duties) and
:func:`train`; :mod:`appliance.training.accounting` holds the epsilon arithmetic the budget
ledger shares with the engine. Importing this package loads neither torch nor Opacus.
"""

from appliance.training.accounting import epsilon_of, noise_multiplier_for, sample_rate_for, steps_per_epoch
from appliance.training.engine import train
from appliance.training.spec import (
    AccountantName,
    ChatExample,
    ChatMessage,
    CheckpointSink,
    DpMode,
    Example,
    HistoryEntry,
    LabeledText,
    ModelCard,
    Progress,
    PromptCompletion,
    Task,
    TrainingCancelled,
    TrainingResult,
    TrainingSpec,
    holdout_rows,
)

__all__ = [
    "AccountantName",
    "ChatExample",
    "ChatMessage",
    "CheckpointSink",
    "DpMode",
    "Example",
    "HistoryEntry",
    "LabeledText",
    "ModelCard",
    "Progress",
    "PromptCompletion",
    "Task",
    "TrainingCancelled",
    "TrainingResult",
    "TrainingSpec",
    "epsilon_of",
    "holdout_rows",
    "noise_multiplier_for",
    "sample_rate_for",
    "steps_per_epoch",
    "train",
]
