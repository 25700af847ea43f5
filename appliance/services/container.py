"""Wires the process's collaborators once from settings; api/ and cli/ both start here."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

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
from appliance.services.ratelimit import TenantRateLimiter
from appliance.services.tenants import TenantService

if TYPE_CHECKING:  # the model layer imports torch: loaded on first use, not for every CLI command
    from appliance.models import InputObserver, ModelManager, ModelRegistry


T = TypeVar("T")


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
    rate_limiter: TenantRateLimiter = field(default_factory=TenantRateLimiter)
    model_observer: InputObserver | None = None
    """Test seam: called with exactly what each model receives."""
    _lazy: dict[str, object] = field(default_factory=dict, repr=False)
    _lazy_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model_registry(self) -> ModelRegistry:
        from appliance.models import ModelRegistry

        return self._once("model_registry", lambda: ModelRegistry(self.sessions, self.settings.models))

    @property
    def models(self) -> ModelManager:
        def build() -> ModelManager:
            from appliance.models import ModelManager, ModelStore, configure_torch_threads

            configure_torch_threads()
            return ModelManager(
                self.settings.models,
                self.model_registry,
                ModelStore(self.settings.model_dir),
                observer=self.model_observer,
            )

        return self._once("models", build)

    def _once(self, name: str, build: Callable[[], T]) -> T:
        with self._lazy_lock:
            if name not in self._lazy:
                self._lazy[name] = build()
            return self._lazy[name]  # type: ignore[return-value]

    def close(self) -> None:
        manager = self._lazy.get("models")
        if manager is not None:
            manager.close()  # type: ignore[attr-defined]
        self.engine.dispose()


def build_services(
    settings: Settings, keyring: MasterKeyring | None = None, *, model_observer: InputObserver | None = None
) -> Services:
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
        model_observer=model_observer,
    )
