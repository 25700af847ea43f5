"""The API's own documentation pages, served entirely from this host.

Litestar's pages load their scripts, styles, favicon and fonts from public CDNs by default;
in an air-gapped datacenter they render blank, and elsewhere the reader's browser tells
third parties that someone reads this appliance's docs. Here Swagger UI (``/schema`` and
``/schema/swagger``) and Redoc (``/schema/redoc``) load the copies the ``openapi-ui-bundles``
package ships, from ``/schema/assets/``, and every response under ``/schema`` carries a
Content-Security-Policy that lets the browser fetch nothing from anywhere else. The other
renderers Litestar offers (Elements, RapiDoc, Scalar) are not served: they have no offline
bundle here. ``/schema/openapi.json`` is unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import openapi_ui_bundles
from litestar import Router, get
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


@get("/assets/{name:str}", opt=PUBLIC, sync_to_thread=False, include_in_schema=False, cache_control=None)
def _asset(name: Annotated[str, PathParameter(max_length=64)]) -> File:
    found = _FILES.get(name)
    if found is None:
        raise NotFoundException()
    path, media_type = found
    return File(path, media_type=media_type, content_disposition_type="inline", filename=name)


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
            SwaggerRenderPlugin(
                path=["/", "/swagger"],
                js_url=f"{ASSETS}/swagger-ui-bundle.js",
                css_url=f"{ASSETS}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
                favicon=_FAVICON,
            ),
            RedocRenderPlugin(js_url=f"{ASSETS}/redoc.standalone.js", google_fonts=False, favicon=_FAVICON),
        ],
    )
