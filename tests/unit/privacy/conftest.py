"""One real detector per test session: loading spaCy takes seconds, analyzing milliseconds."""

from __future__ import annotations

import pytest

from appliance.config import PrivacySettings
from appliance.privacy.detection import Detector


@pytest.fixture(scope="session")
def detector() -> Detector:
    return Detector(PrivacySettings())


@pytest.fixture(scope="session")
def patterns_detector() -> Detector:
    return Detector(PrivacySettings(patterns_only=True))
