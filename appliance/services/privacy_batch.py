"""Ingress anonymization for concurrent model calls, batched.

Under load most of a small model call's CPU goes to PII detection, and spaCy costs about
half as much per text in a batch of 32 as alone. One worker thread takes every request
waiting when it comes free and runs them through
:meth:`PrivacyService.anonymize_many` (one spaCy pass per distinct rule set; each request
keeps its own outcome, pseudonym scope and name propagation). A lone request starts at
once; only when the previous batch held several requests (the server is busy) does the
worker linger up to ``max_wait_ms`` for more, so batches grow with the load and a quiet
server adds no latency.

The queue, the worker thread and the callers' futures are :class:`ThreadBatcher`'s.
"""

from __future__ import annotations

from appliance.errors import Overloaded
from appliance.services import metrics
from appliance.services.privacy import AnonymizeCall, Anonymized, PrivacyService
from appliance.services.thread_batch import ThreadBatcher

DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_QUEUE = 1024
DEFAULT_MAX_WAIT_MS = 20.0


class AnonymizeBatcher(ThreadBatcher[AnonymizeCall, Anonymized]):
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
        super().__init__("privacy-batch", max_group=max_batch, max_queue=max_queue, max_wait_s=max_wait_ms / 1000)
        self._privacy = privacy
        self.batches = 0
        """How many ``anonymize_many`` passes ran (for tests and the benchmark)."""
        self.calls = 0

    async def anonymize(self, call: AnonymizeCall) -> Anonymized:
        return await self._submit(call)

    def _refused(self, waiting: int | None) -> Exception:
        if waiting is None:
            return Overloaded("the privacy step is shutting down", status=503)
        return Overloaded(f"{waiting} requests wait for the privacy step; retry later", status=503)

    def _process(self, items: list[AnonymizeCall]) -> list[Anonymized | BaseException]:
        try:
            outcomes: list[Anonymized | BaseException] = list(self._privacy.anonymize_many(items))
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
            outcomes = [exc] * len(items)
        self.batches += 1
        self.calls += len(items)
        metrics.BATCH_SIZE.labels("privacy").observe(len(items))
        return outcomes
