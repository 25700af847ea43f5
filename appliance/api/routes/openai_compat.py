"""OpenAI-compatible surface (``/v1``). Model serving builds on this."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get

from appliance.api.auth import roles
from appliance.api.deps import Svc
from appliance.api.routes.admin import AuthedRequest
from appliance.db.models import Role


class ModelCard(msgspec.Struct):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "appliance"


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"


@get("/v1/models", guards=[roles(Role.APP, Role.TENANT_ADMIN)], sync_to_thread=True, tags=["openai"])
def list_models(request: AuthedRequest, services: Svc) -> ModelList:
    """Models this tenant may call (empty until models are registered)."""
    _: Any = request.user
    return ModelList(data=[])
