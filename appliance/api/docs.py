"""The API's own documentation pages, served entirely from this host.

Litestar's pages load their scripts, styles, favicon and fonts from public CDNs by default;
in an air-gapped datacenter they render blank, and elsewhere the reader's browser tells
third parties that someone reads this appliance's docs. Here Swagger UI (``/schema`` and
``/schema/swagger``) and Redoc (``/schema/redoc``) load the copies the ``openapi-ui-bundles``
package ships, from ``/schema/assets/``, and every response under ``/schema`` carries a
Content-Security-Policy that lets the browser fetch nothing from anywhere else. The other
renderers Litestar offers (Elements, RapiDoc, Scalar) are not served: they have no offline
bundle here. ``/schema/openapi.json`` is unchanged.

Two things in the bundles would still reach out at run time, and are turned off: Swagger UI's
online validator (``validatorUrl: null`` in its start-up call) and the logo of Redoc's "API
docs by Redocly" link, which Redoc loads from cdn.redoc.ly (the served bundle names an empty
``data:`` image instead; Redoc hides an image that does not load, and the link text stays).
The other URLs inside the bundles are never fetched: namespace names, sample values and
links in error messages (``tests/integration/test_api_docs_offline.py`` lists each host).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import openapi_ui_bundles
from litestar import Request, Response, Router, get
from litestar.datastructures import ResponseHeader
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import PathParameter
from litestar.response import File

import appliance
from appliance.api.auth import PUBLIC

SCHEMA_PATH = "/schema"
ASSETS = f"{SCHEMA_PATH}/assets"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        # The pages inline the schema and the start-up call; nothing else runs.
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",  # Swagger UI's "Try it out" calls this host only
        "worker-src 'self' blob:",  # Redoc's search runs in a worker built from a blob
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

_SWAGGER = openapi_ui_bundles.swagger_ui.static_path
_REDOC = openapi_ui_bundles.redoc.static_path
_FILES: dict[str, tuple[Path, str]] = {
    "swagger-ui-bundle.js": (_SWAGGER / "swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui-standalone-preset.js": (_SWAGGER / "swagger-ui-standalone-preset.js", "text/javascript"),
    "swagger-ui.css": (_SWAGGER / "swagger-ui.css", "text/css"),
    "favicon-32x32.png": (_SWAGGER / "favicon-32x32.png", "image/png"),
    "redoc.standalone.js": (_REDOC / "redoc.standalone.js", "text/javascript"),
}
"""Only these files are served: the bundles' own sample pages would load from the internet."""

_FAVICON = f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>"

_REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
_SWAGGER_START = b"dom_id: '#swagger-container',"


def _exactly_once(text: bytes, part: bytes, where: str) -> None:
    """A vendored file changed shape (a new version): fail loudly rather than serve it unchanged."""
    if text.count(part) != 1:
        raise RuntimeError(f"{where} no longer holds {part.decode()!r} once; review what it loads before serving it")


@functools.cache
def _redoc_bundle() -> bytes:
    """Redoc with its attribution logo pointed at an empty ``data:`` image instead of cdn.redoc.ly."""
    bundle = _FILES["redoc.standalone.js"][0].read_bytes()
    _exactly_once(bundle, _REDOC_LOGO, "redoc.standalone.js")
    return bundle.replace(_REDOC_LOGO, b"data:,")


@get("/assets/{name:str}", opt=PUBLIC, sync_to_thread=False, include_in_schema=False, cache_control=None)
def _asset(name: Annotated[str, PathParameter(max_length=64)]) -> File | Response[bytes]:
    found = _FILES.get(name)
    if found is None:
        raise NotFoundException()
    path, media_type = found
    if name == "redoc.standalone.js":
        return Response(_redoc_bundle(), media_type=media_type)
    return File(path, media_type=media_type, content_disposition_type="inline", filename=name)


class _OfflineSwagger(SwaggerRenderPlugin):
    """Swagger UI's page with ``validatorUrl: null``: never ask validator.swagger.io about the spec."""

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        page = super().render(request, openapi_schema)
        _exactly_once(page, _SWAGGER_START, "Litestar's Swagger UI page")
        return page.replace(_SWAGGER_START, _SWAGGER_START + b"\n                  validatorUrl: null,")


def openapi_config() -> OpenAPIConfig:
    router = Router(
        SCHEMA_PATH,
        route_handlers=[_asset],
        include_in_schema=False,
        response_headers=[
            ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
            ResponseHeader(name="Referrer-Policy", value="no-referrer"),
            ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
        ],
    )
    return OpenAPIConfig(
        title="Appliance API",
        version=appliance.__version__,
        description="Privacy-first, OpenAI-compatible AI server.",
        components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}),
        security=[{"bearer": []}],
        openapi_router=router,
        render_plugins=[
            _OfflineSwagger(
                path=["/", "/swagger"],
                js_url=f"{ASSETS}/swagger-ui-bundle.js",
                css_url=f"{ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
                favicon=_FAVICON,
            ),
            RedocRenderPlugin(js_url=f"{ASSETS}/redoc.standalone.js", google_fonts=False, favicon=_FAVICON),
        ],
    )
