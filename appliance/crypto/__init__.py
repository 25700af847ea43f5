"""Encryption: the only package that imports ``cryptography.hazmat``.

Callers use :class:`MasterKeyring` (wrap/unwrap), :class:`DataKeyService` (per-tenant DEKs),
and ``seal``/``open_sealed`` for records.
"""

from appliance.crypto.aead import context, open_sealed, seal
from appliance.crypto.data_keys import SYSTEM, DataKeyService
from appliance.crypto.keyring import MasterKeyring, load_keyring

__all__ = ["SYSTEM", "DataKeyService", "MasterKeyring", "context", "load_keyring", "open_sealed", "seal"]
