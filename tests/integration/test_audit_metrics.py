"""Metrics: the key-age collector reads data_keys on both backends and exposes no key material."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest

from appliance.services.audit import AuditLog
from appliance.services.container import Services
from appliance.services.metrics import AUDIT_WRITE_FAILURES, install_key_age_collector
from appliance.services.principal import Principal


def test_key_ages_are_exposed_per_scope_and_purpose(services: Services) -> None:
    services.tenants.create(Principal.local_operator(), "metrics-t")
    AuditLog(services.sessions, services.data_keys).record("x.y", actor="system")
    install_key_age_collector(services.sessions)
    text = generate_latest(REGISTRY).decode()
    lines = [line for line in text.splitlines() if line.startswith("appliance_data_key_age_seconds{")]
    assert any('scope="tenant",purpose="data"' in line or 'purpose="data",scope="tenant"' in line for line in lines)
    assert any("audit-mac" in line for line in lines)
    assert all(float(line.rsplit(" ", 1)[1]) >= 0 for line in lines)
    assert "appliance_audit_write_failures_total" in text
    assert AUDIT_WRITE_FAILURES._value.get() >= 0
