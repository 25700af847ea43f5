from __future__ import annotations

import pytest

from appliance.errors import Overloaded
from appliance.services.ratelimit import TenantRateLimiter


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_up_to_the_minute_allowance_then_429_with_retry_after() -> None:
    clock = _Clock()
    limiter = TenantRateLimiter(clock)
    for _ in range(3):
        limiter.check("t", 3)
    with pytest.raises(Overloaded) as info:
        limiter.check("t", 3)
    assert info.value.status == 429
    assert info.value.retry_after_s == 20
    clock.now += 20
    limiter.check("t", 3)


def test_tenants_have_separate_buckets() -> None:
    limiter = TenantRateLimiter(_Clock())
    limiter.check("a", 1)
    limiter.check("b", 1)
    with pytest.raises(Overloaded):
        limiter.check("a", 1)
