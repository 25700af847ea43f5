"""Record encryption: AES-256-GCM with a self-describing, versioned ciphertext format.

Layout: ``b"A1" | key_version (u32 BE) | nonce (12) | ciphertext || tag (16)``.
Associated data binds each ciphertext to its tenant, kind and row, so a ciphertext
copied elsewhere fails to open. Every failure is the same :class:`IntegrityError`.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.errors import IntegrityError

MAGIC = b"A1"
_HEADER = struct.Struct(">2sI12s")
HEADER_BYTES = _HEADER.size
TAG_BYTES = 16


def context(*parts: str) -> bytes:
    """Unambiguous associated data: each part length-prefixed, so ("a","bc") != ("ab","c")."""
    out = bytearray()
    for part in parts:
        raw = part.encode("utf-8")
        out += struct.pack(">I", len(raw)) + raw
    return bytes(out)


def seal(key: bytes, key_version: int, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(12)
    header = _HEADER.pack(MAGIC, key_version, nonce)
    return header + AESGCM(key).encrypt(nonce, plaintext, header + aad)


def key_version_of(blob: bytes) -> int:
    if len(blob) < HEADER_BYTES + TAG_BYTES or blob[:2] != MAGIC:
        raise IntegrityError("ciphertext is malformed")
    return int(_HEADER.unpack_from(blob)[1])


def open_sealed(key_for_version: Callable[[int], bytes], blob: bytes, aad: bytes) -> bytes:
    version = key_version_of(blob)
    _, _, nonce = _HEADER.unpack_from(blob)
    header = blob[:HEADER_BYTES]
    try:
        return AESGCM(key_for_version(version)).decrypt(nonce, blob[HEADER_BYTES:], header + aad)
    except InvalidTag:
        raise IntegrityError("ciphertext failed authentication") from None
