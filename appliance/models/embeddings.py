"""A local sentence-embedding model with dynamic batching.

Requests that arrive within ``max_wait_ms`` of each other are merged into one forward pass
of up to ``max_batch`` texts (sorted by length, so padding stays small); a request larger
than one batch is split. One worker thread owns the model; callers await a future.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from appliance.errors import InvalidInput, Overloaded
from appliance.models.base import EmbeddingResult, GenerationTimeout, InputObserver, ModelInput, RunnerStats

log = logging.getLogger(__name__)


def encode_base64(vector: Sequence[float]) -> str:
    """OpenAI's ``encoding_format: base64``: float32 little-endian bytes, base64-encoded."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_base64(data: str) -> list[float]:
    return [float(x) for x in np.frombuffer(base64.b64decode(data), dtype="<f4")]


@dataclass(eq=False)
class _Job:
    texts: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[EmbeddingResult]
    vectors: list[list[float] | None]
    tokens: int = 0
    next_index: int = 0
    """Texts before this index are already in a batch (large jobs span several)."""
    cancelled: bool = False

    def settle(self, result: EmbeddingResult | BaseException) -> None:
        def apply() -> None:
            if self.future.done():
                return
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)

        try:
            self.loop.call_soon_threadsafe(apply)
        except RuntimeError:
            self.cancelled = True


class LocalEmbeddingRunner:
    kind = "embedding"

    def __init__(
        self,
        name: str,
        model_dir: Path,
        *,
        device: str = "cpu",
        max_batch: int = 64,
        max_queue: int = 64,
        max_wait_ms: float = 5.0,
        request_timeout_s: float = 120.0,
        observer: InputObserver | None = None,
    ) -> None:
        self.name = name
        self._dir = model_dir
        self._device = device
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._max_wait_s = max_wait_ms / 1000
        self._timeout_s = request_timeout_s
        self._observer = observer
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: collections.deque[_Job] = collections.deque()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stats = RunnerStats()
        self.dimensions = 0

    def warmup(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            if self._closed:
                raise Overloaded("model is shutting down", status=503)
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(self._dir), device=self._device, local_files_only=True)
            model.eval()
            self.dimensions = int(model.get_embedding_dimension() or 0)
            with torch.inference_mode():
                model(self._to_device(model.preprocess(["warm up"])))
            self._model = model
            self._thread = threading.Thread(target=self._run, name=f"embed-{self.name}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def stats(self) -> RunnerStats:
        with self._cond:
            return replace(self._stats, batch_sizes=dict(self._stats.batch_sizes))

    async def embed(self, texts: Sequence[str]) -> EmbeddingResult:
        items = list(texts)
        if not items:
            raise InvalidInput("input must hold at least one text")
        if any(not isinstance(t, str) for t in items):
            raise InvalidInput("input must be a string or a list of strings")
        self.warmup()
        loop = asyncio.get_running_loop()
        job = _Job(items, loop, loop.create_future(), [None] * len(items))
        if self._observer is not None:
            self._observer(ModelInput(self.name, "embedding", tuple(items)))
        with self._cond:
            if self._closed:
                raise Overloaded("model is shutting down", status=503)
            if len(self._pending) >= self._max_queue:
                raise Overloaded(f"model {self.name!r} has {len(self._pending)} requests waiting; retry later")
            self._pending.append(job)
            self._stats.requests += 1
            self._cond.notify()
        try:
            async with asyncio.timeout(self._timeout_s):  # not wait_for: see LocalChatRunner.stream
                return await asyncio.shield(job.future)
        except TimeoutError:
            raise GenerationTimeout(self._timeout_s) from None
        finally:
            if not job.future.done():
                job.cancelled = True
                with self._cond:
                    if job in self._pending and job.next_index == 0:
                        self._pending.remove(job)

    # ---------------------------------------------------------------- worker thread

    def _take_batch(self) -> list[tuple[_Job, int]] | None:
        """Wait for work, linger briefly for more, then take up to ``max_batch`` texts."""
        with self._cond:
            while not self._closed and not self._pending:
                self._cond.wait()
            if self._closed:
                return None
            deadline = time.monotonic() + self._max_wait_s
            while not self._closed:
                waiting = sum(len(j.texts) - j.next_index for j in self._pending)
                left = deadline - time.monotonic()
                if waiting >= self._max_batch or left <= 0:
                    break
                self._cond.wait(left)
            batch: list[tuple[_Job, int]] = []
            while self._pending and len(batch) < self._max_batch:
                job = self._pending[0]
                if job.cancelled:
                    self._pending.popleft()
                    continue
                take = min(len(job.texts) - job.next_index, self._max_batch - len(batch))
                batch.extend((job, job.next_index + i) for i in range(take))
                job.next_index += take
                if job.next_index == len(job.texts):
                    self._pending.popleft()
            return batch

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                batch = self._take_batch()
                if batch is None:
                    break
                if not batch:
                    continue
                try:
                    self._forward(batch)
                except Exception as exc:
                    log.exception("embedding model %s failed a batch", self.name)
                    for job in {job for job, _ in batch}:
                        job.cancelled = True
                        job.settle(exc)
        shutdown = Overloaded("model is shutting down", status=503)
        with self._cond:
            leftover = list(self._pending)
            self._pending.clear()
        for job in leftover:
            job.settle(shutdown)

    def _forward(self, batch: list[tuple[_Job, int]]) -> None:
        order = sorted(range(len(batch)), key=lambda i: len(batch[i][0].texts[batch[i][1]]))
        texts = [batch[i][0].texts[batch[i][1]] for i in order]
        features = self._to_device(self._model.preprocess(texts))
        vectors = self._model(features)["sentence_embedding"].float().cpu().tolist()
        tokens = features["attention_mask"].sum(dim=1).tolist()
        with self._cond:
            self._stats.forward_passes += 1
            self._stats.batch_sizes[len(texts)] = self._stats.batch_sizes.get(len(texts), 0) + 1
            self._stats.max_batch_seen = max(self._stats.max_batch_seen, len(texts))
        for position, i in enumerate(order):
            job, index = batch[i]
            job.vectors[index] = vectors[position]
            job.tokens += int(tokens[position])
        for job in {job for job, _ in batch}:
            if not job.cancelled and all(v is not None for v in job.vectors):
                job.settle(EmbeddingResult([v for v in job.vectors if v is not None], job.tokens))

    def _to_device(self, features: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self._device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
