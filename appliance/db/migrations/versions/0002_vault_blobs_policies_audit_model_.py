"""vault, blobs, policies, audit, model registry

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("last_entry_mac", sa.LargeBinary(length=32), nullable=False),
        sa.Column("entry_count", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("mac_key_version", sa.Integer(), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object", sa.String(length=200), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("facts", sa.Text(), nullable=False),
        sa.Column("payload_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("payload_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("mac_key_version", sa.Integer(), nullable=False),
        sa.Column("prev_mac", sa.LargeBinary(length=32), nullable=False),
        sa.Column("mac", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entries")),
    )
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_entries_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_entries_tenant_id_id"), ["tenant_id", "id"], unique=False)

    op.create_table(
        "blobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_blobs_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blobs")),
    )
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_blobs_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("comment_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_policy_versions_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_versions")),
        sa.UniqueConstraint("tenant_id", "version", name=op.f("uq_policy_versions_tenant_id_version")),
    )
    op.create_table(
        "pseudonyms",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("scope_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("value_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("entity_type", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=96), nullable=False),
        sa.Column("value_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_pseudonyms_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pseudonyms")),
        sa.UniqueConstraint(
            "tenant_id", "scope_digest", "token", name=op.f("uq_pseudonyms_tenant_id_scope_digest_token")
        ),
        sa.UniqueConstraint(
            "tenant_id", "scope_digest", "value_digest", name=op.f("uq_pseudonyms_tenant_id_scope_digest_value_digest")
        ),
    )
    with op.batch_alter_table("pseudonyms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pseudonyms_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "registered_models",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("device", sa.String(length=32), nullable=False),
        sa.Column("owner_scope", sa.String(length=36), nullable=False),
        sa.Column("owner_tenant_id", sa.String(length=36), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_tenant_id"],
            ["tenants.id"],
            name=op.f("fk_registered_models_owner_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registered_models")),
        sa.UniqueConstraint("name", "owner_scope", name=op.f("uq_registered_models_name_owner_scope")),
    )
    with op.batch_alter_table("registered_models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_registered_models_owner_tenant_id"), ["owner_tenant_id"], unique=False)

    op.create_table(
        "tenant_policies",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("active_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_tenant_policies_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_policies")),
    )


def downgrade() -> None:
    op.drop_table("tenant_policies")
    with op.batch_alter_table("registered_models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_registered_models_owner_tenant_id"))

    op.drop_table("registered_models")
    with op.batch_alter_table("pseudonyms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pseudonyms_expires_at"))

    op.drop_table("pseudonyms")
    op.drop_table("policy_versions")
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blobs_tenant_id"))

    op.drop_table("blobs")
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_entries_tenant_id_id"))
        batch_op.drop_index(batch_op.f("ix_audit_entries_created_at"))

    op.drop_table("audit_entries")
    op.drop_table("audit_checkpoints")
