"""Group commit for the audit entries of concurrent model calls.

Every model call appends one entry and must not answer before that entry is committed.
Appends are serialized by the chain lock, so one transaction per request makes the audit
trail the bottleneck under load. Here one writer thread takes every entry waiting when it
comes free and appends them with :meth:`AuditLog.record_many` in one transaction; each
caller's ``await`` returns only after the commit that holds its entry, and raises
:class:`AuditUnavailable` when that commit fails. A lone entry is written at once (no
artificial wait); entries that arrive during a commit form the next group. The chain is
the same as with one transaction per entry.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from appliance.errors import AuditUnavailable
from appliance.services import metrics
from appliance.services.audit import AuditLog, PreparedEntry

DEFAULT_MAX_GROUP = 256
DEFAULT_MAX_QUEUE = 4096


@dataclass(eq=False)
class _Waiter:
    entry: PreparedEntry
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[int]

    def settle(self, outcome: int | BaseException) -> None:
        def apply() -> None:
            if self.future.done():
                return
            if isinstance(outcome, BaseException):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)

        with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody waits any more
            self.loop.call_soon_threadsafe(apply)


class AuditWriter:
    """``await record(...)``: :meth:`AuditLog.record` for async callers, group-committed."""

    def __init__(
        self, audit: AuditLog, *, max_group: int = DEFAULT_MAX_GROUP, max_queue: int = DEFAULT_MAX_QUEUE
    ) -> None:
        if max_group < 1 or max_queue < 1:
            raise ValueError("max_group and max_queue must be at least 1")
        self._audit = audit
        self._max_group = max_group
        self._max_queue = max_queue
        self._cond = threading.Condition()
        self._pending: collections.deque[_Waiter] = collections.deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.commits = 0
        """How many transactions were written (for tests and the benchmark)."""
        self.entries = 0

    async def record(self, action: str, **fields: Any) -> int:
        """The entry's id once committed; arguments as :meth:`AuditLog.record` (no ``session``).
        Raises ValueError at once for a malformed entry, AuditUnavailable if it cannot be written."""
        entry = self._audit.prepare(action, **fields)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(entry, loop, loop.create_future())
        with self._cond:
            if self._closed:
                raise AuditUnavailable("the audit writer is shutting down, so the action was not carried out")
            if len(self._pending) >= self._max_queue:
                raise AuditUnavailable("the audit trail is backlogged, so the action was not carried out")
            self._pending.append(waiter)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()
            self._cond.notify()
        # Shielded: a caller that goes away still gets its entry written (or failed) in order.
        return await asyncio.shield(waiter.future)

    def close(self) -> None:
        """Write what is waiting, then stop."""
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
            n = min(len(self._pending), self._max_group)
            return [self._pending.popleft() for _ in range(n)]

    def _run(self) -> None:
        while (group := self._take()) is not None:
            for waiter, outcome in zip(group, self._write(group), strict=True):
                waiter.settle(outcome)

    def _write(self, group: list[_Waiter]) -> list[int | BaseException]:
        try:
            ids = self._audit.record_many([w.entry for w in group])
        except Exception as exc:  # noqa: BLE001 - reported to the callers below
            if len(group) == 1:
                return [_unavailable(exc)]
            # Nothing of the group was committed: one entry that cannot be written (say, its
            # tenant's key is gone) must not fail the others, so write each on its own.
            return [item for w in group for item in self._write([w])]
        self.commits += 1
        self.entries += len(ids)
        metrics.BATCH_SIZE.labels("audit").observe(len(ids))
        return list(ids)


def _unavailable(exc: Exception) -> AuditUnavailable:
    if isinstance(exc, AuditUnavailable):
        return exc
    return AuditUnavailable("the audit trail could not be written, so the action was not carried out")
