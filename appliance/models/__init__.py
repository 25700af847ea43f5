"""Model registry, store and runners (local chat, embeddings and classifiers, upstream engines).

The privacy pipeline talks to :class:`ChatRunner`, :class:`EmbeddingRunner` and
:class:`ClassifierRunner` only, and
gets them from a :class:`ModelManager`; which kind of runner sits behind a name is the
registry's business.

Names that pull in torch and transformers are resolved on first access, so importing the
light types (``appliance.models.base``) or the CLI stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from appliance.models.base import (
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatResult,
    ChatRunner,
    Classification,
    ClassificationResult,
    ClassifierRunner,
    EmbeddingResult,
    EmbeddingRunner,
    GenerationTimeout,
    InputObserver,
    LabelScore,
    ModelInput,
    RunnerStats,
    Usage,
)

if TYPE_CHECKING:
    from appliance.models.embeddings import decode_base64, encode_base64
    from appliance.models.manager import ModelManager, configure_torch_threads
    from appliance.models.registry import ModelInfo, ModelRegistry
    from appliance.models.store import ModelStore
    from appliance.models.upstream import UpstreamUnavailable

_LAZY = {
    "decode_base64": "appliance.models.embeddings",
    "encode_base64": "appliance.models.embeddings",
    "ModelManager": "appliance.models.manager",
    "configure_torch_threads": "appliance.models.manager",
    "ModelInfo": "appliance.models.registry",
    "ModelRegistry": "appliance.models.registry",
    "ModelStore": "appliance.models.store",
    "UpstreamUnavailable": "appliance.models.upstream",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = [
    "ChatChunk",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "ChatRunner",
    "Classification",
    "ClassificationResult",
    "ClassifierRunner",
    "EmbeddingResult",
    "EmbeddingRunner",
    "GenerationTimeout",
    "InputObserver",
    "LabelScore",
    "ModelInfo",
    "ModelInput",
    "ModelManager",
    "ModelRegistry",
    "ModelStore",
    "RunnerStats",
    "UpstreamUnavailable",
    "Usage",
    "configure_torch_threads",
    "decode_base64",
    "encode_base64",
]
