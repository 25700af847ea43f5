"""Canary: raw values sent through the privacy step never reach the database files or logs.

Known values go through anonymize (every action, pseudonyms stored) and restore; then the
SQLite file (with its WAL) or every PostgreSQL row, and every captured log record, are
searched for them, in the forms they were sent and lower-cased.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from appliance.config import PrivacySettings
from appliance.crypto.records import TenantCipher
from appliance.privacy.detection import Detector
from appliance.privacy.rules import EntityRule, PrivacyRules
from appliance.privacy.vault import PseudonymVault
from appliance.services.container import Services
from appliance.services.principal import Principal
from appliance.services.privacy import PrivacyService

CANARIES = {
    "PERSON": "Ottoline Wrexham-Baptiste",
    "EMAIL_ADDRESS": "ottoline.canary@example.org",
    "PHONE_NUMBER": "+41 44 668 18 00",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN_CODE": "DE89 3704 0044 0532 0130 00",
    "IP_ADDRESS": "203.0.113.77",
}
MESSAGE = (
    f"Hi, I'm {CANARIES['PERSON']}. Mail {CANARIES['EMAIL_ADDRESS']} or call {CANARIES['PHONE_NUMBER']}; "
    f"card {CANARIES['CREDIT_CARD']}, IBAN {CANARIES['IBAN_CODE']}, from {CANARIES['IP_ADDRESS']}."
)


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(PrivacySettings())


def _needles() -> list[bytes]:
    out = []
    for value in CANARIES.values():
        for form in {value, value.lower(), value.replace(" ", "")}:
            out.append(form.encode())
    out.append(b"Wrexham")
    return out


def _storage_bytes(services: Services, data_dir: Path) -> bytes:
    services.engine.dispose()  # flush SQLite connections so the file and WAL are complete
    if services.engine.dialect.name == "sqlite":
        return b"".join(p.read_bytes() for p in data_dir.parent.rglob("*") if p.is_file())
    chunks = []
    with services.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                chunks.append(repr(tuple(row)).encode())
                chunks.extend(v for v in row if isinstance(v, bytes | memoryview) for v in [bytes(v)])
    return b"\n".join(chunks)


def test_raw_values_never_reach_storage_or_logs(
    services: Services, detector: Detector, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant_id = services.tenants.create(Principal.local_operator(), "canary").id
    vault = PseudonymVault(services.sessions, services.data_keys, TenantCipher(services.data_keys))
    svc = PrivacyService(detector, vault, services.data_keys, default_ttl=timedelta(hours=1))
    rules = PrivacyRules(
        default_action="pseudonymize",
        entities={"CREDIT_CARD": EntityRule(action="hash"), "IBAN_CODE": EntityRule(action="mask")},
    )
    result = svc.anonymize(tenant_id, [MESSAGE, f"again: {CANARIES['PERSON']}"], rules, scope="canary-scope")
    for value in (CANARIES["PERSON"], CANARIES["EMAIL_ADDRESS"], CANARIES["CREDIT_CARD"]):
        assert value not in result.texts[0]
    restored = svc.restore(tenant_id, "canary-scope", result.texts[0])
    assert CANARIES["PERSON"] in restored and CANARIES["EMAIL_ADDRESS"] in restored

    stored = _storage_bytes(services, tmp_path / "data")
    assert b"canary" in stored  # the tenant slug is there: we are reading the right bytes
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records).encode()
    for needle in _needles():
        assert needle not in stored, f"value of length {len(needle)} found in storage"
        assert needle not in logs, f"value of length {len(needle)} found in logs"
