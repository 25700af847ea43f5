"""Real models for the model tests, loaded once per pytest process and shared between the
unit and integration folders (a session fixture in one folder cannot serve the other).

The converted SmolLM2 lives in pytest's cache directory, so only the first run on a
checkout pays for the GGUF conversion (about 25 s on 2 cores); ``test_store`` checks what
that conversion produced.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest

from appliance.models.base import ModelInput
from appliance.models.chat import LocalChatRunner
from appliance.models.embeddings import LocalEmbeddingRunner
from appliance.models.manager import configure_torch_threads
from appliance.models.store import ModelStore, minilm_directory

SEEN: list[ModelInput] = []
"""Everything the shared runners were handed (the observer seam)."""


@functools.cache
def _fresh_store() -> Path:
    return Path(tempfile.mkdtemp(prefix="appliance-model-store-"))


def store_root(config: pytest.Config) -> Path:
    """pytest's cache dir (kept between runs), or a fresh temp dir under ``-p no:cacheprovider``."""
    cache = getattr(config, "cache", None)
    return Path(cache.mkdir("appliance-model-store")) if cache is not None else _fresh_store()


@functools.cache
def smollm2_dir(root: Path) -> Path:
    configure_torch_threads(2)
    return ModelStore(root).ensure_smollm2()


@functools.cache
def shared_chat(root: Path) -> LocalChatRunner:
    runner = LocalChatRunner(
        "smollm2-135m-instruct", smollm2_dir(root), max_batch=8, max_queue=16, observer=SEEN.append
    )
    runner.warmup()
    return runner


@functools.cache
def shared_embeddings() -> LocalEmbeddingRunner:
    configure_torch_threads(2)
    runner = LocalEmbeddingRunner("all-minilm-l6-v2", minilm_directory(), max_batch=32, observer=SEEN.append)
    runner.warmup()
    return runner
