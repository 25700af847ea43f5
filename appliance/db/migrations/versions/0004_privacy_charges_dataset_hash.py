"""privacy charges keep their dataset's content hash

The per-dataset privacy budget is kept by content, not by upload: a charge copies its
dataset's ``content_hash`` so that the same rows uploaded again (under another name, or after
the first upload was deleted) find what was already spent on them. Existing charges take the
hash of their dataset where it still exists; a charge whose dataset is gone keeps NULL and
counts by its dataset id, as before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("privacy_charges", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dataset_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_privacy_charges_tenant_id_dataset_hash"), ["tenant_id", "dataset_hash"], unique=False
        )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":  # behind row-level security, the backfill sees every tenant
        bind.execute(sa.text("SELECT set_config('app.scope', 'global', true)"))
    bind.execute(
        sa.text(
            "UPDATE privacy_charges SET dataset_hash = ("
            "SELECT d.content_hash FROM datasets d "
            "WHERE d.id = privacy_charges.dataset_id AND d.tenant_id = privacy_charges.tenant_id)"
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("privacy_charges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_privacy_charges_tenant_id_dataset_hash"))
        batch_op.drop_column("dataset_hash")
