"""Registry of every database column that holds sealed tenant content.

One list, read by key rotation (which re-encrypts each of them), ``appliance crypto-keys status``
(which counts them per key version) and ``tests/security/test_schema_plaintext.py`` (which
fails when a String/Text/LargeBinary column is neither registered here nor allowlisted as
metadata). Adding a sealed column means adding one line here; the ``row`` function must
return the same string the writer passed to :class:`TenantCipher`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, literal, literal_column

from appliance.crypto.aead import HEADER_BYTES, MAGIC
from appliance.crypto.records import TenantCipher
from appliance.db.base import Base
from appliance.db.models import AuditEntry, Dataset, ModelVersion, PolicyVersion, Pseudonym


@dataclass(frozen=True)
class SealedColumn:
    model: type[Base]
    attribute: str
    kind: str
    row: Callable[[Any], str]

    @property
    def name(self) -> str:
        """``table.column``, the spelling the schema test and status output use."""
        return f"{self.model.__tablename__}.{self.attribute}"

    # The ORM attributes are looked up by name, so they are typed Any.
    @property
    def column(self) -> Any:
        return getattr(self.model, self.attribute)

    @property
    def tenant_column(self) -> Any:
        return self.model.tenant_id  # type: ignore[attr-defined]

    @property
    def id_column(self) -> Any:
        return self.model.id  # type: ignore[attr-defined]

    def seal(self, cipher: TenantCipher, obj: Any, plaintext: bytes) -> None:
        """Seal ``plaintext`` into ``obj``'s column; the row key must already be set on ``obj``."""
        setattr(obj, self.attribute, cipher.seal(obj.tenant_id, self.kind, self.row(obj), plaintext))

    def open(self, cipher: TenantCipher, obj: Any) -> bytes | None:
        sealed = getattr(obj, self.attribute)
        if sealed is None:
            return None
        return cipher.open(obj.tenant_id, self.kind, self.row(obj), sealed)


def version_bytes(version: int) -> bytes:
    return struct.pack(">I", version)


def sealed_version(column: ColumnElement[Any]) -> ColumnElement[bytes]:
    """SQL expression for the key version inside a sealed value (bytes 3-6 of ``aead`` format),
    so rotation and status can filter by version without fetching ciphertexts."""
    assert len(MAGIC) + 4 < HEADER_BYTES
    # Inline constants: PostgreSQL treats two bound copies in SELECT and GROUP BY as different.
    return func.substr(column, literal_column(str(len(MAGIC) + 1)), literal_column("4"))


def not_version(column: ColumnElement[Any], version: int) -> ColumnElement[bool]:
    return column.is_not(None) & (sealed_version(column) != literal(version_bytes(version)))


SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    SealedColumn(Pseudonym, "value_sealed", "pseudonyms.value", lambda r: f"{r.scope_digest.hex()}:{r.token}"),
    SealedColumn(PolicyVersion, "document_sealed", "policy_versions.document", lambda r: str(r.version)),
    SealedColumn(PolicyVersion, "comment_sealed", "policy_versions.comment", lambda r: str(r.version)),
    SealedColumn(AuditEntry, "payload_sealed", "audit_entries.payload", lambda r: str(r.id)),
    SealedColumn(Dataset, "stats_sealed", "datasets.stats", lambda r: str(r.id)),
    SealedColumn(ModelVersion, "card_sealed", "model_versions.card", lambda r: str(r.id)),
)
