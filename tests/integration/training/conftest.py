from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.models import support as model_support


@pytest.fixture(scope="session")
def smollm2_dir(request: pytest.FixtureRequest) -> Path:
    return model_support.smollm2_dir(model_support.store_root(request.config))
