from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.services.container import Services
from tests.support import Stack, database_url, live_stack, make_services, make_settings

BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]

# The longest test files (a minute or more each on 2 cores: the offline bundle built and
# installed, the CLI's subprocesses, worker kills, the shipped lists rebuilt). pytest-xdist
# hands whole files to its workers in collection order, so these start first and the many
# short files fill in beside them, instead of one long file running alone at the end.
_LONGEST_FIRST = (
    "tests/integration/test_installer.py",
    "tests/integration/test_cli.py",
    "tests/integration/test_finetune_worker_kill.py",
    "tests/integration/test_key_rotation_cli.py",
    "tests/unit/privacy/test_gazetteers.py",
    "tests/unit/privacy/test_name_lexicon.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(_LONGEST_FIRST)}
    root = Path(__file__).resolve().parents[1]

    def key(item: pytest.Item) -> int:
        return rank.get(item.path.resolve().relative_to(root).as_posix(), len(rank))

    items.sort(key=key)  # stable: the order within and among the other files is kept


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
    with (
        database_url(str(request.param), tmp) as url,
        live_stack(make_services(make_settings(tmp / "data", url))) as stack,
    ):
        yield stack


@pytest.fixture(scope="session")
def support_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real classifier (labels ``billing``, ``technical``), trained once per session."""
    from tests.unit.models.support import train_support_classifier

    return train_support_classifier(tmp_path_factory.mktemp("support-classifier"))
