"""The short-lived caches on the request path (API key checks, the tenant's active policy):
a change made in this process takes effect on the next request, a change made by another
API node sharing the database within the cache's time to live, and never later."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from appliance.db.base import utcnow
from appliance.errors import AuthenticationFailed
from appliance.roles import Role
from appliance.services.api_keys import ApiKeyService
from appliance.services.container import Services
from appliance.services.policies import PolicyService
from appliance.services.principal import Principal
from appliance.services.ttl_cache import TtlCache

OPERATOR = Principal.local_operator()
STRICT = "extends: default\npii:\n  default_action: redact\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _app_key(services: Services, tenant: str = "acme") -> str:
    services.tenants.create(OPERATOR, tenant)
    return services.api_keys.create(OPERATOR, role=Role.APP, name="app", tenant=tenant).api_key


def _key_id(token: str) -> str:
    return token.split("_")[1]


def test_a_key_revoked_in_this_process_is_refused_on_the_next_request(services: Services) -> None:
    key = _app_key(services)
    assert services.api_keys.authenticate(key).role is Role.APP  # now remembered
    services.api_keys.revoke(OPERATOR, _key_id(key))
    with pytest.raises(AuthenticationFailed):
        services.api_keys.authenticate(key)


def test_a_key_revoked_by_another_node_is_refused_within_the_ttl(services: Services) -> None:
    key = _app_key(services)
    clock = Clock()
    here = ApiKeyService(services.sessions, services.data_keys, services.audit, cache_ttl_s=5, clock=clock)
    other_node = ApiKeyService(services.sessions, services.data_keys, services.audit)
    here.authenticate(key)
    other_node.revoke(OPERATOR, _key_id(key))
    clock.now += 4.9
    assert here.authenticate(key).key_id == _key_id(key)  # the documented window
    clock.now += 0.2
    with pytest.raises(AuthenticationFailed):
        here.authenticate(key)


def test_with_ttl_zero_every_request_reads_the_database(services: Services) -> None:
    key = _app_key(services)
    here = ApiKeyService(services.sessions, services.data_keys, services.audit, cache_ttl_s=0)
    here.authenticate(key)
    services.api_keys.revoke(OPERATOR, _key_id(key))
    with pytest.raises(AuthenticationFailed):
        here.authenticate(key)


def test_a_remembered_key_still_expires_on_time(services: Services) -> None:
    services.tenants.create(OPERATOR, "acme")
    key = services.api_keys.create(
        OPERATOR, role=Role.APP, name="brief", tenant="acme", expires_at=utcnow() + timedelta(seconds=1)
    ).api_key
    services.api_keys.authenticate(key)
    time.sleep(1.1)
    with pytest.raises(AuthenticationFailed):
        services.api_keys.authenticate(key)


def test_keys_of_a_deleted_tenant_are_refused_at_once(services: Services) -> None:
    key = _app_key(services, "doomed")
    services.api_keys.authenticate(key)
    services.tenants.delete(OPERATOR, "doomed")
    with pytest.raises(AuthenticationFailed):
        services.api_keys.authenticate(key)


def test_failures_are_not_remembered(services: Services) -> None:
    key = _app_key(services)
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            services.api_keys.authenticate(wrong)
    assert services.api_keys.authenticate(key).key_id == _key_id(key)


def test_a_policy_applied_in_this_process_governs_the_next_request(services: Services) -> None:
    tenant_id = services.tenants.create(OPERATOR, "acme").id
    assert services.policies.effective(tenant_id).version is None  # remembered: the default
    services.policies.apply(OPERATOR, "acme", STRICT, "strict")
    active = services.policies.effective(tenant_id)
    assert active.version == 1 and active.policy.pii.default_action.value == "redact"


def test_a_policy_applied_by_another_node_governs_requests_here_within_the_ttl(services: Services) -> None:
    tenant_id = services.tenants.create(OPERATOR, "acme").id
    clock = Clock()
    here = PolicyService(services.sessions, services.cipher, services.audit, cache_ttl_s=5, clock=clock)
    other_node = PolicyService(services.sessions, services.cipher, services.audit)
    assert here.effective(tenant_id).version is None
    other_node.apply(OPERATOR, "acme", STRICT, "strict")
    clock.now += 4.9
    assert here.effective(tenant_id).version is None  # the documented window
    clock.now += 0.2
    assert here.effective(tenant_id).version == 1


def test_with_server_cache_ttl_zero_another_node_sees_revocations_and_policies_at_once(services: Services) -> None:
    server = services.settings.server.model_copy(update={"cache_ttl_s": 0.0})
    node = Services(services.settings.model_copy(update={"server": server}), services.keyring)
    try:
        key = _app_key(services)
        tenant_id = services.tenants.get(OPERATOR, "acme").id
        node.api_keys.authenticate(key)
        assert node.policies.effective(tenant_id).version is None
        services.api_keys.revoke(OPERATOR, _key_id(key))
        services.policies.apply(OPERATOR, "acme", STRICT, "strict")
        with pytest.raises(AuthenticationFailed):
            node.api_keys.authenticate(key)
        assert node.policies.effective(tenant_id).version == 1
    finally:
        node.close()


def test_ttl_cache_is_bounded_and_forgets_on_request() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(5, max_entries=3, clock=clock)
    for i in range(5):
        cache.put(f"k{i}", i)
    assert len(cache) == 3 and cache.get("k0") is None and cache.get("k4") == 4
    generation = cache.generation
    cache.discard("k4")
    cache.put("k4", 44, generation)  # loaded before the discard: not stored
    assert cache.get("k4") is None
    cache.discard_where(lambda _, v: v == 3)
    assert cache.get("k3") is None and cache.get("k2") == 2
    clock.now += 5
    assert cache.get("k2") is None
