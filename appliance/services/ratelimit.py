"""Per-tenant request rate limits from the tenant policy (``limits.requests_per_minute``).

A token bucket per tenant in this process: bursts up to a minute's allowance, refilled
continuously. With several API nodes each enforces the limit on its own share of traffic;
the load balancer's spread makes the cluster-wide rate at most nodes x limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from appliance.errors import Overloaded


class TenantRateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, last refill)
        self._lock = threading.Lock()

    def check(self, tenant_id: str, per_minute: int) -> None:
        """Take one token or raise Overloaded (429) with the seconds until the next one."""
        now = self._clock()
        rate = per_minute / 60.0
        with self._lock:
            tokens, last = self._buckets.get(tenant_id, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[tenant_id] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / rate)
                raise Overloaded(f"tenant rate limit of {per_minute} requests per minute reached", retry_after_s=wait)
            self._buckets[tenant_id] = (tokens - 1.0, now)
