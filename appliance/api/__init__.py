"""HTTP API (Litestar). Thin: parse, call a service, shape the response."""

from appliance.api.app import create_app

__all__ = ["create_app"]
