from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.db.models import Role
from appliance.services.container import Services
from tests.support import Stack, database_url, make_services, make_settings, running_server

BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def services(backend: str, tmp_path: Path) -> Iterator[Services]:
    """Migrated services on a fresh database of each backend."""
    with database_url(backend, tmp_path) as url:
        svc = make_services(make_settings(tmp_path / "data", url))
        try:
            yield svc
        finally:
            svc.close()


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A live server per backend, shared by a module's tests (they use unique tenant names)."""
    tmp = tmp_path_factory.mktemp("stack")
    with database_url(str(request.param), tmp) as url:
        svc = make_services(make_settings(tmp / "data", url))
        with running_server(svc) as base_url:
            from appliance.services.principal import Principal

            op = svc.api_keys.create(Principal.local_operator(), role=Role.OPERATOR, name="op").api_key
            s = Stack(svc, base_url, op)
            try:
                yield s
            finally:
                s.close()
                svc.close()
