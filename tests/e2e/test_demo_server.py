"""README command 1's flow: init with a demo tenant, `appliance serve`, then real clients."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import appliance_process


@dataclass
class Served:
    base_url: str
    app_key: str
    operator_key: str
    log: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with appliance_process(tmp_path_factory.mktemp("served"), ready_within_s=60) as proc:
        yield Served(proc.base_url, proc.init["demo"]["app_api_key"], proc.init["operator_api_key"], proc.log)


def test_official_openai_client_lists_models_with_the_demo_key(served: Served) -> None:
    client = openai.OpenAI(base_url=f"{served.base_url}/v1", api_key=served.app_key)
    page = client.models.list()
    assert page.object == "list"


def test_official_openai_client_gets_a_typed_auth_error_with_a_bad_key(served: Served) -> None:
    client = openai.OpenAI(base_url=f"{served.base_url}/v1", api_key="apl_0000000000000000_" + "x" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.models.list()
    assert "API key" in str(info.value)


def test_logs_are_json_with_request_ids_and_hold_no_secrets(served: Served) -> None:
    httpx.get(f"{served.base_url}/v1/models", headers={"Authorization": f"Bearer {served.app_key}"})
    time.sleep(0.3)
    lines = [json.loads(line) for line in served.log.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "appliance.access"]
    assert access
    assert all(line["request_id"] for line in access)
    text = served.log.read_text()
    for secret in (served.app_key, served.operator_key, served.app_key.split("_", 2)[2]):
        assert secret not in text
