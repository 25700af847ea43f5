from __future__ import annotations

from appliance.crypto.sealed_columns import SEALED_COLUMNS
from tests.unit.crypto.factories import BUILDERS


def test_every_sealed_model_has_a_factory() -> None:
    assert {sc.model for sc in SEALED_COLUMNS} <= set(BUILDERS)
