"""Factories for real rows holding sealed content in every registered sealed column, shared by
the tamper, canary and rotation tests. Adding a model to ``SEALED_COLUMNS`` means adding one
builder here; ``test_every_sealed_model_has_a_factory`` fails until then."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from appliance.crypto.records import TenantCipher
from appliance.crypto.sealed_columns import SEALED_COLUMNS, SealedColumn
from appliance.db.base import Base, utcnow
from appliance.db.engine import transaction
from appliance.db.models import AuditEntry, Dataset, ModelVersion, PolicyVersion, Pseudonym
from appliance.services.container import Services


@dataclass(frozen=True)
class SealedRef:
    """One sealed value in the database: which column, which row (primary key)."""

    column: SealedColumn
    pk: int | str


def _pseudonym(session: Session, tenant_id: str) -> Pseudonym:
    return Pseudonym(
        tenant_id=tenant_id,
        scope_digest=os.urandom(32),
        value_digest=os.urandom(32),
        entity_type="PERSON",
        token=f"<PERSON_{secrets.token_hex(4)}>",
        value_sealed=b"",
        expires_at=utcnow() + timedelta(days=1),
    )


def _policy_version(session: Session, tenant_id: str) -> PolicyVersion:
    latest = session.scalar(select(func.max(PolicyVersion.version)).where(PolicyVersion.tenant_id == tenant_id))
    return PolicyVersion(
        tenant_id=tenant_id,
        version=(latest or 0) + 1,
        document_sealed=b"",
        comment_sealed=b"",
        content_hash=secrets.token_hex(32),
        author="operator",
    )


def _audit_entry(session: Session, tenant_id: str) -> AuditEntry:
    return AuditEntry(
        tenant_id=tenant_id,
        actor="k1",
        action="chat.completion",
        outcome="ok",
        facts="{}",
        mac_key_version=1,
        prev_mac=b"\0" * 32,
        mac=os.urandom(32),
    )


def _dataset(session: Session, tenant_id: str) -> Dataset:
    return Dataset(
        tenant_id=tenant_id,
        name=f"ds-{secrets.token_hex(4)}",
        task="classification",
        format="jsonl",
        blob_id=secrets.token_hex(8),
        rows=1,
        source_bytes=1,
        content_hash=secrets.token_hex(32),
        stats_sealed=b"",
        created_by="operator",
    )


def _model_version(session: Session, tenant_id: str) -> ModelVersion:
    return ModelVersion(
        tenant_id=tenant_id,
        name=f"m-{secrets.token_hex(4)}",
        version=1,
        kind="classifier",
        source=f"sealed:{secrets.token_hex(8)}",
        card_sealed=b"",
    )


BUILDERS: dict[type[Base], Callable[[Session, str], Any]] = {
    Pseudonym: _pseudonym,
    PolicyVersion: _policy_version,
    AuditEntry: _audit_entry,
    Dataset: _dataset,
    ModelVersion: _model_version,
}


def create_sealed_rows(services: Services, tenant_id: str, plaintext: bytes) -> list[SealedRef]:
    """One row per sealed model with ``plaintext`` sealed into each of its sealed columns."""
    cipher = TenantCipher(services.data_keys)
    # Reserve nonce budget before the write transaction: on SQLite a reservation inside it
    # would wait on our own write lock (the audit service documents the same rule).
    cipher.prepare(tenant_id, n=len(SEALED_COLUMNS))
    refs: list[SealedRef] = []
    with transaction(services.sessions) as session:
        for model, build in BUILDERS.items():
            obj = build(session, tenant_id)
            session.add(obj)
            session.flush()  # the row key (e.g. the audit id) must exist before sealing
            for sc in (c for c in SEALED_COLUMNS if c.model is model):
                sc.seal(cipher, obj, plaintext)
                refs.append(SealedRef(sc, obj.id))
    return refs


def open_ref(services: Services, ref: SealedRef) -> bytes | None:
    with services.sessions() as session:
        obj = session.get(ref.column.model, ref.pk)
        assert obj is not None
        return ref.column.open(TenantCipher(services.data_keys), obj)


def raw_value(services: Services, ref: SealedRef) -> bytes:
    with services.sessions() as session:
        value = session.scalar(select(ref.column.column).where(ref.column.id_column == ref.pk))
        assert value is not None
        return bytes(value)


def set_raw_value(services: Services, ref: SealedRef, value: bytes) -> None:
    with transaction(services.sessions) as session:
        obj = session.get(ref.column.model, ref.pk)
        setattr(obj, ref.column.attribute, value)
