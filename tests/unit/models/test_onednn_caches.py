"""oneDNN's per-shape caches are bounded before the server runs a model (appliance/models/onednn.py).

Under traffic of varied texts, torch's defaults (1,024 entries in each of two caches) let
the name model's bfloat16 products take over 500 MiB: docs/hardening.md (Soak)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import uvicorn
from click.testing import CliRunner

import appliance.api.app
import appliance.cli.server
from appliance.cli.context import CliState
from appliance.errors import ConfigError
from appliance.models.onednn import CACHE_CAPACITIES, bound_onednn_caches
from appliance.services.metrics import malloc_memory_reader
from tests.support import make_settings

REPO = Path(__file__).resolve().parents[3]
MIB = 1 << 20


def test_defaults_fill_only_what_the_operator_left_unset() -> None:
    env = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"}
    assert bound_onednn_caches(env) == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "1"}
    assert CACHE_CAPACITIES == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64", "LRU_CACHE_CAPACITY": "1"}
    assert bound_onednn_caches({}) == CACHE_CAPACITIES


@pytest.mark.parametrize("value", ["0", " 0", "-1"])
def test_an_ideep_capacity_below_one_is_refused(value: str) -> None:
    # LRU_CACHE_CAPACITY=0 makes torch segfault at its first bfloat16 matrix product.
    with pytest.raises(ConfigError, match="LRU_CACHE_CAPACITY"):
        bound_onednn_caches({"LRU_CACHE_CAPACITY": value})


@pytest.mark.parametrize("name", sorted(CACHE_CAPACITIES))
@pytest.mark.parametrize("value", ["abc", "", "1.5", "64 MiB"])
def test_a_capacity_that_is_no_whole_number_is_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        bound_onednn_caches({name: value})


class _Privacy:
    seen: dict[str, str | None] | None = None

    def warm_up(self) -> None:  # the detector's load: the process's first oneDNN call
        self.seen = {name: os.environ.get(name) for name in CACHE_CAPACITIES}


class _Schema:
    def is_current(self) -> bool:
        return True


class _Services:
    def __init__(self) -> None:
        self.privacy = _Privacy()
        self.schema = _Schema()


def test_serve_bounds_the_caches_before_the_detector_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CACHE_CAPACITIES:  # set, then removed: the monkeypatch removes what serve sets afterwards
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: started.append(app))
    monkeypatch.setattr(appliance.api.app, "create_asgi", lambda services: "asgi")
    monkeypatch.setattr(appliance.cli.server, "configure_logging", lambda *_: None)
    monkeypatch.setattr(appliance.cli.server, "announce", lambda *_: None)
    monkeypatch.setattr(appliance.cli.server, "start_facts", lambda *_: [])
    monkeypatch.setattr(appliance.cli.server.faulthandler, "register", lambda *_, **__: None)
    services = _Services()
    state = CliState(None, _settings=make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'a.db'}"))
    state._services = services  # type: ignore[assignment]  # a stand-in with what serve touches

    result = CliRunner().invoke(appliance.cli.server.serve, ["--no-warmup"], obj=state)

    assert result.exit_code == 0, result.output
    assert started == ["asgi"]
    assert services.privacy.seen == CACHE_CAPACITIES


_PROBE = """
import sys, torch, torch.nn.functional as F
from appliance.models.onednn import bound_onednn_caches
from appliance.services.metrics import malloc_memory_reader
if sys.argv[1] == "bounded":
    bound_onednn_caches()
torch.set_num_threads(1)
read = malloc_memory_reader(None)
w = torch.randn(1536, 384).to(torch.bfloat16)  # the name model's up-projection
with torch.inference_mode():
    F.linear(torch.randn(1, 384).to(torch.bfloat16), w)
    before = read().in_use
    for rows in range(2, 302):  # 300 new shapes, as texts of 300 lengths would make
        F.linear(torch.randn(rows, 384).to(torch.bfloat16), w)
    print(read().in_use - before)
"""


def _growth(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in CACHE_CAPACITIES}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


def test_the_capacities_bound_what_new_shapes_of_bfloat16_products_keep() -> None:
    """In a fresh process each (the libraries read the capacities once): torch's defaults keep
    about half a MiB per new shape; the appliance's keep at most 65 entries. Also fails if a
    torch upgrade renames either variable."""
    if malloc_memory_reader(None) is None:
        pytest.skip("needs glibc's mallinfo2")
    unbounded = _growth("default")
    if unbounded < 80 * MIB:
        pytest.skip(f"torch kept {unbounded / MIB:.0f} MiB: it does not run bfloat16 products through oneDNN here")
    bounded = _growth("bounded")
    assert bounded < 40 * MIB, (bounded / MIB, unbounded / MIB)
    assert bounded < unbounded / 3, (bounded / MIB, unbounded / MIB)
