"""The API docs work air-gapped: no page the appliance serves, and nothing those pages load,
comes from another host; a Content-Security-Policy tells the browser to fetch nothing else.

Three checks: the pages and their styles name no other host; every host named inside the
served scripts is on a reasoned list of names those scripts never fetch (namespace names,
links in error messages, sample values), so a bundle upgrade that adds a fetch fails here;
and a real headless Chromium (Debian's, as the console's browser tests use) loads each page
and sees no request to another host and no request the policy had to refuse."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from playwright.sync_api import sync_playwright

from appliance.api.app import create_app
from appliance.crypto.keyring import MasterKeyring
from appliance.services.container import Services, build_services
from tests.e2e.test_console_browser import CHROMIUM, FLAGS
from tests.support import make_settings, running_server

_ABSOLUTE = re.compile(r"(?i)(?:https?:)?//[a-z0-9][a-z0-9.\-]*(?::\d+)?")
_REFERENCE = re.compile(r"""(?i)\b(?:src|href)\s*=\s*["']([^"']+)["']""")
_CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)""")
_PARAM = re.compile(r"\{[^}]+\}")
_SCRIPT_HOST = re.compile(r"""(?i)(?:\b(?:https?|wss?):|["'`(=,])//([a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,})""")
"""A host in a script: after a scheme, or protocol-relative at the start of a string."""

NEVER_FETCHED = {
    "www.w3.org": "XML, SVG, XLink and MathML namespace names, compared as strings",
    "example.com": "sample values Swagger UI and Redoc generate for uri formats (RFC 2606's reserved name)",
    "json-schema.org": "the JSON Schema dialect's identifier ($schema), compared as a string",
    "spec.openapis.org": "the OpenAPI 3.1 dialect's identifier, compared as a string",
    "swagger.io": "swagger-client's base for resolving relative references in memory; nothing is fetched from it",
    "validator.swagger.io": "Swagger UI's default validatorUrl; the page sets validatorUrl: null, and the badge "
    "shows only for a spec loaded by URL (ours is inline)",
    "spdx.org": "a hyperlink built for a licence identifier in the API's info block (ours names none)",
    "twitter.com": "hashtag hyperlinks of the Markdown autolinker (links, not loads)",
    "www.facebook.com": "hashtag hyperlinks of the Markdown autolinker",
    "instagram.com": "hashtag hyperlinks of the Markdown autolinker",
    "www.tiktok.com": "hashtag hyperlinks of the Markdown autolinker",
    "soundcloud.com": "mention hyperlinks of the Markdown autolinker",
    "github.com": "links in licence comments and error messages",
    "fb.me": "a link in React's prop-types warning",
    "reactjs.org": "a link in React's production error messages",
    "redux.js.org": "a link in Redux's error messages",
    "git.io": "a link in styled-components' error messages",
    "marked.js.org": "a link in marked's warnings",
    "stackoverflow.com": "a link in a source comment",
    "redoc.ly": "links in Redocly's lint and configuration messages",
    "redocly.com": "links in Redocly's messages, and the 'API docs by Redocly' hyperlink in Redoc's menu (a link, "
    "not a load; its logo, which Redoc loads from cdn.redoc.ly, is served out of the bundle)",
}
"""Every host a served script may name, with why naming it fetches nothing. A host not on
this list fails the test: read the new bundle's code before adding it."""

_WATCH_POLICY = """
window.__refused = [];
document.addEventListener("securitypolicyviolation", (e) => window.__refused.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


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


def _served_scripts(client: httpx.Client, base: str) -> dict[str, str]:
    """The scripts the docs pages load, by path, as this host serves them."""
    scripts = {}
    for path in ("/schema", "/schema/swagger", "/schema/redoc"):
        for ref in _REFERENCE.findall(client.get(path).text):
            target = urlsplit(urljoin(base + path, ref)).path
            if target.endswith(".js"):
                scripts[target] = client.get(target).text
    return scripts


def test_served_scripts_name_only_hosts_they_never_fetch(served: tuple[Services, str]) -> None:
    _, base = served
    with httpx.Client(base_url=base, timeout=30) as client:
        scripts = _served_scripts(client, base)
        assert {"/schema/assets/swagger-ui-bundle.js", "/schema/assets/redoc.standalone.js"} <= set(scripts)
        for path, code in scripts.items():
            named = {host.lower() for host in _SCRIPT_HOST.findall(code)}
            assert not named - NEVER_FETCHED.keys(), f"{path} names hosts nobody has reviewed"
        # Swagger UI is told not to use its online validator, on both pages that serve it.
        for page in ("/schema", "/schema/swagger"):
            assert "validatorUrl: null" in client.get(page).text, page


def test_the_policy_lets_the_browser_load_nothing_from_another_host(served: tuple[Services, str]) -> None:
    """Whatever a script might try, the browser refuses it: every fetch directive the policy
    sets allows this host, inline code and data:/blob: URLs only, and default-src 'none'
    covers the directives it leaves out (frames, media, objects, manifests)."""
    _, base = served
    with httpx.Client(base_url=base, timeout=30) as client:
        for path in ("/schema", "/schema/swagger", "/schema/redoc", "/schema/assets/redoc.standalone.js"):
            policy = client.get(path).headers["content-security-policy"]
            directives = {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}
            assert directives["default-src"] == ["'none'"], path
            for name, sources in directives.items():
                assert set(sources) <= {"'none'", "'self'", "'unsafe-inline'", "data:", "blob:"}, (path, name)


def test_in_a_real_browser_the_pages_load_only_from_this_host_and_nothing_is_refused(
    served: tuple[Services, str],
) -> None:
    """Playwright is opened and closed inside the test: while it is open its event loop counts
    as running, and later tests in this process that call asyncio.run() would fail."""
    _, base = served
    own = urlsplit(base).netloc
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: scripts/test installs it (apt-get install -y chromium)")
    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            context = browser.new_context()
            context.set_default_timeout(30_000)
            context.add_init_script(_WATCH_POLICY)
            context.on("request", lambda r: requested.append(r.url))
            for path, rendered in (
                ("/schema", ".swagger-ui .opblock"),  # the same page as /schema/swagger
                ("/schema/redoc", "text=API docs by Redocly"),  # the menu's foot, with Redoc's logo
            ):
                page = context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
                page.goto(base + path)
                page.wait_for_selector(rendered)
                page.wait_for_load_state("networkidle")
                page.wait_for_timeout(300)  # a refused request is reported asynchronously
                assert page.evaluate("window.__refused") == [], f"{path}: the policy had to refuse a load"
                assert not errors, (path, errors)
                page.close()
        finally:
            browser.close()
    web = [urlsplit(u) for u in requested if urlsplit(u).scheme in ("http", "https", "ws", "wss")]
    assert web, "the browser loaded the pages"
    assert {u.netloc for u in web} == {own}, sorted({u.geturl() for u in web if u.netloc != own})


def test_unbundled_renderers_and_the_bundles_sample_pages_are_absent(served: tuple[Services, str]) -> None:
    _, base = served
    with httpx.Client(base_url=base, timeout=30) as client:
        for page in ("/schema/elements", "/schema/rapidoc", "/schema/scalar"):
            assert client.get(page).status_code == 404  # no CDN-only page left behind
        assert client.get("/schema/assets/index.html").status_code == 404  # the bundles' sample pages stay unserved
        assert client.get("/schema/openapi.json").json()["info"]["title"] == "Appliance API"
