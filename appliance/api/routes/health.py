"""Liveness and readiness probes for load balancers and systemd."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from appliance.api.auth import PUBLIC
from appliance.api.deps import Svc
from appliance.api.problems import problem


@get("/healthz", opt=PUBLIC, sync_to_thread=False, tags=["health"])
def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@get("/readyz", opt=PUBLIC, sync_to_thread=True, tags=["health"])
def readyz(request: Request[Any, Any, Any], services: Svc) -> Response[dict[str, Any]]:
    """The database answers and its schema is at the shipped migration head."""
    reason = services.schema.readiness()
    if reason is not None:
        return problem(request, 503, "not-ready", "Not ready", reason)
    return Response({"status": "ready", "database": "ok", "migrations": "current"})
