"""One readable access line per request in both log formats: method, route template,
status and duration, plus the request id; never a key's secret."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.crypto.keyring import MasterKeyring
from appliance.logs import configure_logging
from appliance.services.container import Services, build_services
from tests.support import make_settings, running_server


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    tmp = tmp_path_factory.mktemp("access")
    settings = make_settings(tmp / "data", f"sqlite:///{tmp / 'a.db'}")
    svc = build_services(settings, keyring=MasterKeyring(base64.b64decode(settings.keys.dev_master_key or "")))
    svc.schema.upgrade()
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def logged(request: pytest.FixtureRequest) -> Iterator[tuple[str, io.StringIO]]:
    """The process's logging as ``appliance serve`` sets it up, written to a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    configure_logging("INFO", request.param, stream=buffer)
    try:
        yield request.param, buffer
    finally:
        root.handlers[:], root.level = saved
        for name in ("alembic.runtime.migration", "sentence_transformers", "uvicorn.error"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def _access_lines(fmt: str, text: str) -> list[dict[str, object]]:
    """The access lines as facts, parsed from either format."""
    if fmt == "json":
        rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return [r for r in rows if r.get("logger") == "appliance.access"]
    pattern = re.compile(
        r"^\S+ \S+ INFO \[(?P<request_id>[0-9a-f]{32})\] appliance\.access: "
        r"(?P<method>[A-Z]+) (?P<route>\S+) (?P<status>\d{3}) (?P<duration_ms>\d+\.\d) ms(?P<rest>.*)$"
    )
    found = [pattern.match(line) for line in text.splitlines() if "appliance.access" in line]
    assert all(found), text
    return [m.groupdict() for m in found if m]


@pytest.mark.parametrize("logged", ["console", "json"], indirect=True)
def test_each_request_logs_method_route_status_and_duration(
    services: Services, logged: tuple[str, io.StringIO], tmp_path: Path
) -> None:
    fmt, buffer = logged
    secret = "apl_0123456789abcdef_" + "s" * 43
    with running_server(services) as base, httpx.Client(base_url=base) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/admin/v1/tenants/acme", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
        assert client.get("/no/such/path").status_code == 404
    lines = _access_lines(fmt, buffer.getvalue())
    seen = {(str(r["method"]), str(r["route"]), int(str(r["status"]))) for r in lines}
    assert {
        ("GET", "/healthz", 200),
        ("GET", "/admin/v1/tenants/{tenant}", 401),  # the route template, not the tenant's name
        ("GET", "(unrouted)", 404),
    } <= seen
    assert all(float(str(r["duration_ms"])) >= 0 and r["request_id"] for r in lines)
    assert "acme" not in "".join(str(r["route"]) for r in lines)
    assert "s" * 43 not in buffer.getvalue()
