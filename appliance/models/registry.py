"""Which models exist, and who may use them: the ``registered_models`` table plus built-ins.

Visibility: a tenant sees the built-ins, the shared models and its own; nobody sees
another tenant's models (they look absent). A tenant's own model shadows a shared one of
the same name, which shadows a built-in.

A tenant-owned local model is always sealed: :meth:`ModelRegistry.add` encrypts its files
with the tenant's data key (:mod:`appliance.models.sealed`) before the row exists, and
:meth:`ModelRegistry.remove` deletes them after the row is gone, so no row ever names
missing files. Shared models stay plain directories the operator manages.

A tenant's *trained* models have versions (``model_versions``): each finished fine-tuning
job seals its output as the next version of its model name, with a sealed model card, and
the registry row of that name serves one version at a time (the newest, until a rollback
picks another). Old versions stay sealed until they are removed; removing the model removes
every version.

The two built-in defaults are *virtual*: they are not rows, they are always present, and
they cannot be removed or overwritten. That keeps an empty database (fresh install, a
test, a restored backup) serving out of the box with no seeding step or migration, and it
keeps the table for operator decisions only. The settings ``default_chat`` and
``default_embedding`` only say which model answers when a request names none; they may
point at a registered model.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Select, delete, func, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from appliance.config import ModelSettings
from appliance.crypto.records import TenantCipher
from appliance.db.base import new_id, utcnow
from appliance.db.engine import transaction
from appliance.db.models import ModelVersion, RegisteredModel, Tenant
from appliance.errors import ConfigError, Conflict, InvalidInput, NotFound, NotSupportedYet
from appliance.models.base import MODEL_KINDS, ModelKind
from appliance.models.sampling import check_options
from appliance.models.sealed import SEALED_SCHEME, SealedModels, is_sealed
from appliance.models.store import MINILM_PACKAGE, NAME, PACKAGE_SCHEME, SMOLLM2_PACKAGE, is_gguf_file, is_hf_directory

SHARED = "shared"
DEVICE_CHOICES = ("auto", "cpu", "cuda")
CARD_KIND = "model_versions.card"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: ModelKind
    source: str
    device: str = "auto"
    owner: str = SHARED
    """``shared`` or the owning tenant's id."""
    version: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    builtin: bool = False
    created_at: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Unique per loaded runner: two tenants may own models with the same name."""
        return (self.owner, self.name)


@dataclass(frozen=True)
class VersionInfo:
    """One trained version of a tenant's model; ``active`` when the registry serves it."""

    name: str
    owner: str
    version: int
    kind: str
    source: str
    job_id: str | None
    dataset_id: str | None
    created_at: datetime
    active: bool


def _version_view(row: ModelVersion, active: int | None) -> VersionInfo:
    return VersionInfo(
        row.name,
        row.tenant_id,
        row.version,
        row.kind,
        row.source,
        row.job_id,
        row.dataset_id,
        row.created_at,
        row.version == active,
    )


SMOLLM2_DEFAULTS = {"default_temperature": 0.2, "default_top_p": 0.9, "default_max_tokens": 200}
"""SmolLM2-135M's model card samples at temperature 0.2, top_p 0.9; at OpenAI's temperature 1
it answers with noise, and left alone it rambles for hundreds of tokens. 200 tokens end a
runaway answer within about 15 s on 2 cores (see docs/models.md#sampling-defaults)."""

BUILTINS: tuple[ModelInfo, ...] = (
    ModelInfo(
        "smollm2-135m-instruct", "chat", PACKAGE_SCHEME + SMOLLM2_PACKAGE, options=SMOLLM2_DEFAULTS, builtin=True
    ),
    ModelInfo("all-minilm-l6-v2", "embedding", PACKAGE_SCHEME + MINILM_PACKAGE, builtin=True),
)


def _view(row: RegisteredModel) -> ModelInfo:
    return ModelInfo(
        name=row.name,
        kind=cast(ModelKind, row.kind),
        source=row.source,
        device=row.device,
        owner=row.owner_scope,
        version=row.version,
        options=json.loads(row.options or "{}"),
        created_at=row.created_at,
    )


def _valid_device(device: str) -> bool:
    if device in DEVICE_CHOICES:
        return True
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


class ModelRegistry:
    """Mechanism only: callers (services, CLI) decide *whether* a principal may add or remove."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: ModelSettings,
        *,
        sealed: SealedModels | None = None,
        cipher: TenantCipher | None = None,
    ) -> None:
        """Without ``sealed`` only shared and upstream models can be registered; without
        ``cipher`` no trained version (whose card is sealed) can be added or read."""
        self._sessions = sessions
        self._settings = settings
        self._sealed = sealed
        self._cipher = cipher

    @property
    def default_chat(self) -> str:
        return self._settings.default_chat

    @property
    def default_embedding(self) -> str:
        return self._settings.default_embedding

    def list(self, tenant_id: str | None = None, *, all_tenants: bool = False) -> list[ModelInfo]:
        """Built-ins, shared models, and the tenant's own (or every tenant's for ``all_tenants``)."""
        with self._sessions() as session:
            query = select(RegisteredModel).order_by(RegisteredModel.name, RegisteredModel.owner_scope)
            if not all_tenants:
                scopes = [SHARED] + ([tenant_id] if tenant_id else [])
                query = query.where(RegisteredModel.owner_scope.in_(scopes))
            rows = [_view(r) for r in session.scalars(query)]
        return [*BUILTINS, *rows]

    def get(self, name: str, tenant_id: str | None = None) -> ModelInfo:
        """The model ``name`` as this tenant sees it: its own, else shared, else built-in."""
        with self._sessions() as session:
            scopes = [SHARED] + ([tenant_id] if tenant_id else [])
            rows = {
                r.owner_scope: r
                for r in session.scalars(
                    select(RegisteredModel).where(RegisteredModel.name == name, RegisteredModel.owner_scope.in_(scopes))
                )
            }
        if tenant_id and tenant_id in rows:
            return _view(rows[tenant_id])
        if SHARED in rows:
            return _view(rows[SHARED])
        for builtin in BUILTINS:
            if builtin.name == name:
                return builtin
        raise NotFound(f"no model named {name!r}")

    def add(
        self,
        name: str,
        kind: str,
        source: str,
        *,
        device: str = "auto",
        tenant: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> ModelInfo:
        """Register a model; ``tenant`` (slug or id) makes it private to that tenant."""
        if not NAME.fullmatch(name):
            raise InvalidInput("model name must be 1-128 lowercase letters, digits, '.', '_' or '-'")
        if kind not in MODEL_KINDS:
            raise InvalidInput(f"model kind must be one of {', '.join(MODEL_KINDS)}")
        if any(b.name == name for b in BUILTINS):
            raise Conflict(f"{name!r} is a built-in model name")
        if not _valid_device(device):
            raise InvalidInput("device must be auto, cpu, cuda or cuda:N")
        source = self._check_source(kind, source)
        options = check_options(options or {})
        try:
            encoded = json.dumps(options, sort_keys=True)
        except (TypeError, ValueError):
            raise InvalidInput("model options must be JSON values") from None
        engine = (options or {}).get("engine")
        if engine is not None and (kind != "chat" or engine not in ("auto", "torch", "llamacpp")):
            raise InvalidInput("the option engine is auto, torch or llamacpp, for chat models only")
        if tenant is None or kind == "upstream":
            return self._insert(name, kind, source, device, tenant, encoded)
        if is_gguf_file(Path(source)):
            raise NotSupportedYet("tenant-owned GGUF files are not supported yet; register a Hugging Face directory")
        with self._sessions() as session:
            tenant_id = self._tenant_id(session, tenant)
            if session.scalar(self._row_query(name, tenant_id)) is not None:  # before sealing gigabytes
                raise Conflict(f"model {name!r} is already registered")
        sealer = self._sealer()
        sealed = sealer.seal(tenant_id, Path(source))
        try:
            return self._insert(name, kind, sealed, device, tenant_id, encoded)
        except BaseException:
            sealer.delete(tenant_id, sealed)
            raise

    def _insert(self, name: str, kind: str, source: str, device: str, tenant: str | None, options: str) -> ModelInfo:
        try:
            with transaction(self._sessions) as session:
                tenant_id = self._tenant_id(session, tenant) if tenant else None
                scope = tenant_id or SHARED
                if session.scalar(self._row_query(name, scope)) is not None:
                    raise Conflict(f"model {name!r} is already registered")
                row = RegisteredModel(
                    name=name,
                    kind=kind,
                    source=source,
                    device=device,
                    owner_scope=scope,
                    owner_tenant_id=tenant_id,
                    version=1,
                    options=options,
                )
                session.add(row)
                session.flush()
                return _view(row)
        except DbIntegrityError:
            raise Conflict(f"model {name!r} is already registered") from None

    def remove(self, name: str, tenant: str | None = None) -> ModelInfo:
        """Unregister ``name``; a tenant's sealed files go after the row, and so does every
        trained version of it (rows first, then their files)."""
        if any(b.name == name for b in BUILTINS):
            raise InvalidInput(f"{name!r} is a built-in model and cannot be removed")
        with transaction(self._sessions) as session:
            scope = self._tenant_id(session, tenant) if tenant else SHARED
            row = session.scalar(
                select(RegisteredModel).where(RegisteredModel.name == name, RegisteredModel.owner_scope == scope)
            )
            if row is None:
                raise NotFound(f"no model named {name!r}")
            view = _view(row)
            session.delete(row)
            sources = list(
                session.scalars(
                    select(ModelVersion.source).where(ModelVersion.tenant_id == scope, ModelVersion.name == name)
                )
            )
            session.execute(delete(ModelVersion).where(ModelVersion.tenant_id == scope, ModelVersion.name == name))
        for source in dict.fromkeys([view.source, *sources]):
            if is_sealed(source):
                self._sealer().delete(view.owner, source)
        return view

    # -- trained versions -----------------------------------------------------------------

    def add_version(
        self,
        tenant_id: str,
        name: str,
        kind: str,
        directory: Path,
        *,
        card: dict[str, Any],
        job_id: str | None,
        dataset_id: str | None,
        device: str = "auto",
        finish: Callable[[Session, VersionInfo], None] | None = None,
    ) -> VersionInfo:
        """Seal ``directory`` as the next version of the tenant's model ``name`` and serve it.

        All or nothing: if sealing or the registration fails, the sealed files are deleted
        again and what was served before stays served. A name the operator registered
        directly (no versions) or of another kind is a Conflict.

        ``finish(session, version)`` runs inside the registration's transaction, after the
        version row is written: what it writes commits together with the version or not at
        all, and an exception it raises undoes the registration (the fine-tuning queue ends
        its job there, so no crash leaves a served model on an unfinished job). A process
        killed before the commit leaves only sealed blobs nothing references, which
        :meth:`sweep_sealed` removes."""
        if not NAME.fullmatch(name) or any(b.name == name for b in BUILTINS):
            raise InvalidInput("model name must be 1-128 lowercase letters, digits, '.', '_' or '-', not a built-in's")
        if kind not in ("chat", "embedding", "classifier"):
            raise InvalidInput("a trained model is of kind chat, embedding or classifier")
        cipher = self._card_cipher()
        with self._sessions() as session:
            self.check_version_name(session, tenant_id, name, kind)
        sealer = self._sealer()
        source = sealer.seal(tenant_id, directory)
        version_id = new_id()
        try:
            cipher.prepare(tenant_id)  # SQLite: reserve key budget before the write lock
            with transaction(self._sessions) as session:
                self.check_version_name(session, tenant_id, name, kind)
                number = (
                    session.scalar(
                        select(func.max(ModelVersion.version)).where(
                            ModelVersion.tenant_id == tenant_id, ModelVersion.name == name
                        )
                    )
                    or 0
                ) + 1
                sealed_card = cipher.seal(tenant_id, CARD_KIND, version_id, json.dumps(card, sort_keys=True).encode())
                row = ModelVersion(
                    id=version_id,
                    tenant_id=tenant_id,
                    name=name,
                    version=number,
                    kind=kind,
                    source=source,
                    job_id=job_id,
                    dataset_id=dataset_id,
                    card_sealed=sealed_card,
                )
                session.add(row)
                served = session.scalar(self._served_query(name, tenant_id))
                if served is None:
                    session.add(
                        RegisteredModel(
                            name=name,
                            kind=kind,
                            source=source,
                            device=device,
                            owner_scope=tenant_id,
                            owner_tenant_id=tenant_id,
                            version=number,
                            options="{}",
                        )
                    )
                else:
                    served.source, served.version, served.created_at = source, number, utcnow()
                session.flush()
                view = _version_view(row, number)
                if finish is not None:
                    finish(session, view)
                return view
        except BaseException:
            sealer.delete(tenant_id, source)
            raise

    def check_version_name(self, session: Session, tenant_id: str, name: str, kind: str) -> None:
        """Refuse to add a trained version under a name the tenant uses otherwise."""
        served = session.scalar(self._served_query(name, tenant_id))
        if served is None:
            return
        if served.kind != kind:
            raise Conflict(f"model {name!r} already exists as a {served.kind} model")
        has_versions = session.scalar(
            select(ModelVersion.id).where(ModelVersion.tenant_id == tenant_id, ModelVersion.name == name).limit(1)
        )
        if has_versions is None:
            raise Conflict(f"model {name!r} was registered directly, not trained; choose another name")

    def versions(self, tenant_id: str, name: str) -> builtins.list[VersionInfo]:
        """Every trained version of the tenant's model ``name`` (NotFound if there is none)."""
        with self._sessions() as session:
            served = session.scalar(self._served_query(name, tenant_id))
            rows = list(
                session.scalars(
                    select(ModelVersion)
                    .where(ModelVersion.tenant_id == tenant_id, ModelVersion.name == name)
                    .order_by(ModelVersion.version)
                )
            )
        if not rows:
            raise NotFound(f"no trained model named {name!r}")
        active = served.version if served is not None else None
        return [_version_view(r, active) for r in rows]

    def card(self, tenant_id: str, name: str, version: int | None = None) -> tuple[VersionInfo, dict[str, Any]]:
        """A version's model card (the served version's when ``version`` is None)."""
        with self._sessions() as session:
            served = session.scalar(self._served_query(name, tenant_id))
            active = served.version if served is not None else None
            wanted = version if version is not None else active
            row = session.scalar(
                select(ModelVersion).where(
                    ModelVersion.tenant_id == tenant_id, ModelVersion.name == name, ModelVersion.version == wanted
                )
            )
        if row is None:
            raise NotFound(
                f"no version {wanted} of a trained model named {name!r}"
                if wanted
                else f"no trained model named {name!r}"
            )
        card: dict[str, Any] = json.loads(self._card_cipher().open(tenant_id, CARD_KIND, row.id, row.card_sealed))
        return _version_view(row, active), card

    def rollback(
        self,
        tenant_id: str,
        name: str,
        to: int,
        *,
        record: Callable[[Session, int], None] | None = None,
    ) -> VersionInfo:
        """Serve version ``to`` of the tenant's model from the next request on.

        ``record(session, previous_version)`` runs in the switch's transaction (the audit
        entry): both commit or neither does."""
        with transaction(self._sessions) as session:
            row = session.scalar(
                select(ModelVersion).where(
                    ModelVersion.tenant_id == tenant_id, ModelVersion.name == name, ModelVersion.version == to
                )
            )
            if row is None:
                raise NotFound(f"no version {to} of a trained model named {name!r}")
            served = session.scalar(self._served_query(name, tenant_id))
            if served is None:
                raise NotFound(f"no trained model named {name!r}")
            previous = served.version
            served.source, served.version, served.created_at = row.source, row.version, utcnow()
            if record is not None:
                record(session, previous)
            return _version_view(row, row.version)

    def remove_version(self, tenant_id: str, name: str, version: int) -> VersionInfo:
        """Delete one version that is not being served: its row, then its sealed files."""
        with transaction(self._sessions) as session:
            row = session.scalar(
                select(ModelVersion).where(
                    ModelVersion.tenant_id == tenant_id, ModelVersion.name == name, ModelVersion.version == version
                )
            )
            if row is None:
                raise NotFound(f"no version {version} of a trained model named {name!r}")
            served = session.scalar(self._served_query(name, tenant_id))
            if served is not None and served.version == version:
                raise Conflict(f"version {version} of {name!r} is being served; roll back to another first")
            view = _version_view(row, served.version if served is not None else None)
            session.delete(row)
        self._sealer().delete(tenant_id, view.source)
        return view

    def _card_cipher(self) -> TenantCipher:
        if self._cipher is None:
            raise ConfigError("trained model versions need the tenant cipher; this registry has none")
        return self._cipher

    @staticmethod
    def _served_query(name: str, tenant_id: str) -> Select[RegisteredModel]:
        return select(RegisteredModel).where(RegisteredModel.name == name, RegisteredModel.owner_scope == tenant_id)

    def open_sealed(self, info: ModelInfo) -> AbstractContextManager[Path]:
        """A sealed model's files as a memory-backed directory, for the duration of a load."""
        return self._sealer().open(info.owner, info.source)

    def sweep_sealed(self, older_than: timedelta = timedelta(hours=1)) -> int:
        """Delete, per tenant, what a killed seal left: model blobs no registered model
        references and orphan blob files (see :meth:`SealedModels.sweep`)."""
        sealer = self._sealer()
        with self._sessions() as session:
            tenants = list(session.scalars(select(Tenant.id)))
            rows = session.execute(
                select(RegisteredModel.owner_scope, RegisteredModel.source).where(
                    RegisteredModel.source.startswith(SEALED_SCHEME)
                )
            )
            keep: dict[str, set[str]] = {}
            for scope, source in rows:
                keep.setdefault(scope, set()).add(source)
            for scope, source in session.execute(select(ModelVersion.tenant_id, ModelVersion.source)):
                keep.setdefault(scope, set()).add(source)  # versions not served stay sealed too
        return sum(sealer.sweep(t, keep.get(t, set()), older_than=older_than) for t in tenants)

    def _sealer(self) -> SealedModels:
        if self._sealed is None:
            raise ConfigError("tenant-owned local models need the encrypted blob store; this registry has none")
        return self._sealed

    @staticmethod
    def _row_query(name: str, scope: str) -> Select[str]:
        return select(RegisteredModel.id).where(RegisteredModel.name == name, RegisteredModel.owner_scope == scope)

    @staticmethod
    def _tenant_id(session: Session, ref: str) -> str:
        found = session.scalar(select(Tenant.id).where((Tenant.slug == ref) | (Tenant.id == ref)))
        if found is None:
            raise NotFound("no such tenant")
        return found

    @staticmethod
    def _check_source(kind: str, source: str) -> str:
        if kind == "upstream":
            if not source.startswith(("http://", "https://")):
                raise InvalidInput("an upstream source is the engine's base URL, e.g. http://10.0.0.5:8000/v1")
            return source.rstrip("/")
        if source.startswith((PACKAGE_SCHEME, SEALED_SCHEME)):
            raise InvalidInput("package and sealed sources are reserved for built-in and sealed models")
        path = Path(source).expanduser()
        if not path.is_absolute():
            raise InvalidInput("a local model source must be an absolute directory path")
        if is_gguf_file(path):
            if kind != "chat":
                raise InvalidInput("a GGUF file can be registered as a chat model only")
            if not path.is_file():
                raise InvalidInput(f"{path} is not a file")
            with path.open("rb") as fh:
                if fh.read(4) != b"GGUF":
                    raise InvalidInput(f"{path} is not a GGUF file")
            return str(path)
        if not is_hf_directory(path):
            raise InvalidInput(f"{path} is not a Hugging Face-format model directory (config.json and weights)")
        return str(path)
