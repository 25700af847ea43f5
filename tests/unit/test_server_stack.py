"""The HTTP server runs on uvloop and httptools, which uvicorn picks only when installed."""

from __future__ import annotations

from typing import Any

import uvicorn


async def _app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
    return None


def test_uvicorn_resolves_the_fast_event_loop_and_http_parser() -> None:
    # `appliance serve` leaves loop and http on "auto": this fails if either package goes missing.
    config = uvicorn.Config(_app, log_config=None)
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    loop_factory = config.get_loop_factory()
    assert loop_factory is not None and loop_factory.__module__.startswith("uvloop")
