"""Ingress anonymization for concurrent model calls, batched.

Under load most of a small model call's CPU goes to PII detection, and spaCy costs about
half as much per text in a batch of 32 as alone. One worker thread takes every request
waiting when it comes free and runs them through
:meth:`PrivacyService.anonymize_many` (one spaCy pass per distinct rule set; each request
keeps its own outcome, pseudonym scope and name propagation). A lone request starts at
once; only when the previous batch held several requests (the server is busy) does the
worker linger up to ``max_wait_ms`` for more, so batches grow with the load and a quiet
server adds no latency.

Callers on any event loop await a future; the worker settles it on that loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from dataclasses import dataclass

from appliance.errors import Overloaded
from appliance.services import metrics
from appliance.services.privacy import AnonymizeCall, Anonymized, PrivacyService

DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_QUEUE = 1024
DEFAULT_MAX_WAIT_MS = 20.0


@dataclass(eq=False)
class _Waiter:
    call: AnonymizeCall
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Anonymized]

    def settle(self, outcome: Anonymized | Exception) -> None:
        def apply() -> None:
            if self.future.done():
                return
            if isinstance(outcome, Exception):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)

        with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody waits any more
            self.loop.call_soon_threadsafe(apply)


class AnonymizeBatcher:
    """``await anonymize(call)`` behaves as ``privacy.anonymize`` in a thread, batched with
    whatever other calls are waiting. ``max_queue`` bounds the waiting calls (503 beyond)."""

    def __init__(
        self,
        privacy: PrivacyService,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be at least 1, max_wait_ms not negative")
        self._privacy = privacy
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._max_wait_s = max_wait_ms / 1000
        self._last_batch = 0
        self._cond = threading.Condition()
        self._pending: collections.deque[_Waiter] = collections.deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0
        """How many ``anonymize_many`` passes ran (for tests and the benchmark)."""
        self.calls = 0

    async def anonymize(self, call: AnonymizeCall) -> Anonymized:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(call, loop, loop.create_future())
        with self._cond:
            if self._closed:
                raise Overloaded("the privacy step is shutting down", status=503)
            if len(self._pending) >= self._max_queue:
                raise Overloaded(f"{len(self._pending)} requests wait for the privacy step; retry later", status=503)
            self._pending.append(waiter)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="privacy-batch", daemon=True)
                self._thread.start()
            self._cond.notify()
        return await waiter.future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)

    def _take(self) -> list[_Waiter] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            if self._last_batch > 1:  # busy: let the batch fill a little
                deadline = time.monotonic() + self._max_wait_s
                while len(self._pending) < self._max_batch and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            n = min(len(self._pending), self._max_batch)
            self._last_batch = n
            return [self._pending.popleft() for _ in range(n)]

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            live = [w for w in batch if not w.future.cancelled()]
            if not live:
                continue
            try:
                outcomes = self._privacy.anonymize_many([w.call for w in live])
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
                outcomes = [exc] * len(live)
            self.batches += 1
            self.calls += len(live)
            metrics.BATCH_SIZE.labels("privacy").observe(len(live))
            for waiter, outcome in zip(live, outcomes, strict=True):
                waiter.settle(outcome)
