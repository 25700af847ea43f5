"""Dynamic batching for local models that map each text to one output (embeddings, classifiers).

Requests that arrive within ``max_wait_ms`` of each other are merged into one forward pass
of up to ``max_batch`` texts (sorted by length, so padding stays small); a request larger
than one batch is split across passes and reassembled in order. One worker thread owns the
model; callers on any event loop await a future. A full queue is ``Overloaded`` (429), a
call past ``request_timeout_s`` a ``GenerationTimeout`` (503), and a caller that gives up
(timeout, disconnect) is dropped from the queue before its texts reach the model.

Subclasses supply three things: :meth:`_load` (build the model, blocking),
:meth:`_forward_texts` (one forward pass: an output and a token count per text) and
:meth:`_result` (assemble one caller's answer).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import torch

from appliance.errors import InvalidInput, Overloaded
from appliance.models import sizing
from appliance.models.base import GenerationTimeout, InputObserver, ModelInput, RunnerStats, WorkerThreadRunner

log = logging.getLogger(__name__)

Output = TypeVar("Output")
"""What the model yields for one text (a vector, a row of label scores)."""
Result = TypeVar("Result")
"""What one caller gets back for all its texts."""


@dataclass(eq=False)
class _Job(Generic[Output, Result]):
    texts: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Result]
    outputs: list[Output | None]
    tokens: list[int]
    next_index: int = 0
    """Texts before this index are already in a batch (large jobs span several)."""
    done: int = 0
    cancelled: bool = False

    def settle(self, result: Result | BaseException) -> None:
        def apply() -> None:
            if self.future.done():
                return
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)

        try:
            self.loop.call_soon_threadsafe(apply)
        except RuntimeError:  # the caller's loop is gone: nobody waits any more
            self.cancelled = True


class BatchedTextRunner(WorkerThreadRunner, ABC, Generic[Output, Result]):
    """The queue, worker thread and per-caller bookkeeping shared by the text runners."""

    kind: Literal["embedding", "classifier"]

    def __init__(
        self,
        name: str,
        model_dir: Path,
        *,
        device: str = "cpu",
        max_batch: int | None = 64,
        max_queue: int | None = 64,
        max_wait_ms: float = 5.0,
        request_timeout_s: float = 120.0,
        observer: InputObserver | None = None,
    ) -> None:
        self.name = name
        self._dir = model_dir
        self._device = device
        derived = sizing.text_limits(torch.device(device).type)  # for what the caller left unset
        self._max_batch = max_batch or derived[0]
        self._max_queue = max_queue or derived[1]
        self._max_wait_s = max_wait_ms / 1000
        self._timeout_s = request_timeout_s
        self._observer = observer
        self._loaded = False
        self._load_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: collections.deque[_Job[Output, Result]] = collections.deque()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stats = RunnerStats()

    # ---------------------------------------------------------------- what subclasses supply

    @abstractmethod
    def _load(self) -> None:
        """Build the model from ``self._dir`` on ``self._device`` and run it once (blocking)."""

    @abstractmethod
    def _forward_texts(self, texts: list[str]) -> tuple[Sequence[Output], Sequence[int]]:
        """One forward pass on the worker thread: an output and a token count per text."""

    @abstractmethod
    def _result(self, outputs: list[Output], tokens: list[int]) -> Result:
        """One caller's answer, its texts' outputs and token counts in the order it sent them."""

    # ---------------------------------------------------------------- callers

    def warmup(self) -> None:
        """Load the model and start the worker (blocking; a no-op once loaded)."""
        with self._load_lock:
            if self._loaded:
                return
            if self._closed:
                raise Overloaded("model is shutting down", status=503)
            self._load()
            self._loaded = True
            self._thread = threading.Thread(target=self._run, name=f"{self.kind}-{self.name}", daemon=True)
            self._thread.start()

    async def _submit(self, texts: Sequence[str]) -> Result:
        items = list(texts)
        if not items:
            raise InvalidInput("input must hold at least one text")
        if any(not isinstance(t, str) for t in items):
            raise InvalidInput("input must be a string or a list of strings")
        self.warmup()
        loop = asyncio.get_running_loop()
        job: _Job[Output, Result] = _Job(items, loop, loop.create_future(), [None] * len(items), [0] * len(items))
        if self._observer is not None:
            self._observer(ModelInput(self.name, self.kind, tuple(items)))
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

    def _take_batch(self) -> list[tuple[_Job[Output, Result], int]] | None:
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
            batch: list[tuple[_Job[Output, Result], int]] = []
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
                    log.exception("%s model %s failed a batch", self.kind, self.name)
                    for job in {job for job, _ in batch}:
                        job.cancelled = True
                        job.settle(exc)
        shutdown = Overloaded("model is shutting down", status=503)
        with self._cond:
            leftover = list(self._pending)
            self._pending.clear()
        for job in leftover:
            job.settle(shutdown)

    def _forward(self, batch: list[tuple[_Job[Output, Result], int]]) -> None:
        order = sorted(range(len(batch)), key=lambda i: len(batch[i][0].texts[batch[i][1]]))
        outputs, tokens = self._forward_texts([batch[i][0].texts[batch[i][1]] for i in order])
        with self._cond:
            self._stats.forward_passes += 1
            self._stats.batch_sizes[len(order)] = self._stats.batch_sizes.get(len(order), 0) + 1
            self._stats.max_batch_seen = max(self._stats.max_batch_seen, len(order))
        for position, i in enumerate(order):
            job, index = batch[i]
            job.outputs[index] = outputs[position]
            job.tokens[index] = int(tokens[position])
            job.done += 1
        for job in {job for job, _ in batch}:
            if not job.cancelled and job.done == len(job.texts):
                job.settle(self._result([o for o in job.outputs if o is not None], job.tokens))

    def _to_device(self, features: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self._device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
