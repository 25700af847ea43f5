"""Loads runners on first use, keeps one per model, and shuts them all down.

Resolution goes through the registry with the caller's tenant id, so a tenant can only
reach built-in, shared and its own models. Loading is blocking (seconds); async callers use
:meth:`ModelManager.load_chat` / :meth:`ModelManager.load_embedding` /
:meth:`ModelManager.load_classifier` (or warm up at start-up),
which load in a thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
from pathlib import Path
from typing import Any

from appliance.config import ModelSettings
from appliance.errors import ConfigError, InvalidInput, NotSupportedYet
from appliance.models.base import ChatRunner, ClassifierRunner, EmbeddingRunner, InputObserver
from appliance.models.chat import LocalChatRunner
from appliance.models.classifier import LocalClassifierRunner
from appliance.models.embeddings import LocalEmbeddingRunner
from appliance.models.registry import ModelInfo, ModelRegistry
from appliance.models.sealed import is_sealed
from appliance.models.store import ModelStore
from appliance.models.upstream import UpstreamRunner

log = logging.getLogger(__name__)

Runner = LocalChatRunner | LocalEmbeddingRunner | LocalClassifierRunner | UpstreamRunner


def configure_torch_threads(threads: int | None = None) -> int:
    """Intra-op threads = the cores this process may use (all of them on a 2-core box).

    Chat and embedding workers each run one forward pass at a time, so more threads than
    cores only adds contention. Call once at start-up, before any model runs.
    """
    import torch

    n = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, n))
    with contextlib.suppress(RuntimeError):  # already set, or parallel work ran: keep what is there
        torch.set_num_interop_threads(1)
    return n


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ModelManager:
    def __init__(
        self,
        settings: ModelSettings,
        registry: ModelRegistry,
        store: ModelStore,
        *,
        observer: InputObserver | None = None,
        upstream_transport: Any = None,
    ) -> None:
        self._settings = settings
        self.registry = registry
        self.store = store
        self._observer = observer
        self._upstream_transport = upstream_transport
        self._runners: dict[tuple[str, str], Runner] = {}
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self._closed = False

    # ---------------------------------------------------------------- lookup

    def visible(self, tenant_id: str | None = None) -> list[ModelInfo]:
        """Built-in, shared and the tenant's own models (what ``GET /v1/models`` lists)."""
        return self.registry.list(tenant_id)

    def chat(self, name: str | None = None, tenant_id: str | None = None) -> ChatRunner:
        """The chat runner for ``name`` (the default model when None).

        Blocks while a model loads for the first time: on the event loop use
        :meth:`load_chat`, or warm the models up at start-up.
        """
        info = self.registry.get(name or self._settings.default_chat, tenant_id)
        if info.kind not in ("chat", "upstream"):
            raise InvalidInput(f"model {info.name!r} is a {info.kind} model, not a chat model")
        runner = self._runner(info)
        assert isinstance(runner, LocalChatRunner | UpstreamRunner)
        return runner

    def embedding(self, name: str | None = None, tenant_id: str | None = None) -> EmbeddingRunner:
        """The embedding runner for ``name`` (the default model when None); blocks like :meth:`chat`."""
        info = self.registry.get(name or self._settings.default_embedding, tenant_id)
        if info.kind not in ("embedding", "upstream"):
            raise InvalidInput(f"model {info.name!r} is a {info.kind} model, not an embedding model")
        runner = self._runner(info)
        assert isinstance(runner, LocalEmbeddingRunner | UpstreamRunner)
        return runner

    def classifier(self, name: str, tenant_id: str | None = None) -> ClassifierRunner:
        """The classifier runner for ``name`` (there is no default classifier); blocks like :meth:`chat`.

        Upstream engines offer chat and embeddings only, so only local ``classifier`` models qualify.
        """
        info = self.registry.get(name, tenant_id)
        if info.kind != "classifier":
            raise InvalidInput(f"model {info.name!r} is a {info.kind} model, not a classifier")
        runner = self._runner(info)
        assert isinstance(runner, LocalClassifierRunner)
        return runner

    async def load_chat(self, name: str | None = None, tenant_id: str | None = None) -> ChatRunner:
        """:meth:`chat` with any loading done in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.chat, name, tenant_id)

    async def load_embedding(self, name: str | None = None, tenant_id: str | None = None) -> EmbeddingRunner:
        return await asyncio.to_thread(self.embedding, name, tenant_id)

    async def load_classifier(self, name: str, tenant_id: str | None = None) -> ClassifierRunner:
        return await asyncio.to_thread(self.classifier, name, tenant_id)

    def warmup(self, name: str, tenant_id: str | None = None) -> ModelInfo:
        """Load ``name`` now (and, for SmolLM2, convert it into the store the first time)."""
        info = self.registry.get(name, tenant_id)
        self._runner(info)
        return info

    def loaded(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._runners)

    def close(self) -> None:
        """Stop every worker thread; waiting requests end with a 503. Idempotent."""
        with self._lock:
            self._closed = True
            runners = list(self._runners.values())
            self._runners.clear()
        for runner in runners:
            runner.close()

    # ---------------------------------------------------------------- loading

    def _runner(self, info: ModelInfo) -> Runner:
        with self._lock:
            if self._closed:
                raise InvalidInput("the model manager is shut down")
            found = self._runners.get(info.key)
            if found is not None:
                return found
            gate = self._loading.setdefault(info.key, threading.Lock())
        with gate:  # one loader per model; others wait for it rather than loading twice
            with self._lock:
                found = self._runners.get(info.key)
            if found is not None:
                return found
            with self._sealed_files(info) as path:  # sealed models: decrypted into memory until loaded
                runner = self._build(info, path)
                try:
                    runner.warmup()
                except BaseException:
                    runner.close()
                    raise
            with self._lock:
                if self._closed:
                    runner.close()
                    raise InvalidInput("the model manager is shut down")
                self._runners[info.key] = runner
            return runner

    def _sealed_files(self, info: ModelInfo) -> contextlib.AbstractContextManager[Path | None]:
        """A tenant-owned model's memory-backed directory (see ``models/sealed.py``); else None."""
        if not is_sealed(info.source):
            return contextlib.nullcontext()
        return self.registry.open_sealed(info)

    def _build(self, info: ModelInfo, path: Path | None = None) -> Runner:
        s = self._settings
        device = resolve_device(info.device if info.device != "auto" else s.device)
        if info.kind == "upstream":
            return UpstreamRunner(
                info.name,
                info.source,
                remote_model=info.options.get("remote_model"),
                api_key=_read_key(info.options.get("api_key_file")),
                timeout_s=s.upstream_timeout_s,
                request_timeout_s=s.request_timeout_s,
                retries=s.upstream_retries,
                max_inflight=s.max_batch + s.max_queue,
                observer=self._observer,
                transport=self._upstream_transport,
            )
        path = path or self.store.resolve(info.source)
        log.info("loading model", extra={"model": info.name, "kind": info.kind, "device": device})
        if info.kind == "chat":
            return LocalChatRunner(
                info.name,
                path,
                device=device,
                max_batch=s.max_batch,
                max_queue=s.max_queue,
                request_timeout_s=s.request_timeout_s,
                default_max_tokens=int(info.options.get("default_max_tokens", 512)),
                observer=self._observer,
            )
        batched = _TEXT_BATCH_RUNNERS.get(info.kind)
        if batched is not None:
            return batched(
                info.name,
                path,
                device=device,
                max_batch=s.embedding_max_batch,
                max_queue=s.max_queue,
                max_wait_ms=float(info.options.get("max_wait_ms", 5.0)),
                request_timeout_s=s.request_timeout_s,
                observer=self._observer,
            )
        raise NotSupportedYet(f"serving {info.kind} models is not built yet")


_TEXT_BATCH_RUNNERS: dict[str, type[LocalEmbeddingRunner | LocalClassifierRunner]] = {
    "embedding": LocalEmbeddingRunner,
    "classifier": LocalClassifierRunner,
}
"""Kinds served by one forward pass per batch of texts, built from the same settings."""


def _read_key(path: Any) -> str | None:
    """An upstream API key lives in a root-only file, never in the database."""
    if not path:
        return None
    key_file = Path(str(path))
    try:
        mode = stat.S_IMODE(key_file.stat().st_mode)
    except OSError:
        raise ConfigError(f"upstream API key file {key_file} cannot be read") from None
    if mode & 0o077:
        raise ConfigError(f"upstream API key file {key_file} has mode {mode:04o}; it must be 0600 or 0400")
    return key_file.read_text().strip() or None
