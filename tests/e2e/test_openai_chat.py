"""The official openai client against a live appliance serving real local models, with the
privacy pipeline end to end: the model sees pseudonyms, the caller gets originals back."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from appliance.db.models import AuditEntry, Pseudonym
from appliance.roles import Role
from appliance.services.principal import Principal
from tests.support import SeenInputs, Stack, live_stack, make_services, make_settings

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seen() -> SeenInputs:
    return SeenInputs()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, seen: SeenInputs) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("chat")
    svc = make_services(make_settings(tmp / "data", f"sqlite:///{tmp / 'a.db'}"), model_observer=seen)
    with live_stack(svc) as stack:
        yield stack


@pytest.fixture(scope="module")
def client(live: Stack) -> openai.OpenAI:
    key = live.key(Role.APP, live.tenant("chat"))
    return openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=key, max_retries=0, timeout=300)


def test_models_are_listed(client: openai.OpenAI) -> None:
    assert {CHAT, EMBED} <= {m.id for m in client.models.list()}


def test_smollm2_knows_the_capital_of_germany(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "What is the capital of Germany?"}],
        temperature=0,
        max_tokens=24,
    )
    assert "Berlin" in (r.choices[0].message.content or "")
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_answer_equals_the_plain_one(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Name three colours."}]
    plain = client.chat.completions.create(model=CHAT, messages=messages, temperature=0, max_tokens=20)  # type: ignore[arg-type]
    chunks = list(
        client.chat.completions.create(
            model=CHAT,
            messages=messages,
            temperature=0,
            max_tokens=20,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        plain.choices[0].finish_reason
    ]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]


ECHO_SYSTEM = "You repeat the user's message exactly, character for character, and say nothing else."
SECRET_NAME = "Marguerite Okonkwo-Lindqvist"
SECRET_EMAIL = "m.okonkwo.lindqvist@example.org"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_model_sees_only_pseudonyms_and_caller_gets_originals(
    client: openai.OpenAI, seen: SeenInputs, live: Stack, stream: bool
) -> None:
    prompt = f"Contact {SECRET_NAME} at {SECRET_EMAIL}"
    before = len(seen.inputs)
    kwargs = {
        "model": CHAT,
        "temperature": 0,
        "max_tokens": 40,
        "messages": [{"role": "system", "content": ECHO_SYSTEM}, {"role": "user", "content": prompt}],
    }
    if stream:
        answer = "".join(
            c.choices[0].delta.content or "" for c in client.chat.completions.create(**kwargs, stream=True) if c.choices
        )
    else:
        answer = client.chat.completions.create(**kwargs).choices[0].message.content or ""
    model_side = "\n".join(t for i in seen.inputs[before:] for t in i.texts)
    assert SECRET_NAME not in model_side and SECRET_EMAIL not in model_side
    assert "<PERSON_1>" in model_side and "<EMAIL_ADDRESS_1>" in model_side
    # SmolLM2 echoes (some of) the tokens; the appliance puts the originals back for the caller.
    assert SECRET_NAME in answer or SECRET_EMAIL in answer, answer
    assert "<PERSON_1>" not in answer and "<EMAIL_ADDRESS_1>" not in answer
    with live.services.sessions() as s:
        stored = b"".join(p.value_sealed + p.token.encode() for p in s.scalars(select(Pseudonym)))
    assert SECRET_EMAIL.encode() not in stored


def test_blocked_entity_is_a_422_naming_the_type_not_the_value(client: openai.OpenAI, seen: SeenInputs) -> None:
    card = "4111 1111 1111 1111"
    before = len(seen.inputs)
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": f"Charge card {card}"}])
    assert "CREDIT_CARD" in str(info.value)
    assert card not in str(info.value)
    assert len(seen.inputs) == before  # the model never saw it


def test_unknown_model_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])


def test_unsupported_options_are_refused_clearly(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError, match="tools"):
        client.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}], n=2)


@pytest.mark.parametrize(
    "options",
    [
        {"store": False},
        {"metadata": {"team": "support"}},
        {"service_tier": "auto"},
        {"parallel_tool_calls": False},
        {"tool_choice": "none"},
        {"logit_bias": {}},
        {"top_logprobs": 0},
        {"modalities": ["text"]},
    ],
    ids=lambda o: next(iter(o)),
)
def test_options_frameworks_send_by_default_are_accepted(client: openai.OpenAI, options: dict[str, Any]) -> None:
    """Frameworks built on the OpenAI API send these with neutral values; they change nothing here."""
    r = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=2, **options
    )
    assert r.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"logit_bias": {"42": 5}}, "logit_bias"),
        ({"top_logprobs": 3}, "logprobs"),
        ({"tool_choice": "required"}, "tools"),
        ({"modalities": ["text", "audio"]}, "text"),
    ],
    ids=["logit_bias", "top_logprobs", "tool_choice", "audio"],
)
def test_options_that_would_change_the_answer_are_refused_by_name(
    client: openai.OpenAI, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(openai.UnprocessableEntityError, match=named):
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}], **options)


def test_embeddings_dimensions_may_name_the_native_size_only(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model=EMBED, input="hello", dimensions=384)
    assert len(r.data[0].embedding) == 384
    with pytest.raises(openai.UnprocessableEntityError, match="384"):
        client.embeddings.create(model=EMBED, input="hello", dimensions=128)


@pytest.mark.parametrize("tokens", [[464, 3797], [[464, 3797], [40, 1093]]], ids=["one", "several"])
def test_embeddings_of_token_ids_are_refused_with_advice(client: openai.OpenAI, tokens: list[Any]) -> None:
    """OpenAI takes token ids from its own tokenizer (LangChain sends them by default)."""
    with pytest.raises(openai.UnprocessableEntityError, match="token ids"):
        client.embeddings.create(model=EMBED, input=tokens)
    with pytest.raises(openai.UnprocessableEntityError, match="list of strings"):
        client.embeddings.create(model=EMBED, input=["fine", None])  # type: ignore[list-item]


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))


def test_embeddings_related_sentences_are_closer(client: openai.OpenAI) -> None:
    r = client.embeddings.create(
        model=EMBED,
        input=[
            "The cat sat on the mat.",
            "A kitten is resting on a rug.",
            "Quarterly revenue grew by eight percent.",
        ],
    )
    a, b, c = (d.embedding for d in r.data)
    assert _cos(a, b) > _cos(a, c) + 0.2
    assert r.usage.prompt_tokens > 0


def test_embeddings_base64_matches_float(client: openai.OpenAI, live: Stack) -> None:
    text = "Privacy first."
    floats = client.embeddings.create(model=EMBED, input=text).data[0].embedding  # the client decodes base64 itself
    raw = httpx.post(
        f"{live.base_url}/v1/embeddings",
        headers={"Authorization": f"Bearer {client.api_key}"},
        json={"model": EMBED, "input": text, "encoding_format": "float"},
    ).json()
    assert all(abs(x - y) < 1e-6 for x, y in zip(floats, raw["data"][0]["embedding"], strict=True))


def test_every_model_call_is_audited_without_values(client: openai.OpenAI, live: Stack) -> None:
    client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": f"Hi, I am {SECRET_NAME}"}], max_tokens=5, temperature=0
    )
    with live.services.sessions() as s:
        entries = s.scalars(select(AuditEntry).where(AuditEntry.action.like("chat.%"))).all()
    assert entries
    last = entries[-1]
    assert last.object == CHAT and last.outcome == "ok" and last.policy_version is None
    assert '"PERSON"' in last.facts
    all_text = " ".join(e.facts + (e.object or "") for e in entries)
    assert SECRET_NAME not in all_text and "Okonkwo" not in all_text
    assert live.services.audit.verify().ok


def test_when_audit_cannot_be_written_the_call_fails_with_503(
    client: openai.OpenAI, live: Stack, tmp_path: Path
) -> None:
    from sqlalchemy import text

    with live.services.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entries RENAME TO audit_entries_away"))
    try:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hello"}], max_tokens=3)
        assert info.value.status_code == 503
    finally:
        with live.services.engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_entries_away RENAME TO audit_entries"))


def test_tenant_policy_body_limit_is_enforced(live: Stack) -> None:
    tenant = live.tenant("small")
    officer = live.client(live.key(Role.COMPLIANCE))
    doc = "extends: default\nlimits:\n  max_request_bytes: 2048\n"
    assert officer.post(f"/admin/v1/tenants/{tenant}/policy", json={"document": doc}).status_code == 201
    app = live.client(live.key(Role.APP, tenant))
    big = app.post("/v1/embeddings", json={"model": EMBED, "input": "word " * 1000})
    assert big.status_code == 413
    assert big.json()["type"] == "urn:appliance:problem:body-too-large"
    assert app.post("/v1/embeddings", json={"model": EMBED, "input": "short"}).status_code == 200


def test_a_model_registered_after_the_model_list_was_read_is_served_at_once(live: Stack) -> None:
    from appliance.models.store import minilm_directory

    tenant = live.tenant("late")
    client = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=live.key(Role.APP, tenant), max_retries=0)
    assert "minilm-late" not in {m.id for m in client.models.list()}
    client.embeddings.create(model=EMBED, input="warm")  # the tenant's model list is now remembered
    added = live.services.model_registry.add("minilm-late", "embedding", str(minilm_directory()), tenant=tenant)
    assert added.source.startswith("sealed:")  # a tenant's own model is served from its sealed files
    assert len(client.embeddings.create(model="minilm-late", input="hello").data[0].embedding) == 384


def test_the_tenant_rate_limit_holds_for_remembered_policies(live: Stack) -> None:
    tenant = live.tenant("limited")
    live.services.policies.apply(
        Principal.local_operator(), tenant, "extends: default\nlimits:\n  requests_per_minute: 2\n", "tight"
    )
    client = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=live.key(Role.APP, tenant), max_retries=0)
    for _ in range(2):
        client.embeddings.create(model=EMBED, input="within the limit")
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model=EMBED, input="one too many")
