"""Wires the process's collaborators once from settings; api/ and cli/ both start here.

Heavy parts (the model layer imports torch; the PII analyzer loads spaCy) are built on
first use, so CLI commands that only touch the database stay fast. ``Services`` is a plain
class on purpose: Litestar hands it to handlers as a dependency and would otherwise try to
validate a dataclass field by field.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar, cast

from appliance.config import Settings
from appliance.crypto.blobs import BlobStore
from appliance.crypto.data_keys import DataKeyService
from appliance.crypto.keyring import MasterKeyring, load_keyring
from appliance.crypto.records import TenantCipher
from appliance.db.engine import make_engine, make_sessionmaker
from appliance.models.base import InputObserver
from appliance.services.api_keys import ApiKeyService
from appliance.services.audit import AuditLog
from appliance.services.audit_writer import AuditWriter
from appliance.services.console_sessions import ConsoleSessions
from appliance.services.key_rotation import KeyRotation
from appliance.services.metrics import install_key_age_collector
from appliance.services.operations import OperationsService
from appliance.services.policies import PolicyService
from appliance.services.ratelimit import TenantRateLimiter
from appliance.services.schema import DatabaseSchema
from appliance.services.tenants import TenantService

if TYPE_CHECKING:
    from appliance.models import ModelManager, ModelRegistry, ModelStore
    from appliance.privacy.detection import Detector
    from appliance.services.datasets import DatasetService
    from appliance.services.finetune import FinetuneService
    from appliance.services.finetune_queue import DbJobStore
    from appliance.services.inference import InferenceService
    from appliance.services.model_versions import ModelVersionService
    from appliance.services.privacy import PrivacyService
    from appliance.services.privacy_batch import AnonymizeBatcher
    from appliance.services.privacy_budget import PrivacyBudgetService

T = TypeVar("T")


class Services:
    def __init__(
        self,
        settings: Settings,
        keyring: MasterKeyring | None = None,
        *,
        model_observer: InputObserver | None = None,
        detector: Detector | None = None,
    ) -> None:
        self.settings = settings
        db = settings.database
        self.engine = make_engine(
            settings.database_url, echo=db.echo, lock_timeout_s=db.lock_timeout_s, pool_timeout_s=db.pool_timeout_s
        )
        self.sessions = make_sessionmaker(self.engine)
        self.schema = DatabaseSchema(self.engine)
        self.keyring = keyring or load_keyring(settings)
        self.data_keys = DataKeyService(self.keyring, self.sessions)
        self.cipher = TenantCipher(self.data_keys)
        self.blobs = BlobStore(settings.blob_dir, self.data_keys, self.sessions)
        # The audit log asks the policies how long each tenant's entries are kept.
        self.audit = AuditLog(self.sessions, self.data_keys, retention=lambda t: self.policies.retention_days(t))
        ttl = settings.server.cache_ttl_s
        self.policies = PolicyService(self.sessions, self.cipher, self.audit, cache_ttl_s=ttl)
        self.tenants = TenantService(
            self.sessions, self.data_keys, self.audit, self.blobs, on_delete=self._forget_tenant
        )
        self.api_keys = ApiKeyService(self.sessions, self.data_keys, self.audit, cache_ttl_s=ttl)
        self.rate_limiter = TenantRateLimiter()
        self.console_sessions = ConsoleSessions(self.data_keys, self.api_keys, self.audit, settings.console)
        self.operations = OperationsService(
            self.sessions,
            rotation_days=settings.console.key_rotation_days,
            key_status=lambda: KeyRotation(self.sessions, self.data_keys, self.blobs).status(self.keyring.current_id),
            registry=lambda: self.model_registry,
        )
        self.model_observer = model_observer
        """Test seam: called with exactly what each model receives."""
        self._detector = detector  # tests share one across many Services; loading takes seconds
        self._lazy: dict[str, object] = {}
        self._lazy_lock = threading.RLock()  # builders of one part ask for others
        install_key_age_collector(self.sessions)

    @property
    def model_registry(self) -> ModelRegistry:
        def build() -> ModelRegistry:
            from appliance.models import ModelRegistry
            from appliance.models.sealed import SealedModels

            return ModelRegistry(
                self.sessions, self.settings.models, sealed=SealedModels(self.blobs), cipher=self.cipher
            )

        return self._once("model_registry", build)

    @property
    def models(self) -> ModelManager:
        def build() -> ModelManager:
            from appliance.models import ModelManager, ModelStore, configure_torch_threads

            configure_torch_threads(self.settings.models.torch_threads or None)
            store = ModelStore(self.settings.model_dir)
            return ModelManager(self.settings.models, self.model_registry, store, observer=self.model_observer)

        return self._once("models", build)

    @property
    def privacy(self) -> PrivacyService:
        def build() -> PrivacyService:
            from appliance.privacy.detection import Detector
            from appliance.privacy.vault import PseudonymVault
            from appliance.services.privacy import PrivacyService

            detector = self._detector
            return PrivacyService(
                detector if detector is not None else (lambda: Detector(self.settings.privacy)),
                PseudonymVault(self.sessions, self.data_keys, self.cipher),
                self.data_keys,
                default_ttl=timedelta(seconds=self.settings.privacy.vault_ttl_seconds),
            )

        return self._once("privacy", build)

    @property
    def inference(self) -> InferenceService:
        def build() -> InferenceService:
            from appliance.services.inference import InferenceService

            service = InferenceService(
                policies=self.policies.effective,
                privacy=self.privacy,
                models=self.models,
                audit=self.audit,
                rate_limit=self.rate_limiter.check,
                anonymizer=self.anonymizer,
                audit_writer=self.audit_writer,
                remembered_policy=self.policies.remembered,
                model_cache_ttl_s=self.settings.server.cache_ttl_s,
            )
            self.models.on_unload(service.forget_runners)  # a closed runner is never handed out
            return service

        return self._once("inference", build)

    @property
    def anonymizer(self) -> AnonymizeBatcher:
        """Ingress anonymization batched across concurrent model calls."""

        def build() -> AnonymizeBatcher:
            from appliance.services.privacy_batch import AnonymizeBatcher

            return AnonymizeBatcher(self.privacy)

        return self._once("anonymizer", build)

    @property
    def audit_writer(self) -> AuditWriter:
        """Audit appends of concurrent model calls, group-committed."""
        return self._once("audit_writer", lambda: AuditWriter(self.audit))

    @property
    def model_store(self) -> ModelStore:
        def build() -> ModelStore:
            from appliance.models import ModelStore

            return ModelStore(self.settings.model_dir)

        return self._once("model_store", build)

    @property
    def datasets(self) -> DatasetService:
        """Fine-tuning datasets: validated, anonymized by the tenant's policy, sealed."""

        def build() -> DatasetService:
            from appliance.services.datasets import DatasetService

            return DatasetService(
                self.sessions,
                self.blobs,
                self.cipher,
                self.audit,
                policies=self.policies.effective,
                privacy=lambda: self.privacy,
                max_text_chars=self.settings.privacy.max_text_chars,
            )

        return self._once("datasets", build)

    @property
    def privacy_budget(self) -> PrivacyBudgetService:
        def build() -> PrivacyBudgetService:
            from appliance.services.privacy_budget import PrivacyBudgetService

            return PrivacyBudgetService(self.sessions, self.audit, policies=self.policies.effective)

        return self._once("privacy_budget", build)

    @property
    def finetune(self) -> FinetuneService:
        """Fine-tuning jobs: create (budget-checked), list, show, cancel."""

        def build() -> FinetuneService:
            from appliance.services.finetune import FinetuneService

            defaults = {"classifier": self.settings.models.default_embedding, "lora": self.settings.models.default_chat}
            return FinetuneService(
                self.sessions,
                self.audit,
                self.privacy_budget,
                self.blobs,
                policies=self.policies.effective,
                registry=lambda: self.model_registry,
                training=self.settings.training,
                default_models=defaults.__getitem__,
            )

        return self._once("finetune", build)

    @property
    def model_versions(self) -> ModelVersionService:
        def build() -> ModelVersionService:
            from appliance.services.model_versions import ModelVersionService

            return ModelVersionService(lambda: self.model_registry, self.tenants, self.audit)

        return self._once("model_versions", build)

    def job_store(self) -> DbJobStore:
        """The job queue as ``appliance worker`` uses it."""
        from appliance.services.finetune_queue import DbJobStore

        return DbJobStore(
            self.sessions,
            self.blobs,
            self.audit,
            self.privacy_budget,
            self.datasets,
            policies=self.policies.effective,
            registry=lambda: self.model_registry,
            store=lambda: self.model_store,
            training=self.settings.training,
        )

    def _forget_tenant(self, tenant_id: str) -> None:
        self.api_keys.forget(tenant_id=tenant_id)
        self.policies.forget(tenant_id)
        manager = cast("ModelManager | None", self._lazy.get("models"))  # None: nothing was ever loaded
        if manager is not None:
            manager.forget(owner=tenant_id)  # the tenant's own models: their decrypted weights leave memory

    def _once(self, name: str, build: Callable[[], T]) -> T:
        with self._lazy_lock:
            if name not in self._lazy:
                self._lazy[name] = build()
            return self._lazy[name]  # type: ignore[return-value]

    def close(self) -> None:
        for name in ("anonymizer", "audit_writer"):  # finish what is waiting while the database is open
            part = self._lazy.get(name)
            if part is not None:
                part.close()  # type: ignore[attr-defined]
        manager = self._lazy.get("models")
        if manager is not None:
            manager.close()  # type: ignore[attr-defined]
        self.engine.dispose()


def build_services(
    settings: Settings,
    keyring: MasterKeyring | None = None,
    *,
    model_observer: InputObserver | None = None,
    detector: Detector | None = None,
) -> Services:
    return Services(settings, keyring, model_observer=model_observer, detector=detector)
