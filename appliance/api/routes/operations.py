"""Operations API (operator): API key ages and rotation status, data keys, registered models."""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Controller, get

from appliance.api.auth import roles
from appliance.api.deps import Svc
from appliance.api.routes.admin import AuthedRequest
from appliance.roles import Role


class ApiKeyAgeOut(msgspec.Struct):
    id: str
    tenant: str | None
    role: str
    name: str
    created_at: datetime
    age_days: float
    last_used_at: datetime | None
    expires_at: datetime | None
    rotation_due: bool


class DataKeyAgeOut(msgspec.Struct):
    tenant: str | None
    scope: str
    purpose: str
    version: int
    state: str
    age_days: float
    on_current_kek: bool
    records: int
    blobs: int
    rotation_due: bool


class DataKeysOut(msgspec.Struct):
    master_kek_id: str
    rows_on_old_kek: int
    rotation_days: int
    keys: list[DataKeyAgeOut]


class ModelOut(msgspec.Struct):
    name: str
    kind: str
    owner: str | None
    device: str
    builtin: bool
    version: int
    created_at: datetime | None


class OperationsController(Controller):
    path = "/admin/v1/operations"
    tags = ["admin: operations"]
    guards = [roles(Role.OPERATOR)]

    @get("/api-keys", sync_to_thread=True)
    def api_key_ages(self, request: AuthedRequest, services: Svc) -> list[ApiKeyAgeOut]:
        """Every API key not revoked, oldest first, with its age and whether rotation is due."""
        return [ApiKeyAgeOut(**vars(k)) for k in services.operations.api_key_ages(request.user)]

    @get("/data-keys", sync_to_thread=True)
    def data_keys(self, request: AuthedRequest, services: Svc) -> DataKeysOut:
        """Data key versions: age, state, whether on the current master key, what they encrypt."""
        report = services.operations.data_keys(request.user)
        return DataKeysOut(
            report.master_kek_id,
            report.rows_on_old_kek,
            services.operations.rotation_days,
            [DataKeyAgeOut(**vars(k)) for k in report.keys],
        )

    @get("/models", sync_to_thread=True)
    def models(self, request: AuthedRequest, services: Svc) -> list[ModelOut]:
        """Built-in, shared and every tenant's own registered models."""
        return [ModelOut(**vars(m)) for m in services.operations.models(request.user)]
