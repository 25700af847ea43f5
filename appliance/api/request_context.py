"""Outermost ASGI wrapper: a request id on every response and log line, and one access log.

It wraps the whole Litestar app so even unrouted requests (404, 405) carry an id.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from appliance.logs import request_id_var

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


log = logging.getLogger("appliance.access")
_INCOMING_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
HEADER = b"x-request-id"


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:  # expose the Litestar app (state, routes) to callers
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(HEADER, b"").decode("latin-1")
        rid = incoming if _INCOMING_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            user = scope.get("user")
            route = scope.get("path_template") or "(unrouted)"
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            # The message reads alone in the console format; JSON also keeps each fact as a field.
            log.info(
                "%s %s %s %.1f ms",
                scope["method"],
                route,
                status,
                duration_ms,
                extra={
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "duration_ms": duration_ms,
                    "key_id": getattr(user, "key_id", None),
                    "tenant_id": getattr(user, "tenant_id", None),
                },
            )
            request_id_var.reset(token)
