"""The API docs work air-gapped: no page the appliance serves, and nothing those pages load,
comes from another host; a Content-Security-Policy tells the browser to fetch nothing else."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from appliance.api.app import create_app
from appliance.crypto.keyring import MasterKeyring
from appliance.services.container import Services, build_services
from tests.support import make_settings, running_server

_ABSOLUTE = re.compile(r"(?i)(?:https?:)?//[a-z0-9][a-z0-9.\-]*(?::\d+)?")
_REFERENCE = re.compile(r"""(?i)\b(?:src|href)\s*=\s*["']([^"']+)["']""")
_CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)""")
_PARAM = re.compile(r"\{[^}]+\}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, str]]:
    """The real app on loopback; the docs need neither models nor the PII detector."""
    tmp = tmp_path_factory.mktemp("docs")
    settings = make_settings(tmp / "data", f"sqlite:///{tmp / 'a.db'}")
    services = build_services(settings, keyring=MasterKeyring(base64.b64decode(settings.keys.dev_master_key or "")))
    services.schema.upgrade()
    try:
        with running_server(services) as url:
            yield services, url
    finally:
        services.close()


def _html_routes(services: Services) -> list[str]:
    """Every GET route whose handler answers HTML, path parameters filled with a word."""
    paths = set()
    for route in create_app(services).routes:
        for handler in getattr(route, "route_handlers", []):
            if (
                "GET" in handler.http_methods
                and getattr(handler.media_type, "value", handler.media_type) == "text/html"
            ):
                paths.add(_PARAM.sub("no-such-page", route.path))
    return sorted(paths)


def _hosts_named(text: str) -> set[str]:
    return {m.group(0).split("//", 1)[1].lower() for m in _ABSOLUTE.finditer(text)}


def test_every_html_route_and_what_it_loads_stays_on_this_host(served: tuple[Services, str]) -> None:
    services, base = served
    own = urlsplit(base).netloc
    routes = _html_routes(services)
    assert {"/schema", "/schema/swagger", "/schema/redoc"} <= set(routes)
    loaded: set[str] = set()
    with httpx.Client(base_url=base, timeout=30) as client:
        for path in routes:
            page = client.get(path)
            assert page.headers["content-type"].startswith("text/html"), path
            assert page.headers["content-security-policy"].startswith("default-src 'none'"), path
            assert _hosts_named(page.text) <= {own}, f"{path} names another host"
            for ref in _REFERENCE.findall(page.text):
                absolute = urlsplit(urljoin(base + path, ref))
                assert absolute.netloc == own, f"{path} loads {ref}"
                loaded.add(absolute.path)
        assert loaded, "the pages load their scripts from this host"
        for asset in sorted(loaded):
            response = client.get(asset)
            assert response.status_code == 200, asset
            assert response.headers["content-security-policy"].startswith("default-src 'none'"), asset
            if asset.endswith(".css"):
                assert not [u for u in _CSS_URL.findall(response.text) if urlsplit(u).netloc], asset


def test_the_policy_names_no_other_source_and_unbundled_renderers_are_absent(served: tuple[Services, str]) -> None:
    _, base = served
    with httpx.Client(base_url=base, timeout=30) as client:
        policy = client.get("/schema").headers["content-security-policy"]
        sources = {word for directive in policy.split(";") for word in directive.split()[1:]}
        assert sources <= {"'none'", "'self'", "'unsafe-inline'", "data:", "blob:"}
        for page in ("/schema/elements", "/schema/rapidoc", "/schema/scalar"):
            assert client.get(page).status_code == 404  # no CDN-only page left behind
        assert client.get("/schema/assets/index.html").status_code == 404  # the bundles' sample pages stay unserved
        assert client.get("/schema/openapi.json").json()["info"]["title"] == "Appliance API"
