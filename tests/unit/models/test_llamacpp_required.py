"""CI cannot pass by skipping the llama.cpp engine it meant to test.

``scripts/test`` sets ``APPLIANCE_REQUIRE_LLAMACPP=1`` when the setup installed the
``llamacpp`` extra; then a missing ``llama_cpp`` fails the engine's test module instead of
skipping it. The missing extra is simulated the way Python itself blocks an import (a None
entry in ``sys.modules``) in a separate pytest process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MODULE = "tests/unit/models/test_llamacpp.py"
WITHOUT_LLAMA_CPP = (
    "import sys; sys.modules['llama_cpp'] = None; import pytest; "
    f"sys.exit(pytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider', {MODULE!r}]))"
)


def collect_without_the_extra(**env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "APPLIANCE_REQUIRE_LLAMACPP"} | env
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_LLAMA_CPP], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
@pytest.mark.parametrize(("env", "fails"), [({}, False), ({"APPLIANCE_REQUIRE_LLAMACPP": "1"}, True)])
def test_a_missing_engine_is_skipped_unless_ci_requires_it(env: dict[str, str], fails: bool) -> None:
    done = collect_without_the_extra(**env)
    output = done.stdout + done.stderr
    if fails:
        assert done.returncode != 0, output
        assert "APPLIANCE_REQUIRE_LLAMACPP=1" in output
    else:
        assert done.returncode == 0, output
        assert "test_seeded_sampling_repeats" in output  # collected, and skipped when run
