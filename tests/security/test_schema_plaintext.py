"""No content column in plaintext: every column that can hold text or bytes is either sealed
(registered in ``appliance.crypto.sealed_columns``) or listed below as metadata with a reason.

Adding a String/Text/LargeBinary/JSON column without classifying it fails here, both in the
ORM metadata and in the schema the migrations actually build (SQLite and PostgreSQL).
"""

from __future__ import annotations

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    Float,
    Integer,
    Interval,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Time,
    TypeDecorator,
    inspect,
)
from sqlalchemy.types import TypeEngine

import appliance.db.models  # noqa: F401  (registers every table on Base.metadata)
from appliance.crypto.sealed_columns import SEALED_COLUMNS
from appliance.db.base import Base
from appliance.services.container import Services

# table.column -> why it is not tenant content. Keep each reason to one line.
METADATA_COLUMNS: dict[str, str] = {
    "tenants.id": "random UUID",
    "tenants.slug": "tenant name chosen by the operator; identifies the tenant, not its content",
    "tenants.display_name": "operator-chosen label for the tenant, shown in admin lists",
    "api_keys.id": "public random key id",
    "api_keys.tenant_id": "tenant UUID",
    "api_keys.role": "one of four fixed role names",
    "api_keys.name": "admin-chosen credential label (documented: not for personal data)",
    "api_keys.secret_hash": "HMAC of the secret under a system data key",
    "api_keys.created_by": "public key id of the creator",
    "data_keys.scope": "tenant UUID or 'system'",
    "data_keys.tenant_id": "tenant UUID",
    "data_keys.purpose": "fixed purpose name",
    "data_keys.kek_id": "public fingerprint of the master key",
    "data_keys.wrapped": "the DEK, AES-GCM-wrapped by the master key",
    "pseudonyms.tenant_id": "tenant UUID",
    "pseudonyms.scope_digest": "keyed digest of the conversation scope",
    "pseudonyms.value_digest": "keyed digest of the original value (lookups only)",
    "pseudonyms.entity_type": "entity type tag such as PERSON",
    "pseudonyms.token": "generated random pseudonym token",
    "blobs.id": "random UUID",
    "blobs.tenant_id": "tenant UUID",
    "blobs.kind": "fixed blob kind name",
    "policy_versions.tenant_id": "tenant UUID",
    "policy_versions.content_hash": "digest of the sealed document, to recognise equal versions",
    "policy_versions.author": "public key id of the author",
    "tenant_policies.tenant_id": "tenant UUID",
    "audit_entries.tenant_id": "tenant UUID",
    "audit_entries.actor": "public key id",
    "audit_entries.action": "fixed action name",
    "audit_entries.object": "id of the object acted on (ids and slugs only)",
    "audit_entries.outcome": "fixed outcome name",
    "audit_entries.facts": "counts and entity types, never values (the audit service refuses free text)",
    "audit_entries.prev_mac": "HMAC chain link",
    "audit_entries.mac": "HMAC chain link",
    "audit_checkpoints.last_entry_mac": "HMAC chain head",
    "audit_checkpoints.signature": "HMAC over the checkpoint",
    "registered_models.id": "random UUID",
    "registered_models.name": "model name chosen by the operator",
    "registered_models.kind": "fixed model kind",
    "registered_models.source": "path or URL of the model weights",
    "registered_models.device": "device name such as cpu or cuda:0",
    "registered_models.owner_scope": "tenant UUID or 'shared'",
    "registered_models.owner_tenant_id": "tenant UUID",
    "registered_models.options": "runner options chosen by the operator (batch sizes, dtypes)",
    "datasets.id": "random UUID",
    "datasets.tenant_id": "tenant UUID",
    "datasets.name": "slug the tenant admin names the dataset by (documented: not for personal data)",
    "datasets.task": "fixed task name",
    "datasets.format": "jsonl or csv",
    "datasets.blob_id": "random UUID of the sealed blob holding the rows",
    "datasets.content_hash": "keyed HMAC of the sealed rows, to recognise equal datasets",
    "datasets.created_by": "public key id of the uploader",
    "finetune_jobs.id": "random UUID",
    "finetune_jobs.tenant_id": "tenant UUID",
    "finetune_jobs.dataset_id": "dataset UUID",
    "finetune_jobs.task": "fixed task name",
    "finetune_jobs.base_model": "model name from the registry",
    "finetune_jobs.output_model": "model name chosen for the result, like registered_models.name",
    "finetune_jobs.settings": "the job's numeric training settings as JSON",
    "finetune_jobs.state": "fixed state name",
    "finetune_jobs.worker_id": "host name, process id and a random tag of the worker",
    "finetune_jobs.checkpoint_blob": "random UUID of the sealed checkpoint blob",
    "finetune_jobs.error": "the appliance's own wording of why a job failed (never an exception message or a row)",
    "finetune_jobs.created_by": "public key id of the creator",
    "privacy_charges.tenant_id": "tenant UUID",
    "privacy_charges.dataset_id": "dataset UUID",
    "privacy_charges.dataset_hash": "keyed HMAC of the dataset's stored rows (as datasets.content_hash), to keep the per-dataset budget by content",
    "privacy_charges.job_id": "job UUID",
    "privacy_charges.history": "accountant history: numbers only (noise multiplier, sample rate, steps)",
    "model_versions.id": "random UUID",
    "model_versions.tenant_id": "tenant UUID",
    "model_versions.name": "model name, like registered_models.name",
    "model_versions.kind": "fixed model kind",
    "model_versions.source": "sealed:<manifest blob UUID>",
    "model_versions.job_id": "job UUID",
    "model_versions.dataset_id": "dataset UUID",
    "worker_leases.name": "fixed lease name",
    "worker_leases.holder": "host name, process id and a random tag of the worker",
    "alembic_version.version_num": "schema revision id",
}

SEALED = {sc.name for sc in SEALED_COLUMNS}

# Types that cannot carry text: numbers, booleans and times need no classification.
_NON_CONTENT = (Integer, Numeric, Float, Double, Boolean, DateTime, Date, Time, Interval)


def _can_hold_content(t: TypeEngine[object]) -> bool:
    while isinstance(t, TypeDecorator):
        t = t.impl_instance
    return not isinstance(t, _NON_CONTENT)


def unclassified(columns: list[tuple[str, TypeEngine[object]]]) -> list[str]:
    return sorted(
        name for name, t in columns if _can_hold_content(t) and name not in METADATA_COLUMNS and name not in SEALED
    )


def _metadata_columns(metadata: MetaData) -> list[tuple[str, TypeEngine[object]]]:
    return [(f"{table.name}.{col.name}", col.type) for table in metadata.tables.values() for col in table.columns]


def test_every_text_or_bytes_column_in_the_models_is_sealed_or_allowlisted() -> None:
    missing = unclassified(_metadata_columns(Base.metadata))
    assert missing == [], (
        f"unclassified columns {missing}: seal them with TenantCipher and register them in "
        "appliance/crypto/sealed_columns.py, or add them to METADATA_COLUMNS with a reason"
    )


def test_every_text_or_bytes_column_in_the_migrated_schema_is_classified(services: Services) -> None:
    inspector = inspect(services.engine)
    columns = [
        (f"{table}.{col['name']}", col["type"])
        for table in inspector.get_table_names()
        for col in inspector.get_columns(table)
    ]
    assert unclassified(columns) == []


def test_sealed_columns_are_binary_and_not_also_allowlisted() -> None:
    tables = Base.metadata.tables
    for sc in SEALED_COLUMNS:
        table, column = sc.name.split(".")
        assert isinstance(tables[table].c[column].type, LargeBinary), sc.name
    assert SEALED.isdisjoint(METADATA_COLUMNS)


def test_allowlist_has_no_stale_entries() -> None:
    known = {name for name, _ in _metadata_columns(Base.metadata)} | {"alembic_version.version_num"}
    assert sorted(set(METADATA_COLUMNS) - known) == []


@pytest.mark.parametrize(
    "new_column",
    [Column("notes", Text), Column("body", String(500)), Column("raw", LargeBinary), Column("blob_json", String)],
)
def test_when_a_plaintext_content_column_is_added_then_the_check_fails(new_column: Column[object]) -> None:
    metadata = MetaData()
    Table("tickets", metadata, Column("id", Integer, primary_key=True), Column("created_at", DateTime), new_column)
    assert unclassified(_metadata_columns(metadata)) == [f"tickets.{new_column.name}"]
