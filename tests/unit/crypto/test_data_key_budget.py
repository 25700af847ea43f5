"""The nonce budget a process reserves follows a rotation within its TTL, and refreshing it
while the version is unchanged is a read (no write lock, no extra reservation)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import select, update

from appliance.crypto.data_keys import DataKeyService
from appliance.crypto.records import DATA_PURPOSE, TenantCipher
from appliance.db.engine import transaction
from appliance.db.models import DataKey, Tenant
from appliance.services.container import Services
from appliance.services.principal import Principal


def _encryptions(services: Services, tenant_id: str, version: int) -> int:
    with services.sessions() as session:
        return int(
            session.scalar(select(DataKey.encryptions).where(DataKey.scope == tenant_id, DataKey.version == version))
            or 0
        )


def test_other_process_moves_to_a_new_version_once_its_budget_ttl_passes(services: Services) -> None:
    tenant = services.tenants.create(Principal.local_operator(), "acme").id
    server = DataKeyService(services.keyring, services.sessions, budget_ttl_s=0.0)  # another process
    assert server.active(tenant, DATA_PURPOSE).version == 1
    reserved = _encryptions(services, tenant, 1)
    for _ in range(5):
        assert server.active(tenant, DATA_PURPOSE).version == 1
    assert _encryptions(services, tenant, 1) == reserved  # refreshed by reading, not reserving

    with transaction(services.sessions) as session:
        services.data_keys.create(session, tenant, DATA_PURPOSE, tenant)  # a rotation elsewhere
    assert server.active(tenant, DATA_PURPOSE).version == 2
    assert services.data_keys.active(tenant, DATA_PURPOSE).version == 2  # the rotating process at once


def test_within_the_ttl_a_process_keeps_its_reserved_version(services: Services) -> None:
    tenant = services.tenants.create(Principal.local_operator(), "acme").id
    server = DataKeyService(services.keyring, services.sessions, budget_ttl_s=3600.0)
    assert server.active(tenant, DATA_PURPOSE).version == 1
    with transaction(services.sessions) as session:
        services.data_keys.create(session, tenant, DATA_PURPOSE, tenant)
    assert server.active(tenant, DATA_PURPOSE).version == 1  # why rotation waits a grace period


def test_prepared_cipher_seals_inside_a_write_transaction_without_touching_the_database(services: Services) -> None:
    tenant = services.tenants.create(Principal.local_operator(), "acme").id
    fresh = DataKeyService(services.keyring, services.sessions)
    cipher = TenantCipher(fresh)
    cipher.prepare(tenant, n=5000)  # more than one block
    with transaction(services.sessions) as session:
        session.execute(update(Tenant).where(Tenant.id == tenant).values(display_name="locked"))  # holds the write lock
        sealed = [cipher.seal(tenant, "k", str(i), b"v") for i in range(5000)]
    assert cipher.open(tenant, "k", "4999", sealed[-1]) == b"v"
    assert _encryptions(services, tenant, 1) >= 5000


def test_a_reservation_waiting_for_the_write_lock_never_holds_up_a_key_lookup(services: Services, backend: str) -> None:
    """The soak's two-minute stall: an audit append holds SQLite's write lock and asks for its
    MAC key, while another thread's nonce reservation waits for that write lock. The lookup
    must not wait behind the reservation (it used to, under the service's lock, until the
    reservation gave up after the lock timeout; and then the next one took the lock)."""
    if backend != "sqlite":
        pytest.skip("SQLite's one write lock is where the two waits met")
    op = Principal.local_operator()
    a = services.tenants.create(op, "alpha").id
    b = services.tenants.create(op, "beta").id
    keys = DataKeyService(services.keyring, services.sessions)  # a process with no budget for b yet
    version = keys.active(a, DATA_PURPOSE).version
    entered = threading.Event()
    reserved: dict[str, int] = {}
    reserve = keys._reserve

    def watched(*args: Any, **kwargs: Any) -> int:
        entered.set()
        return reserve(*args, **kwargs)

    keys._reserve = watched  # type: ignore[method-assign]

    def reserve_for_b() -> None:
        reserved["b"] = keys.active(b, DATA_PURPOSE).version  # needs the write lock: waits for it

    with transaction(services.sessions) as session:
        session.execute(update(Tenant).where(Tenant.id == a).values(display_name="held"))  # the write lock
        other = threading.Thread(target=reserve_for_b)
        other.start()
        assert entered.wait(10)
        time.sleep(0.2)  # the reservation is now waiting for the write lock
        started = time.monotonic()
        assert keys.key(a, DATA_PURPOSE, version)  # what the audit append does under the write lock
        waited = time.monotonic() - started
    other.join(30)
    assert waited < 1.0, f"the key lookup waited {waited:.1f} s behind a reservation"
    assert reserved["b"] >= 1  # and the reservation went through once the lock was free
