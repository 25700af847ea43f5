"""The one way to store tenant content in a database row: sealed with the tenant's current
data key, bound to (tenant, kind, row). ``kind`` names the table and column, e.g.
``"pseudonyms.value"``; ``row`` is a stable identifier of the row that is known before insert.
"""

from __future__ import annotations

from appliance.crypto.aead import context, key_version_of, open_sealed, seal
from appliance.crypto.data_keys import DataKeyService

DATA_PURPOSE = "data"


class TenantCipher:
    def __init__(self, data_keys: DataKeyService) -> None:
        self._keys = data_keys

    def seal(self, tenant_id: str, kind: str, row: str, plaintext: bytes) -> bytes:
        active = self._keys.active(tenant_id, DATA_PURPOSE, tenant_id=tenant_id)
        return seal(active.key, active.version, plaintext, context(tenant_id, kind, row))

    def prepare(self, tenant_id: str, n: int = 1) -> None:
        """Reserve key budget for ``n`` seals up front. On SQLite, call it before a write
        transaction that seals: a reservation inside it would wait on that transaction's lock."""
        self._keys.prepare(tenant_id, DATA_PURPOSE, n, tenant_id=tenant_id)

    def seal_with_version(self, tenant_id: str, kind: str, row: str, plaintext: bytes, version: int) -> bytes:
        """Seal under one named version: key rotation re-encrypts to exactly the version it started."""
        key = self._keys.key(tenant_id, DATA_PURPOSE, version)
        return seal(key, version, plaintext, context(tenant_id, kind, row))

    def open(self, tenant_id: str, kind: str, row: str, sealed: bytes) -> bytes:
        """Raises IntegrityError if tampered or moved, KeyUnavailable if the tenant was shredded."""
        return open_sealed(lambda v: self._keys.key(tenant_id, DATA_PURPOSE, v), sealed, context(tenant_id, kind, row))

    def seal_text(self, tenant_id: str, kind: str, row: str, text: str) -> bytes:
        return self.seal(tenant_id, kind, row, text.encode("utf-8"))

    def open_text(self, tenant_id: str, kind: str, row: str, sealed: bytes) -> str:
        return self.open(tenant_id, kind, row, sealed).decode("utf-8")

    def derived_key(self, tenant_id: str, purpose: str) -> bytes:
        """A tenant-scoped MAC key for one purpose (never used to encrypt); destroyed with the tenant."""
        return self._keys.active(tenant_id, purpose, tenant_id=tenant_id).key

    @staticmethod
    def key_version(sealed: bytes) -> int:
        return key_version_of(sealed)
