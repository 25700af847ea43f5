"""Wires the process's collaborators once from settings; api/ and cli/ both start here."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from appliance.config import Settings
from appliance.crypto.data_keys import DataKeyService
from appliance.crypto.keyring import MasterKeyring, load_keyring
from appliance.crypto.records import TenantCipher
from appliance.db.engine import make_engine, make_sessionmaker
from appliance.services.api_keys import ApiKeyService
from appliance.services.audit import AuditLog
from appliance.services.metrics import install_key_age_collector
from appliance.services.policies import PolicyService
from appliance.services.tenants import TenantService


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keyring: MasterKeyring
    data_keys: DataKeyService
    tenants: TenantService
    api_keys: ApiKeyService
    audit: AuditLog
    cipher: TenantCipher
    policies: PolicyService

    def close(self) -> None:
        self.engine.dispose()


def build_services(settings: Settings, keyring: MasterKeyring | None = None) -> Services:
    engine = make_engine(settings.database_url, echo=settings.database.echo)
    sessions = make_sessionmaker(engine)
    keyring = keyring or load_keyring(settings)
    data_keys = DataKeyService(keyring, sessions)
    cipher = TenantCipher(data_keys)
    policies: list[PolicyService] = []  # the audit log asks the policies for retention; built just below
    audit = AuditLog(sessions, data_keys, retention=lambda tenant_id: policies[0].retention_days(tenant_id))
    policies.append(PolicyService(sessions, cipher, audit))
    install_key_age_collector(sessions)
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        keyring=keyring,
        data_keys=data_keys,
        tenants=TenantService(sessions, data_keys, audit),
        api_keys=ApiKeyService(sessions, data_keys, audit),
        audit=audit,
        cipher=cipher,
        policies=policies[0],
    )
