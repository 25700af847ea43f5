"""Master key handling and record encryption: every tamper is an IntegrityError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.crypto.aead import context, open_sealed, seal
from appliance.crypto.keyring import MasterKeyring, new_key, read_key_file, write_key_file
from appliance.errors import ConfigError, IntegrityError, KeyUnavailable


def test_key_file_is_created_0600_and_read_back(tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "master.key"
    write_key_file(path, key)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_key_file(path) == key
    with pytest.raises(FileExistsError):
        write_key_file(path, new_key())


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    write_key_file(path, new_key())
    path.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_key_file(path)


def test_key_file_with_wrong_length_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("c2hvcnQ=\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        read_key_file(path)
    assert "c2hvcnQ" not in str(info.value)


def test_wrapped_key_is_bound_to_its_context_and_kek() -> None:
    ring = MasterKeyring(new_key())
    dek = new_key()
    kek_id, wrapped = ring.wrap(dek, b"tenant-a")
    assert ring.unwrap(kek_id, wrapped, b"tenant-a") == dek
    with pytest.raises(IntegrityError):
        ring.unwrap(kek_id, wrapped, b"tenant-b")
    with pytest.raises(KeyUnavailable):
        MasterKeyring(new_key()).unwrap(kek_id, wrapped, b"tenant-a")
    rotated = MasterKeyring(new_key(), previous=(ring.current,))
    assert rotated.unwrap(kek_id, wrapped, b"tenant-a") == dek


def test_context_parts_are_unambiguous() -> None:
    assert context("a", "bc") != context("ab", "c")


def _sealed() -> tuple[bytes, bytes, bytes]:
    key = new_key()
    aad = context("tenant-a", "messages.body", "row-1")
    return key, aad, seal(key, 1, b"secret text", aad)


def test_sealed_record_round_trips_and_differs_every_time() -> None:
    key, aad, blob = _sealed()
    assert open_sealed(lambda v: key, blob, aad) == b"secret text"
    assert seal(key, 1, b"secret text", aad) != blob
    assert b"secret text" not in blob


@pytest.mark.parametrize("position", [0, 3, 10, 20, -1])
def test_when_any_bit_flips_then_open_fails(position: int) -> None:
    key, aad, blob = _sealed()
    tampered = bytearray(blob)
    tampered[position] ^= 0x01
    with pytest.raises(IntegrityError):
        open_sealed(lambda v: key, bytes(tampered), aad)


@pytest.mark.parametrize(
    "other_aad",
    [
        context("tenant-b", "messages.body", "row-1"),
        context("tenant-a", "messages.body", "row-2"),
        context("tenant-a", "datasets.name", "row-1"),
    ],
    ids=["other-tenant", "other-row", "other-column"],
)
def test_when_ciphertext_moved_elsewhere_then_open_fails(other_aad: bytes) -> None:
    key, _, blob = _sealed()
    with pytest.raises(IntegrityError):
        open_sealed(lambda v: key, blob, other_aad)


def test_truncated_ciphertext_fails() -> None:
    key, aad, blob = _sealed()
    for cut in (0, 5, len(blob) - 1):
        with pytest.raises(IntegrityError):
            open_sealed(lambda v: key, blob[:cut], aad)
