"""The master key (KEK): where it comes from and the only thing it does, wrapping data keys.

Sources, first match wins: the systemd credential ``$CREDENTIALS_DIRECTORY/<name>``, the
root-only key file, and (dev mode only, with a loud warning) a base64 value from the
environment. Older KEKs named in ``keys.previous_master_key_files`` stay usable for
unwrapping so a master-key rotation can be interrupted and resumed safely.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.config import Settings
from appliance.errors import ConfigError, IntegrityError, KeyUnavailable

KEY_BYTES = 32
_NONCE = 12
log = logging.getLogger(__name__)


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def kek_fingerprint(kek: bytes) -> str:
    """Public identifier of a KEK: safe to store beside what it wraps."""
    return hmac.new(kek, b"appliance/kek-id/v1", hashlib.sha256).hexdigest()[:16]


def _decode_key(raw: bytes, origin: str) -> bytes:
    text = raw.strip()
    if len(raw) == KEY_BYTES:
        return raw
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise ConfigError(f"{origin}: master key must be 32 raw bytes or base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{origin}: master key must decode to 32 bytes, got {len(key)}")
    return key


def read_key_file(path: Path) -> bytes:
    """Read a key file, refusing one that group or others could read or write."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"master key file {path} not found (run `appliance init` or set keys.master_key_file)"
        ) from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(
            f"master key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600 or 0400 (chmod 600)"
        )
    return _decode_key(path.read_bytes(), f"master key file {path}")


def write_key_file(path: Path, key: bytes) -> None:
    """Create a new key file with mode 0600 atomically; never overwrite an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(encode_key(key) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


@dataclass(frozen=True)
class MasterKeyring:
    """The current KEK plus older ones kept for unwrapping during a rotation."""

    current: bytes
    previous: tuple[bytes, ...] = ()

    @property
    def current_id(self) -> str:
        return kek_fingerprint(self.current)

    def _by_id(self, kek_id: str) -> bytes:
        for kek in (self.current, *self.previous):
            if hmac.compare_digest(kek_fingerprint(kek), kek_id):
                return kek
        raise KeyUnavailable("the master key that wrapped this data key is not loaded")

    def kek(self, kek_id: str) -> bytes:
        """The loaded master key with this public fingerprint, current or previous (backups
        name the key they were sealed under); KeyUnavailable, naming the id, if none is."""
        try:
            return self._by_id(kek_id)
        except KeyUnavailable:
            raise KeyUnavailable(
                f"master key {kek_id} is not loaded (list its file in keys.previous_master_key_files)"
            ) from None

    def wrap(self, dek: bytes, context: bytes) -> tuple[str, bytes]:
        """Wrap ``dek`` under the current KEK, bound to ``context`` (tenant, purpose, version)."""
        nonce = secrets.token_bytes(_NONCE)
        return self.current_id, nonce + AESGCM(self.current).encrypt(nonce, dek, context)

    def unwrap(self, kek_id: str, wrapped: bytes, context: bytes) -> bytes:
        kek = self._by_id(kek_id)
        try:
            return AESGCM(kek).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], context)
        except InvalidTag:
            raise IntegrityError("a wrapped data key failed authentication") from None

    def derive(self, label: str) -> bytes:
        """A subkey of the current KEK for one purpose (e.g. the audit chain MAC)."""
        return hmac.new(self.current, b"appliance/derive/v1/" + label.encode(), hashlib.sha256).digest()


def load_keyring(settings: Settings) -> MasterKeyring:
    """Load the KEK from the configured source; raise ConfigError with a clear line if absent."""
    previous = tuple(read_key_file(p) for p in settings.keys.previous_master_key_files)
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        cred = Path(cred_dir) / settings.keys.credential_name
        if cred.exists():
            # systemd owns the credential's permissions; it is readable only by the service.
            return MasterKeyring(_decode_key(cred.read_bytes(), f"credential {cred}"), previous)
    if settings.keys.dev_master_key:
        log.warning(
            "DEV MODE: master key taken from the environment; never use this in production",
            extra={"event": "dev_master_key"},
        )
        return MasterKeyring(
            _decode_key(settings.keys.dev_master_key.encode(), "APPLIANCE_KEYS__DEV_MASTER_KEY"),
            previous,
        )
    return MasterKeyring(read_key_file(settings.master_key_path), previous)
