"""The ``upstream`` model kind end to end: one appliance forwarding to a second one.

The second appliance is a real ``appliance serve`` process on loopback serving the local
SmolLM2 and MiniLM. The first (a live in-process server) registers ``upstream`` models
pointing at the second's ``/v1`` with its app key in a 0600 file. With the official openai
client against the first: chat (plain and streamed) and embeddings are answered by the
second; personal data is pseudonymized before it leaves the first, so the second never
holds it (not in its log, not in its database files), and the caller gets the originals
back with no pseudonym tokens left in the answer.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy import select

from appliance.db.models import AuditEntry
from appliance.roles import Role
from tests.support import SeenInputs, Stack, appliance_process, live_stack, make_services, make_settings

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
REMOTE_CHAT = "remote-smol"
REMOTE_EMBED = "remote-minilm"
ECHO_SYSTEM = "You repeat the user's message exactly, character for character, and say nothing else."
SECRET_NAME = "Marguerite Okonkwo-Lindqvist"
SECRET_EMAIL = "m.okonkwo.lindqvist@example.org"
TOKEN = re.compile(r"<[A-Z][A-Z_]*_\d+>")
"""A pseudonym token as the privacy pipeline writes it (<PERSON_1>, <EMAIL_ADDRESS_2>...)."""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass
class Second:
    base_url: str
    app_key: str
    data_dir: Path
    log: Path

    def files_hold(self, value: str) -> list[str]:
        """Every file of this appliance (log, SQLite database and its journals, blobs) holding ``value``."""
        needle = value.encode()
        paths = [self.log, *(p for p in self.data_dir.rglob("*") if p.is_file())]
        return [str(p) for p in paths if needle in p.read_bytes()]

    def audit_facts(self, action_prefix: str) -> list[str]:
        with sqlite3.connect(f"file:{self.data_dir / 'appliance.db'}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT facts FROM audit_entries WHERE action LIKE ?", (action_prefix + "%",)).fetchall()
        return [str(r[0]) for r in rows]


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Second]:
    with appliance_process(tmp_path_factory.mktemp("second")) as proc:
        base, app_key = proc.base_url, proc.init["demo"]["app_api_key"]
        # Load its models now (SmolLM2 may be converted into the shared store the first time),
        # so the forwarded calls below are not racing the first appliance's upstream timeouts.
        headers = {"Authorization": f"Bearer {app_key}"}
        warm = {"model": CHAT, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2}
        httpx.post(f"{base}/v1/chat/completions", json=warm, headers=headers, timeout=300).raise_for_status()
        httpx.post(f"{base}/v1/embeddings", json={"model": EMBED, "input": "hi"}, headers=headers, timeout=120)
        yield Second(base, app_key, proc.data_dir, proc.log)


@pytest.fixture(scope="module")
def seen() -> SeenInputs:
    return SeenInputs()


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory, second: Second, seen: SeenInputs) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("first")
    settings = make_settings(
        tmp / "data",
        f"sqlite:///{tmp / 'a.db'}",
        models={"upstream_timeout_s": 60, "request_timeout_s": 120, "upstream_retries": 1},
    )
    svc = make_services(settings, model_observer=seen)
    key_file = tmp / "second.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(second.app_key + "\n")
    for name, remote in ((REMOTE_CHAT, CHAT), (REMOTE_EMBED, EMBED)):
        svc.model_registry.add(
            name, "upstream", f"{second.base_url}/v1", options={"remote_model": remote, "api_key_file": str(key_file)}
        )
    with live_stack(svc) as stack:
        yield stack


@pytest.fixture(scope="module")
def client(first: Stack) -> openai.OpenAI:
    key = first.key(Role.APP, first.tenant("upstream"))
    return openai.OpenAI(base_url=f"{first.base_url}/v1", api_key=key, max_retries=0, timeout=180)


def test_the_upstream_models_are_listed_and_the_key_file_is_private(client: openai.OpenAI, first: Stack) -> None:
    assert {REMOTE_CHAT, REMOTE_EMBED} <= {m.id for m in client.models.list()}
    key_file = Path(first.services.model_registry.get(REMOTE_CHAT).options["api_key_file"])
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_chat_through_the_second_appliance_answers_plain_and_streamed(
    client: openai.OpenAI, seen: SeenInputs, second: Second
) -> None:
    n = len(seen.since(0))
    entries_before = len(second.audit_facts("chat.completion"))
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of Germany?"}]
    plain = client.chat.completions.create(model=REMOTE_CHAT, messages=messages, temperature=0, max_tokens=24)
    text = plain.choices[0].message.content or ""
    assert "Berlin" in text
    assert plain.model == REMOTE_CHAT
    assert plain.usage is not None and plain.usage.prompt_tokens > 10 and plain.usage.completion_tokens > 0

    chunks = list(
        client.chat.completions.create(
            model=REMOTE_CHAT,
            messages=messages,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == text
    assert len(deltas) > 2  # passed on as deltas, not gathered into one blob
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens

    forwarded = seen.since(n)
    assert [(i.model, i.kind) for i in forwarded] == [(REMOTE_CHAT, "chat")] * 2
    assert forwarded[0].texts == ("What is the capital of Germany?",)
    # Both calls really reached the second appliance (and were audited there).
    assert len(second.audit_facts("chat.completion")) == entries_before + 2


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_personal_data_is_pseudonymized_before_it_leaves_and_restored_for_the_caller(
    client: openai.OpenAI, seen: SeenInputs, first: Stack, second: Second, stream: bool
) -> None:
    n = len(seen.since(0))
    prompt = f"Contact {SECRET_NAME} at {SECRET_EMAIL}"
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": ECHO_SYSTEM},
        {"role": "user", "content": prompt},
    ]
    if stream:
        chunks = client.chat.completions.create(
            model=REMOTE_CHAT, messages=messages, temperature=0, max_tokens=40, stream=True
        )
        answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        reply = client.chat.completions.create(model=REMOTE_CHAT, messages=messages, temperature=0, max_tokens=40)
        answer = reply.choices[0].message.content or ""

    # What left the first appliance: pseudonyms only.
    sent = "\n".join(t for i in seen.since(n) for t in i.texts)
    assert sent, "nothing was forwarded"
    assert SECRET_NAME not in sent and SECRET_EMAIL not in sent and "okonkwo" not in sent.lower()
    assert "<PERSON_1>" in sent and "<EMAIL_ADDRESS_1>" in sent

    # The caller: originals back (SmolLM2 echoes at least one), no pseudonym token left over.
    assert SECRET_NAME in answer or SECRET_EMAIL in answer, answer
    assert not TOKEN.search(answer), answer

    # The first appliance audited the entity types, never the values.
    with first.services.sessions() as s:
        last = s.scalars(
            select(AuditEntry).where(AuditEntry.object == REMOTE_CHAT).order_by(AuditEntry.id.desc()).limit(1)
        ).one()
    assert last.action == ("chat.completion.stream" if stream else "chat.completion")
    assert '"EMAIL_ADDRESS"' in last.facts and '"PERSON"' in last.facts
    assert SECRET_EMAIL not in last.facts and SECRET_NAME not in last.facts

    # The second appliance never held the values: not in its log, not in any file it wrote,
    # and its own detector found no e-mail address in what it was sent.
    assert b"/v1/chat/completions" in second.log.read_bytes()
    assert any(".db" in p for p in second.files_hold("chat.completion")), "the scan does not reach its database"
    for value in (SECRET_EMAIL, SECRET_NAME, "Okonkwo"):
        assert second.files_hold(value) == [], value
    facts = second.audit_facts("chat.completion")
    assert facts and not any("EMAIL_ADDRESS" in f for f in facts)


def test_embeddings_through_the_second_appliance_match_the_local_model(client: openai.OpenAI, seen: SeenInputs) -> None:
    texts = ["The cat sat on the mat.", "A kitten is resting on a rug.", "Quarterly revenue grew by eight percent."]
    n = len(seen.since(0))
    remote = client.embeddings.create(model=REMOTE_EMBED, input=texts)
    local = client.embeddings.create(model=EMBED, input=texts)
    assert remote.model == REMOTE_EMBED
    assert [d.index for d in remote.data] == [0, 1, 2]
    assert remote.usage.prompt_tokens == local.usage.prompt_tokens > 0
    for a, b in zip(remote.data, local.data, strict=True):
        assert len(a.embedding) == 384
        assert a.embedding == pytest.approx(b.embedding, abs=1e-5)
    assert (REMOTE_EMBED, "embedding", tuple(texts)) in [(i.model, i.kind, i.texts) for i in seen.since(n)]


def test_embeddings_pseudonymize_before_forwarding(client: openai.OpenAI, seen: SeenInputs, second: Second) -> None:
    n = len(seen.since(0))
    r = client.embeddings.create(model=REMOTE_EMBED, input=f"Write to {SECRET_NAME} at {SECRET_EMAIL}")
    assert len(r.data[0].embedding) == 384
    sent = "\n".join(t for i in seen.since(n) for t in i.texts)
    assert "<EMAIL_ADDRESS_1>" in sent and SECRET_EMAIL not in sent
    assert second.files_hold(SECRET_EMAIL) == []
