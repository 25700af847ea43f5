from __future__ import annotations

import pytest

from appliance.models.chat import LocalChatRunner
from appliance.models.embeddings import LocalEmbeddingRunner
from tests.unit.models import support


@pytest.fixture(scope="session")
def chat(request: pytest.FixtureRequest) -> LocalChatRunner:
    return support.shared_chat(support.store_root(request.config))


@pytest.fixture(scope="session")
def embeddings() -> LocalEmbeddingRunner:
    return support.shared_embeddings()
