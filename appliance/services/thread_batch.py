"""One worker thread that serves async callers in groups: the shared plumbing of the
privacy batcher and the audit group commit.

Callers on any event loop submit an item and await a future; the worker takes every item
waiting when it comes free (up to ``max_group``), hands the group to :meth:`_process`, and
settles each caller's future on that caller's loop. A lone item starts at once; with
``max_wait_s`` the worker lingers for more only while the previous group held several
(the server is busy), so groups grow with load and a quiet server adds no latency.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(eq=False)
class _Waiter(Generic[Item, Result]):
    item: Item
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Result]

    def settle(self, outcome: Result | BaseException) -> None:
        def apply() -> None:
            if self.future.done():
                return
            if isinstance(outcome, BaseException):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)

        with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody waits any more
            self.loop.call_soon_threadsafe(apply)


class ThreadBatcher(ABC, Generic[Item, Result]):
    def __init__(self, name: str, *, max_group: int, max_queue: int, max_wait_s: float = 0.0) -> None:
        if max_group < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_group and max_queue must be at least 1, the wait not negative")
        self._name = name
        self._max_group = max_group
        self._max_queue = max_queue
        self._max_wait_s = max_wait_s
        self._last_group = 0
        self._cond = threading.Condition()
        self._pending: collections.deque[_Waiter[Item, Result]] = collections.deque()
        self._thread: threading.Thread | None = None
        self._closed = False

    @abstractmethod
    def _process(self, items: list[Item]) -> list[Result | BaseException]:
        """One outcome per item, in order; runs on the worker thread."""

    @abstractmethod
    def _refused(self, waiting: int | None) -> Exception:
        """What a caller gets when the queue is full (``waiting`` items) or closing (None)."""

    async def _submit(self, item: Item, *, shield: bool = False) -> Result:
        """``shield``: a caller that goes away still has its item processed (in order)."""
        loop = asyncio.get_running_loop()
        waiter: _Waiter[Item, Result] = _Waiter(item, loop, loop.create_future())
        with self._cond:
            if self._closed:
                raise self._refused(None)
            if len(self._pending) >= self._max_queue:
                raise self._refused(len(self._pending))
            self._pending.append(waiter)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return await (asyncio.shield(waiter.future) if shield else waiter.future)

    def close(self) -> None:
        """Process what is waiting, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)

    def _take(self) -> list[_Waiter[Item, Result]] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            if self._last_group > 1 and self._max_wait_s > 0:  # busy: let the group fill a little
                deadline = time.monotonic() + self._max_wait_s
                while len(self._pending) < self._max_group and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            n = min(len(self._pending), self._max_group)
            self._last_group = n
            return [self._pending.popleft() for _ in range(n)]

    def _run(self) -> None:
        while (group := self._take()) is not None:
            live = [w for w in group if not w.future.cancelled()]
            if live:
                for waiter, outcome in zip(live, self._process([w.item for w in live]), strict=True):
                    waiter.settle(outcome)
