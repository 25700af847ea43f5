"""Liveness and readiness probes for load balancers and systemd."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from sqlalchemy import text

from appliance.api.auth import PUBLIC
from appliance.api.deps import Svc
from appliance.api.problems import problem
from appliance.db.migrate import is_current


@get("/healthz", opt=PUBLIC, sync_to_thread=False, tags=["health"])
def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@get("/readyz", opt=PUBLIC, sync_to_thread=True, tags=["health"])
def readyz(request: Request[Any, Any, Any], services: Svc) -> Response[dict[str, Any]]:
    """The database answers and its schema is at the shipped migration head."""
    try:
        with services.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current = is_current(services.engine)
    except Exception:  # noqa: BLE001 - any database failure means not ready
        return problem(request, 503, "not-ready", "Not ready", "database unreachable")
    if not current:
        return problem(
            request, 503, "not-ready", "Not ready", "database migrations are not current; run `appliance db upgrade`"
        )
    return Response({"status": "ready", "database": "ok", "migrations": "current"})
