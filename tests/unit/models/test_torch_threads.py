"""How many intra-op threads local models get: half the cores by default, or the setting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from appliance.models.manager import configure_torch_threads
from tests.support import make_services, make_settings


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("restore_threads")
def test_by_default_models_leave_half_the_cores_to_the_request_path() -> None:
    n = configure_torch_threads()
    assert n == max(1, len(os.sched_getaffinity(0)) // 2)
    assert torch.get_num_threads() == n


@pytest.mark.usefixtures("restore_threads")
def test_the_setting_decides_when_given(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'a.db'}")
    settings = settings.model_copy(update={"models": settings.models.model_copy(update={"torch_threads": 3})})
    services = make_services(settings)
    try:
        services.models  # building the manager configures torch  # noqa: B018
        assert torch.get_num_threads() == 3
    finally:
        services.close()
