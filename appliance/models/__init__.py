"""Model registry, store and runners (local chat and embeddings, upstream engines).

The privacy pipeline talks to :class:`ChatRunner` and :class:`EmbeddingRunner` only, and
gets them from a :class:`ModelManager`; which kind of runner sits behind a name is the
registry's business.
"""

from appliance.models.base import (
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatResult,
    ChatRunner,
    EmbeddingResult,
    EmbeddingRunner,
    GenerationTimeout,
    InputObserver,
    ModelInput,
    RunnerStats,
    Usage,
)
from appliance.models.embeddings import decode_base64, encode_base64
from appliance.models.manager import ModelManager, configure_torch_threads
from appliance.models.registry import ModelInfo, ModelRegistry
from appliance.models.store import ModelStore
from appliance.models.upstream import UpstreamUnavailable

__all__ = [
    "ChatChunk",
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "ChatRunner",
    "EmbeddingResult",
    "EmbeddingRunner",
    "GenerationTimeout",
    "InputObserver",
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
