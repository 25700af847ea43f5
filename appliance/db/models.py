"""Tables. Tenant content never lives here in plaintext: content columns use the
encrypted column helpers from ``appliance.crypto`` (see tests/security/test_schema_plaintext.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from appliance.db.base import Base, UTCDateTime, new_id, utcnow


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    api_keys: Mapped[list[ApiKey]] = relationship(
        back_populates="tenant", cascade="all, delete-orphan", passive_deletes=True
    )


class ApiKey(Base):
    """A bearer credential. Only a keyed hash of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash_key_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(24))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    tenant: Mapped[Tenant | None] = relationship(back_populates="api_keys")


class DataKey(Base):
    """A data key (DEK) wrapped by the master key. ``scope`` is a tenant id or ``system``."""

    __tablename__ = "data_keys"
    __table_args__ = (
        UniqueConstraint("scope", "purpose", "version"),
        Index(None, "tenant_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(36))
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    kek_id: Mapped[str] = mapped_column(String(16))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary(128))
    encryptions: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Pseudonym(Base):
    """Reversible pseudonym vault entry. The original value is sealed with the tenant key
    (kind ``pseudonyms.value``, row = ``<scope_digest hex>:<token>``); lookups go through
    keyed digests so the value never appears in the clear."""

    __tablename__ = "pseudonyms"
    __table_args__ = (
        UniqueConstraint("tenant_id", "scope_digest", "value_digest"),
        UniqueConstraint("tenant_id", "scope_digest", "token"),
        Index(None, "expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    scope_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    value_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    entity_type: Mapped[str] = mapped_column(String(64))
    token: Mapped[str] = mapped_column(String(96))
    value_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Blob(Base):
    """Metadata of an encrypted blob file (datasets, model artifacts, checkpoints, exports).
    The bytes live in ``<data_dir>/blobs/<tenant_id>/<id>``, sealed with the tenant key."""

    __tablename__ = "blobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    key_version: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PolicyVersion(Base):
    """An immutable applied policy. The YAML and comment are sealed (they may name people in
    deny lists); ``content_hash`` is a keyed digest so equal documents are recognisable."""

    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("tenant_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    document_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    comment_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    content_hash: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TenantPolicy(Base):
    """Which policy version is active for a tenant; bumped on apply and rollback."""

    __tablename__ = "tenant_policies"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    active_version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Base):
    """One append-only audit record, chained by HMAC to its predecessor. ``tenant_id`` is not
    a foreign key: the trail outlives a deleted tenant. ``facts`` holds counts and types, never
    values; ``payload_sealed`` exists only when the tenant's retention policy asks for it."""

    __tablename__ = "audit_entries"
    __table_args__ = (Index(None, "tenant_id", "id"), Index(None, "created_at"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    tenant_id: Mapped[str | None] = mapped_column(String(36))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    object: Mapped[str | None] = mapped_column(String(200))
    policy_version: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(32))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    facts: Mapped[str] = mapped_column(Text, default="{}")
    payload_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    payload_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mac_key_version: Mapped[int] = mapped_column(Integer)
    prev_mac: Mapped[bytes] = mapped_column(LargeBinary(32))
    mac: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditCheckpoint(Base):
    """Periodic signed statement of the chain head, so a truncated tail is detectable."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_entry_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    last_entry_mac: Mapped[bytes] = mapped_column(LargeBinary(32))
    entry_count: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    mac_key_version: Mapped[int] = mapped_column(Integer)
    signature: Mapped[bytes] = mapped_column(LargeBinary(32))


class RegisteredModel(Base):
    """A model the appliance can serve. ``owner_scope`` is a tenant id or ``shared``."""

    __tablename__ = "registered_models"
    __table_args__ = (UniqueConstraint("name", "owner_scope"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(1024))
    device: Mapped[str] = mapped_column(String(32), default="auto")
    owner_scope: Mapped[str] = mapped_column(String(36))
    owner_tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    options: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Dataset(Base):
    """A fine-tuning dataset: its anonymized rows live in one sealed blob (kind ``dataset``);
    the label counts and entity facts are sealed here (kind ``datasets.stats``, row = id).
    ``content_hash`` is a keyed digest of the stored rows, so a dump cannot confirm a guess."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    task: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(8))
    blob_id: Mapped[str] = mapped_column(String(36))
    rows: Mapped[int] = mapped_column(Integer)
    source_bytes: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    stats_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FinetuneJob(Base):
    """A fine-tuning job, queued until a worker claims it. Settings and progress are numbers;
    ``error`` is the appliance's own wording (never tenant content). A worker holds a job
    while ``lease_expires_at`` is in the future and renews it by heartbeat; a running job
    whose lease ran out is taken over (resumed from ``checkpoint_blob``) by the next worker."""

    __tablename__ = "finetune_jobs"
    __table_args__ = (Index(None, "state", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[str] = mapped_column(String(36))
    task: Mapped[str] = mapped_column(String(16))
    base_model: Mapped[str] = mapped_column(String(128))
    output_model: Mapped[str] = mapped_column(String(128))
    target_epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    noise_multiplier: Mapped[float] = mapped_column(Float)
    sample_rate: Mapped[float] = mapped_column(Float)
    planned_steps: Mapped[int] = mapped_column(Integer)
    settings: Mapped[str] = mapped_column(Text, default="{}")
    state: Mapped[str] = mapped_column(String(16), default="queued")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    epoch: Mapped[float] = mapped_column(Float, default=0.0)
    loss: Mapped[float | None] = mapped_column(Float)
    epsilon_spent: Mapped[float] = mapped_column(Float, default=0.0)
    elapsed_s: Mapped[float] = mapped_column(Float, default=0.0)
    eta_s: Mapped[float | None] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checkpoint_blob: Mapped[str | None] = mapped_column(String(36))
    checkpoint_step: Mapped[int | None] = mapped_column(Integer)
    model_version: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PrivacyCharge(Base):
    """One job's entry in the tenant's privacy-budget ledger: the accountant history it ran
    (JSON ``[[noise_multiplier, sample_rate, steps], ...]``, numbers only) and the epsilon
    that alone spent. Opened when a worker starts the job, raised as steps run, settled when
    it ends (also cancelled or failed). ``dataset_id`` is not a foreign key: what a deleted
    dataset spent stays spent. ``dataset_hash`` is the dataset's ``content_hash`` when the
    charge opened: the per-dataset budget is kept by it, so a re-upload of the same rows
    (another name, or after a delete) shares what they spent. NULL only on charges whose
    dataset was deleted before the column existed."""

    __tablename__ = "privacy_charges"
    __table_args__ = (
        Index(None, "tenant_id", "dataset_id"),
        Index(None, "tenant_id", "charged_at"),
        Index(None, "tenant_id", "dataset_hash"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    dataset_id: Mapped[str] = mapped_column(String(36))
    dataset_hash: Mapped[str | None] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(36), unique=True)
    history: Mapped[str] = mapped_column(Text, default="[]")
    steps: Mapped[int] = mapped_column(Integer, default=0)
    delta: Mapped[float] = mapped_column(Float)
    epsilon: Mapped[float] = mapped_column(Float, default=0.0)
    settled: Mapped[bool] = mapped_column(Boolean, default=False)
    charged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelVersion(Base):
    """One trained version of a tenant's model. Its files are sealed blobs (``source`` is
    ``sealed:<manifest id>``); the registry row of the same name serves one of them. The model
    card (epsilon, delta, metrics, labels, ...) is sealed (kind ``model_versions.card``, row = id)."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("tenant_id", "name", "version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(1024))
    job_id: Mapped[str | None] = mapped_column(String(36))
    dataset_id: Mapped[str | None] = mapped_column(String(36))
    card_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkerLease(Base):
    """A named lease one worker holds at a time: on SQLite the ``sqlite`` lease makes the
    worker the only one (PostgreSQL workers run side by side with SKIP LOCKED instead)."""

    __tablename__ = "worker_leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
