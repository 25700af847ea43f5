"""The start banner names the database without its credentials."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from appliance.services.schema import DatabaseSchema


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:////var/lib/appliance/appliance.db", "sqlite:////var/lib/appliance/appliance.db"),
        (
            "postgresql+psycopg://appliance:s3cret-pw@db.internal:5432/appliance",
            "postgresql+psycopg://db.internal:5432/appliance",
        ),
        (
            "postgresql+psycopg://db.internal/appliance?user=appliance&password=s3cret-pw",
            "postgresql+psycopg://db.internal/appliance",
        ),
    ],
)
def test_database_is_described_without_user_password_or_query(url: str, shown: str) -> None:
    schema = DatabaseSchema(create_engine(url))
    try:
        described = schema.describe()
    finally:
        schema.close()
    assert described == shown
    assert "s3cret" not in described
