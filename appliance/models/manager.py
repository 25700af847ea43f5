"""Loads runners on first use, keeps one per model, and shuts them all down.

Resolution goes through the registry with the caller's tenant id, so a tenant can only
reach built-in, shared and its own models. Loading is blocking (seconds); async callers use
:meth:`ModelManager.load_chat` / :meth:`ModelManager.load_embedding` /
:meth:`ModelManager.load_classifier` (or warm up at start-up),
which load in a thread so the event loop keeps serving.

A loaded runner belongs to one *registration*, not just to a name: removing a model and
adding it again (a retrained classifier; a sealed model gets a new ``sealed:`` source every
time) makes the next lookup close the old runner and load the new one, also when the
registry was changed by another process (the CLI). :meth:`ModelManager.forget` unloads
a model or all of a tenant's models at once (tenant deletion), and every few seconds of
traffic a lookup also unloads runners whose registration is gone, so a model removed or a
tenant deleted elsewhere does not stay in memory while the server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from appliance.config import ModelSettings
from appliance.errors import ApplianceError, ConfigError, InvalidInput, ModelUnavailable, NotFound, NotSupportedYet
from appliance.models import llamacpp, sizing
from appliance.models.base import SERVED_BY, ChatRunner, ClassifierRunner, EmbeddingRunner, InputObserver
from appliance.models.chat import LocalChatRunner
from appliance.models.classifier import LocalClassifierRunner
from appliance.models.embeddings import LocalEmbeddingRunner
from appliance.models.llamacpp import LlamaCppChatRunner
from appliance.models.registry import SHARED, ModelInfo, ModelRegistry
from appliance.models.sampling import SamplingDefaults, resolve
from appliance.models.sealed import is_sealed
from appliance.models.store import ModelStore
from appliance.models.upstream import UpstreamRunner

T = TypeVar("T")
log = logging.getLogger(__name__)

Runner = LocalChatRunner | LlamaCppChatRunner | LocalEmbeddingRunner | LocalClassifierRunner | UpstreamRunner
ENGINES = ("auto", "torch", "llamacpp")
WEIGHTS = ("q8_0", "f16", "as-is")

RECONCILE_EVERY_S = 10.0
"""How often (at most, and only while lookups happen) loaded runners are checked against the
registry, so a model removed or a tenant deleted by another process is unloaded."""


def registration(info: ModelInfo) -> tuple[str, ...]:
    """What identifies one registration of a model: it changes when the model is removed and
    added again, even under the same name and source (``created_at`` differs; a sealed model
    also gets a new ``sealed:<id>`` source)."""
    return (
        info.owner,
        info.name,
        info.kind,
        info.source,
        info.device,
        str(info.version),
        info.created_at.isoformat() if info.created_at is not None else "",
        json.dumps(info.options, sort_keys=True, default=str),
    )


@dataclass(frozen=True)
class _Loaded:
    info: ModelInfo
    registration: tuple[str, ...]
    runner: Runner
    sampling: SamplingDefaults
    """Read while the model's files were at hand (a sealed model's exist only during its load)."""


def _registered_at(info: ModelInfo) -> datetime:
    """When ``info`` was registered (UTC-aware, as the database column returns it); built-ins: never."""
    return info.created_at if info.created_at is not None else datetime.min.replace(tzinfo=UTC)


def configure_torch_threads(threads: int | None = None) -> int:
    """Intra-op threads for forward passes: ``threads``, else half the cores (at least 1).

    Each model worker runs one forward pass at a time, and the chat worker, the embedding
    worker, PII detection and the event loop all run at once. Measured on 2 cores, a batch
    of 8 SmolLM2 decode steps took 150 ms with one thread and 190-220 ms with two from a
    worker thread (the second thread mostly waits at barriers), and two threads cost the
    request path the core it needs. Call once at start-up, before any model runs.
    """
    import torch

    n = max(1, threads or len(os.sched_getaffinity(0)) // 2)
    torch.set_num_threads(n)
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
        self._runners: dict[tuple[str, str], _Loaded] = {}
        """One per (owner, name): the runner of the registration last resolved for it."""
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, ...], threading.Lock] = {}
        self._closed = False
        self._unload_listeners: list[Callable[[Sequence[Runner]], None]] = []
        self._reconciled_at = time.monotonic()

    # ---------------------------------------------------------------- lookup

    def visible(self, tenant_id: str | None = None) -> list[ModelInfo]:
        """Built-in, shared and the tenant's own models (what ``GET /v1/models`` lists)."""
        return self.registry.list(tenant_id)

    def chat(self, name: str | None = None, tenant_id: str | None = None) -> ChatRunner:
        """The chat runner for ``name`` (the default model when None).

        Blocks while a model loads for the first time: on the event loop use
        :meth:`load_chat`, or warm the models up at start-up.
        """
        info = self._resolve(name or self._settings.default_chat, tenant_id)
        if info.kind not in SERVED_BY["chat"]:
            raise InvalidInput(f"model {info.name!r} is a {info.kind} model, not a chat model")
        runner = self._runner(info)
        assert isinstance(runner, LocalChatRunner | LlamaCppChatRunner | UpstreamRunner)
        return runner

    def embedding(self, name: str | None = None, tenant_id: str | None = None) -> EmbeddingRunner:
        """The embedding runner for ``name`` (the default model when None); blocks like :meth:`chat`."""
        info = self._resolve(name or self._settings.default_embedding, tenant_id)
        if info.kind not in SERVED_BY["embedding"]:
            raise InvalidInput(f"model {info.name!r} is a {info.kind} model, not an embedding model")
        runner = self._runner(info)
        assert isinstance(runner, LocalEmbeddingRunner | UpstreamRunner)
        return runner

    def classifier(self, name: str, tenant_id: str | None = None) -> ClassifierRunner:
        """The classifier runner for ``name`` (there is no default classifier); blocks like :meth:`chat`.

        Upstream engines offer chat and embeddings only, so only local ``classifier`` models qualify.
        """
        info = self._resolve(name, tenant_id)
        if info.kind not in SERVED_BY["classifier"]:
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
        info = self._resolve(name, tenant_id)
        self._runner(info)
        return info

    def loaded(self) -> list[tuple[str, str]]:
        """(owner, name) of every loaded runner."""
        with self._lock:
            return list(self._runners)

    def on_unload(self, listener: Callable[[Sequence[Runner]], None]) -> None:
        """Call ``listener`` with the runners this manager closes (not at :meth:`close`), so
        whoever remembers runners (the inference service) stops handing them out."""
        with self._lock:
            self._unload_listeners.append(listener)

    def forget(self, owner: str | None = None, name: str | None = None) -> list[tuple[str, str]]:
        """Close and drop the loaded runners of ``owner`` (a tenant id or ``shared``) and/or
        ``name`` (both None: all of them); the next lookup loads afresh. Requests already on a
        dropped runner finish its current step and then get its shutdown 503.

        A tenant's deletion calls this with its id, so its decrypted weights are released.
        Returns the (owner, name) pairs unloaded."""
        return self._drop_where(lambda key, _: (owner is None or key[0] == owner) and (name is None or key[1] == name))

    def reconcile(self) -> list[tuple[str, str]]:
        """Unload runners whose registration is gone or was replaced (by this process or
        another); returns the (owner, name) pairs unloaded."""
        read_at = datetime.now(UTC)
        current = {info.key: registration(info) for info in self.registry.list(all_tenants=True)}
        return self._drop_where(
            lambda key, loaded: current.get(key) != loaded.registration and _registered_at(loaded.info) < read_at
        )

    def close(self) -> None:
        """Stop every worker thread; waiting requests end with a 503. Idempotent."""
        with self._lock:
            self._closed = True
            runners = [loaded.runner for loaded in self._runners.values()]
            self._runners.clear()
        for runner in runners:
            runner.close()

    # ---------------------------------------------------------------- loading

    def _resolve(self, name: str, tenant_id: str | None) -> ModelInfo:
        """The registry's answer for ``name``; runners it shows to be stale are unloaded.

        A loaded runner of the same name that this answer no longer reaches is stale: the
        tenant's own model when the name now resolves to a shared one or to nothing, the
        shared one when the name resolves to nothing. (A replaced registration of the same
        owner is caught by :meth:`_runner`.)"""
        if self._reconcile_due():
            self.reconcile()
        read_at = datetime.now(UTC)
        try:
            info = self.registry.get(name, tenant_id)
        except NotFound:
            self._drop_if_older(name, {SHARED, tenant_id}, read_at)
            raise
        if tenant_id and info.owner != tenant_id:
            self._drop_if_older(name, {tenant_id}, read_at)
        return info

    def _reconcile_due(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._reconciled_at < RECONCILE_EVERY_S:
                return False
            self._reconciled_at = now  # one caller reconciles; the others go on
            return True

    def _drop_if_older(self, name: str, owners: set[str | None], read_at: datetime) -> None:
        self._drop_where(
            lambda key, loaded: key[1] == name and key[0] in owners and _registered_at(loaded.info) < read_at
        )

    def _drop_where(self, matches: Callable[[tuple[str, str], _Loaded], bool]) -> list[tuple[str, str]]:
        """Take the matching runners out of ``_runners`` and unload them; returns their keys."""
        with self._lock:
            keys = [key for key, loaded in self._runners.items() if matches(key, loaded)]
            dropped = [self._runners.pop(k) for k in keys]
        self._unload(dropped)
        return keys

    def _unload(self, candidates: Sequence[_Loaded | None]) -> None:
        """Close runners already taken out of ``_runners`` (never under the lock: closing
        waits for the worker's current step) and tell the listeners."""
        dropped = [loaded for loaded in candidates if loaded is not None]
        if not dropped:
            return
        for loaded in dropped:
            log.info("unloading model", extra={"model": loaded.info.name, "owner": loaded.info.owner})
            loaded.runner.close()
        with self._lock:
            listeners = list(self._unload_listeners)
        for listener in listeners:
            listener([loaded.runner for loaded in dropped])

    def _current(self, info: ModelInfo, ident: tuple[str, ...]) -> tuple[Runner | None, _Loaded | None]:
        """Under the lock: the loaded runner to serve ``info`` with, or the stale one to replace.

        Another thread may have read the registry after this one and loaded the newer
        registration already; then that one is served rather than replaced by an older one."""
        found = self._runners.get(info.key)
        if found is None:
            return None, None
        if found.registration == ident or _registered_at(found.info) > _registered_at(info):
            return found.runner, None
        return None, self._runners.pop(info.key)

    def _runner(self, info: ModelInfo) -> Runner:
        ident = registration(info)
        with self._lock:
            if self._closed:
                raise InvalidInput("the model manager is shut down")
            found, stale = self._current(info, ident)
            if found is None:
                gate = self._loading.setdefault(ident, threading.Lock())
        if found is not None:
            return found
        self._unload([stale])
        with gate:  # one loader per registration; others wait for it rather than loading twice
            with self._lock:
                found, stale = self._current(info, ident)
            self._unload([stale])
            if found is not None:
                return found
            with self._sealed_files(info) as path:  # sealed models: decrypted into memory until loaded
                if path is None and info.kind != "upstream" and self._engine(info) != "llamacpp":
                    path = self.store.resolve(info.source)  # the first use of SmolLM2 converts it here
                sampling = self._sampling(info, path)
                runner = self._loaded(info, lambda: self._build(info, path, sampling))
                try:
                    self._loaded(info, runner.warmup)
                except BaseException:
                    runner.close()
                    raise
            with self._lock:
                if self._closed:
                    runner.close()
                    raise InvalidInput("the model manager is shut down")
                found, stale = self._current(info, ident)
                if found is None:
                    self._runners[info.key] = _Loaded(info, ident, runner, sampling)
                    self._loading.pop(ident, None)
            if found is not None:  # a newer registration was loaded meanwhile
                runner.close()
                return found
            self._unload([stale])
            return runner

    @staticmethod
    def _loaded(info: ModelInfo, step: Callable[[], T]) -> T:
        """Run a loading step; a failure that is not one of ours (a file that is no model, a
        library that refuses it) becomes ModelUnavailable naming the model, so the caller gets a
        clear 503 and the log keeps the exception type (its text may name files)."""
        try:
            return step()
        except ApplianceError:
            raise
        except Exception as exc:
            log.error("model failed to load", extra={"model": info.name, "error_type": type(exc).__name__})
            raise ModelUnavailable(f"the model {info.name!r} could not be loaded; the operator's log says why") from exc

    def sampling(self, runner: object) -> SamplingDefaults:
        """The sampling defaults of a loaded chat ``runner`` (see ``models/sampling.py``);
        OpenAI's when the runner was unloaded meanwhile (its calls then end with a 503)."""
        with self._lock:
            for loaded in self._runners.values():
                if loaded.runner is runner:
                    return loaded.sampling
        return SamplingDefaults()

    def _sampling(self, info: ModelInfo, path: Path | None) -> SamplingDefaults:
        if info.kind not in SERVED_BY["chat"]:
            return SamplingDefaults()
        return resolve(info.options, None if info.kind == "upstream" else path)

    def _sealed_files(self, info: ModelInfo) -> contextlib.AbstractContextManager[Path | None]:
        """A tenant-owned model's memory-backed directory (see ``models/sealed.py``); else None."""
        if not is_sealed(info.source):
            return contextlib.nullcontext()
        return self.registry.open_sealed(info)

    def _build(self, info: ModelInfo, path: Path | None = None, sampling: SamplingDefaults | None = None) -> Runner:
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
                max_inflight=(s.max_batch or sizing.CPU_CHAT[0]) + (s.max_queue or sizing.CPU_CHAT[1]),
                observer=self._observer,
                transport=self._upstream_transport,
            )
        if info.kind == "chat":
            return self._chat_runner(info, device, path, sampling or SamplingDefaults())
        path = path or self.store.resolve(info.source)
        log.info("loading model", extra={"model": info.name, "kind": info.kind, "device": device})
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

    def _engine(self, info: ModelInfo) -> str | None:
        """The engine that will serve a chat model (None for other kinds); see :func:`chat_engine`.

        A GGUF model served by llama.cpp is never converted (that takes seconds and disk)."""
        if info.kind != "chat":
            return None
        s = self._settings
        device = resolve_device(info.device if info.device != "auto" else s.device)
        gguf = self.store.gguf_file(info.source)
        return chat_engine(info.options.get("engine", s.chat_engine), device=device, gguf=gguf)

    def _chat_runner(
        self, info: ModelInfo, device: str, path: Path | None, sampling: SamplingDefaults
    ) -> LocalChatRunner | LlamaCppChatRunner:
        """llama.cpp or torch, by :func:`chat_engine`; a GGUF served by torch is converted first."""
        s = self._settings
        gguf = self.store.gguf_file(info.source)
        engine = self._engine(info)
        default_max_tokens = sampling.max_tokens
        max_context = info.options.get("max_context")
        log.info("loading model", extra={"model": info.name, "kind": "chat", "device": device, "engine": engine})
        if engine == "llamacpp":
            assert gguf is not None
            weights = info.options.get("llamacpp_weights", s.llamacpp_weights)
            if weights not in WEIGHTS:
                raise InvalidInput(f"llamacpp_weights must be one of {', '.join(WEIGHTS)}")
            return LlamaCppChatRunner(
                info.name,
                self.store.gguf_as(gguf, weights),
                threads=s.llamacpp_threads or None,
                max_batch=s.max_batch or sizing.CPU_CHAT[0],
                max_queue=s.max_queue or sizing.CPU_CHAT[1],
                request_timeout_s=s.request_timeout_s,
                default_max_tokens=default_max_tokens,
                observer=self._observer,
                max_context=int(max_context) if max_context else None,
            )
        return LocalChatRunner(
            info.name,
            path or self.store.resolve(info.source),
            device=device,
            max_batch=s.max_batch,
            max_queue=s.max_queue,
            request_timeout_s=s.request_timeout_s,
            default_max_tokens=default_max_tokens,
            observer=self._observer,
            dtype=sizing.parse_dtype(s.dtype),
            cuda_graphs=s.cuda_graphs,
            max_context=int(max_context) if max_context else None,
        )


def chat_engine(wanted: Any, *, device: str, gguf: Path | None) -> str:
    """Which engine serves a chat model: ``wanted`` (the model option ``engine``, else the
    setting ``models.chat_engine``) unless it is ``auto``, which picks llama.cpp for a GGUF
    model on a CPU when the ``llamacpp`` extra is installed, and torch otherwise."""
    if wanted not in ENGINES:
        raise InvalidInput(f"engine must be one of {', '.join(ENGINES)}")
    if wanted == "llamacpp":
        if gguf is None:
            raise ConfigError("the llamacpp engine serves GGUF models only; this model is a Hugging Face directory")
        if not device.startswith("cpu"):
            raise ConfigError("the llamacpp engine is built for the CPU; use device cpu or the torch engine")
        if not llamacpp.available():
            raise ConfigError("the llamacpp engine needs the optional extra: pip install -e '.[llamacpp]'")
        return "llamacpp"
    if wanted == "torch":
        return "torch"
    return "llamacpp" if gguf is not None and device.startswith("cpu") and llamacpp.available() else "torch"


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
