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

from typing import Unpack

from appliance.errors import AuditOutcomeUnknown, AuditUnavailable
from appliance.services import metrics
from appliance.services.audit import AuditLog, EntryFields, PreparedEntry
from appliance.services.principal import Principal
from appliance.services.thread_batch import ThreadBatcher

DEFAULT_MAX_GROUP = 256
DEFAULT_MAX_QUEUE = 4096


class AuditWriter(ThreadBatcher[PreparedEntry, int]):
    """``await record(...)``: :meth:`AuditLog.record` for async callers, group-committed."""

    def __init__(
        self, audit: AuditLog, *, max_group: int = DEFAULT_MAX_GROUP, max_queue: int = DEFAULT_MAX_QUEUE
    ) -> None:
        super().__init__("audit-writer", max_group=max_group, max_queue=max_queue)
        self._audit = audit
        self.commits = 0
        """How many transactions were written (for tests and the benchmark)."""
        self.entries = 0

    async def record(self, action: str, *, actor: Principal | str, **fields: Unpack[EntryFields]) -> int:
        """The entry's id once committed; arguments as :meth:`AuditLog.record` (no ``session``).
        Raises ValueError at once for a malformed entry, AuditUnavailable if it cannot be written."""
        entry = self._audit.prepare(action, actor=actor, **fields)
        # Shielded: a caller that goes away still gets its entry written (or failed) in order.
        return await self._submit(entry, shield=True)

    def _refused(self, waiting: int | None) -> Exception:
        if waiting is None:
            return AuditUnavailable("the audit writer is shutting down, so the action was not carried out")
        return AuditUnavailable("the audit trail is backlogged, so the action was not carried out")

    def _process(self, items: list[PreparedEntry]) -> list[int | BaseException]:
        try:
            ids = self._audit.record_many(items)
        except Exception as exc:  # noqa: BLE001 - reported to the callers
            if len(items) == 1 or isinstance(exc, AuditOutcomeUnknown):  # the group may be in: never write it again
                return [_unavailable(exc)] * len(items)
            # Nothing of the group was committed: one entry that cannot be written (say, its
            # tenant's key is gone) must not fail the others, so write each on its own.
            return [item for entry in items for item in self._process([entry])]
        self.commits += 1
        self.entries += len(ids)
        metrics.BATCH_SIZE.labels("audit").observe(len(ids))
        return list(ids)


def _unavailable(exc: Exception) -> AuditUnavailable:
    if isinstance(exc, AuditUnavailable):
        return exc
    return AuditUnavailable("the audit trail could not be written, so the action was not carried out")
