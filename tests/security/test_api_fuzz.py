"""Property-based fuzzing of the whole HTTP API against its own OpenAPI schema (schemathesis).

Every operation the schema documents is called with generated requests, valid and invalid
(positive and negative generation), through a real server on loopback. Every built-in
schemathesis check runs: no 5xx, status codes and content types the schema declares,
bodies that match the schema, invalid data rejected with a 4xx, a request that leaves out
the key (``ignored_auth``) refused. Bounded: a few examples per operation, no shrinking, so
the module stays within seconds.

The three operations that run a model (chat, embeddings, classifications) are fuzzed with
invalid data only: a valid request would run the real model for every example (seconds
each), and what a model does with valid input is tested in tests/e2e. Invalid data must be
refused before any model is touched, which is what this checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import positive_data_acceptance

from appliance.roles import Role
from tests.support import Stack, live_stack, make_services, make_settings

MODEL_RUNNING = {"/v1/chat/completions", "/v1/embeddings", "/v1/classifications"}
MAX_EXAMPLES = 5


@dataclass
class Target:
    stack: Stack
    tenant: str
    keys: dict[Role, str]

    def key_for(self, path: str, method: str) -> str:
        """A key whose role may call the operation, so generated requests get past the guards."""
        if path.startswith("/v1/"):
            return self.keys[Role.APP]
        if "/policy" in path and method == "POST":
            return self.keys[Role.COMPLIANCE]
        return self.stack.operator_key


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with live_stack(make_services(make_settings(tmp / "data", f"sqlite:///{tmp / 'fuzz.db'}"))) as stack:
        tenant = stack.tenant("fuzz")
        keys = {
            Role.APP: stack.key(Role.APP, tenant),
            Role.TENANT_ADMIN: stack.key(Role.TENANT_ADMIN, tenant),
            Role.COMPLIANCE: stack.key(Role.COMPLIANCE),
        }
        yield Target(stack, tenant, keys)


def valid_data_passes_the_decoder(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' ``positive_data_acceptance``, less what a schema cannot say.

    A schema-valid request may still be refused by a rule that needs the stored state or the
    meaning of a value (a policy's YAML, an opaque cursor, "exactly one of text or texts"):
    that is a 422 with a service's problem type. A 422 ``validation-error`` comes from the
    request decoder, so it means the document promised something the server does not accept."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return None
    if response.status_code == 422 and response.json().get("type") == "urn:appliance:problem:validation-error":
        raise AssertionError(f"schema-valid request refused by the decoder: {response.text[:500]}")
    if response.status_code in (400, 413, 415):
        raise AssertionError(f"schema-valid request refused with {response.status_code}: {response.text[:500]}")
    return None


def _schema(target: Target) -> Any:
    schema = schemathesis.openapi.from_url(f"{target.stack.base_url}/schema/openapi.json")
    schema.config.update(base_url=target.stack.base_url)
    schema.config.generation.update(
        max_examples=MAX_EXAMPLES,
        no_shrink=True,
        deterministic=True,
        database="none",
        with_security_parameters=False,  # the key is ours to send (a role that may call the operation)
    )
    return schema


def _fuzz(target: Target, operation: Any, mode: GenerationMode) -> list[str]:
    """Run one operation in one generation mode; the failures as readable lines."""
    failures: list[str] = []
    path, method = operation.path, operation.method.upper()
    headers = {"Authorization": f"Bearer {target.key_for(path, method)}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        if (
            mode == GenerationMode.POSITIVE
            and "tenant" in (case.path_parameters or {})
            and (method, path) != ("DELETE", "/admin/v1/tenants/{tenant}")
        ):  # the tenant that exists, so valid requests reach the services (not deleting it)
            case.path_parameters = {**case.path_parameters, "tenant": target.tenant}
        try:
            case.call_and_validate(
                headers=headers,
                timeout=30,
                excluded_checks=[positive_data_acceptance],
                additional_checks=[valid_data_passes_the_decoder],
            )
        except (AssertionError, FailureGroup) as exc:
            failures.append(f"{method} {path} [{mode.value}]: {str(exc)[:1500]}")

    try:
        run()
    except Unsatisfiable:  # nothing about this operation can be made invalid (no parameters, no key needed)
        assert mode == GenerationMode.NEGATIVE
    return failures


def test_every_operation_survives_generated_requests(target: Target) -> None:
    schema = _schema(target)
    failures: list[str] = []
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        count += 1
        modes = [GenerationMode.NEGATIVE] if operation.path in MODEL_RUNNING else list(GenerationMode)
        for mode in modes:
            failures += _fuzz(target, operation, mode)
    assert count > 40, count
    assert not failures, "\n\n".join(failures)
