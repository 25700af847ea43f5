"""Tampering with stored ciphertext is always detected, never answered with wrong plaintext;
deleting a tenant makes every remaining copy of its ciphertext unreadable (crypto-shredding).

Real rows in every registered sealed column and real blob files, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from appliance.crypto.blobs import HEADER_BYTES, MIN_SEGMENT_SIZE, TAG_BYTES, BlobStore, decrypt_stream
from appliance.crypto.records import DATA_PURPOSE, TenantCipher
from appliance.crypto.sealed_columns import SEALED_COLUMNS
from appliance.errors import IntegrityError, KeyUnavailable, NotFound
from appliance.services.container import Services
from appliance.services.principal import Principal
from tests.unit.crypto.factories import create_sealed_rows, open_ref, raw_value, set_raw_value

SEG = MIN_SEGMENT_SIZE
OP = Principal.local_operator()
COLUMNS = [pytest.param(i, id=sc.name) for i, sc in enumerate(SEALED_COLUMNS)]


def _tenant(services: Services, name: str) -> str:
    return services.tenants.create(OP, name).id


def _store(services: Services) -> BlobStore:
    return BlobStore(services.settings.blob_dir, services.data_keys, services.sessions, segment_size=SEG)


@pytest.mark.parametrize("col", COLUMNS)
def test_when_one_bit_of_a_sealed_value_flips_then_open_fails(services: Services, col: int) -> None:
    tenant = _tenant(services, "acme")
    ref = create_sealed_rows(services, tenant, b"secret value")[col]
    assert open_ref(services, ref) == b"secret value"
    raw = raw_value(services, ref)
    for position in (0, 3, 8, len(raw) // 2, len(raw) - 1):  # magic, version, nonce, body, tag
        flipped = bytearray(raw)
        flipped[position] ^= 0x01
        set_raw_value(services, ref, bytes(flipped))
        with pytest.raises((IntegrityError, KeyUnavailable)):
            open_ref(services, ref)
    set_raw_value(services, ref, raw)
    assert open_ref(services, ref) == b"secret value"


@pytest.mark.parametrize("col", COLUMNS)
def test_when_ciphertext_swapped_between_two_rows_then_decrypt_fails(services: Services, col: int) -> None:
    tenant = _tenant(services, "acme")
    one = create_sealed_rows(services, tenant, b"first")[col]
    two = create_sealed_rows(services, tenant, b"second")[col]
    a, b = raw_value(services, one), raw_value(services, two)
    set_raw_value(services, one, b)
    set_raw_value(services, two, a)
    for ref in (one, two):
        with pytest.raises(IntegrityError):
            open_ref(services, ref)


def test_when_ciphertext_moved_between_columns_of_one_row_then_decrypt_fails(services: Services) -> None:
    tenant = _tenant(services, "acme")
    refs = create_sealed_rows(services, tenant, b"text")
    document, comment = (r for r in refs if r.column.model.__tablename__ == "policy_versions")
    set_raw_value(services, comment, raw_value(services, document))
    with pytest.raises(IntegrityError):
        open_ref(services, comment)


@pytest.mark.parametrize("col", COLUMNS)
def test_when_ciphertext_moved_to_other_tenant_then_decrypt_fails(services: Services, col: int) -> None:
    a, b = _tenant(services, "tenant-a"), _tenant(services, "tenant-b")
    ref_a = create_sealed_rows(services, a, b"belongs to a")[col]
    ref_b = create_sealed_rows(services, b, b"belongs to b")[col]
    set_raw_value(services, ref_b, raw_value(services, ref_a))
    with pytest.raises(IntegrityError):
        open_ref(services, ref_b)


def test_ciphertext_opened_under_other_tenant_context_fails_even_with_same_row_key(services: Services) -> None:
    a, b = _tenant(services, "tenant-a"), _tenant(services, "tenant-b")
    cipher = TenantCipher(services.data_keys)
    sealed = cipher.seal(a, "pseudonyms.value", "row-1", b"x")
    with pytest.raises(IntegrityError):
        cipher.open(b, "pseudonyms.value", "row-1", sealed)


def _blob_bytes(size: int) -> bytes:
    return os.urandom(size)


def _segments(raw: bytes) -> tuple[bytes, list[bytes]]:
    step = SEG + TAG_BYTES
    body = raw[HEADER_BYTES:]
    return raw[:HEADER_BYTES], [body[i : i + step] for i in range(0, len(body), step)]


BLOB_DAMAGE = ["bit-flip", "truncated", "truncated-at-boundary", "reordered", "extended", "extended-by-segment"]


@pytest.mark.parametrize("how", BLOB_DAMAGE)
def test_when_blob_file_is_tampered_then_reading_fails(services: Services, how: str) -> None:
    tenant = _tenant(services, "acme")
    store = _store(services)
    data = _blob_bytes(3 * SEG + 99)
    info = store.put(tenant, "dataset", [data])
    assert store.read_bytes(tenant, info.id) == data
    path = store.path(tenant, info.id)
    raw = path.read_bytes()
    head, segs = _segments(raw)
    damaged = {
        "bit-flip": raw[:-50] + bytes([raw[-50] ^ 0x04]) + raw[-49:],
        "truncated": raw[:-1],
        "truncated-at-boundary": head + b"".join(segs[:-1]),
        "reordered": head + segs[1] + segs[0] + b"".join(segs[2:]),
        "extended": raw + b"\0" * 40,
        "extended-by-segment": raw + segs[0],
    }[how]
    path.write_bytes(damaged)
    with pytest.raises(IntegrityError):
        store.read_bytes(tenant, info.id)


def test_when_blob_file_is_moved_to_another_blob_then_reading_fails(services: Services) -> None:
    tenant = _tenant(services, "acme")
    store = _store(services)
    one = store.put(tenant, "dataset", b"first blob")
    two = store.put(tenant, "dataset", b"second blob")
    shutil.copyfile(store.path(tenant, one.id), store.path(tenant, two.id))
    with pytest.raises(IntegrityError):
        store.read_bytes(tenant, two.id)


def test_when_blob_file_is_moved_to_another_tenant_then_reading_fails(services: Services) -> None:
    a, b = _tenant(services, "tenant-a"), _tenant(services, "tenant-b")
    store = _store(services)
    of_a = store.put(a, "dataset", b"a's data")
    of_b = store.put(b, "dataset", b"b's data")
    shutil.copyfile(store.path(a, of_a.id), store.path(b, of_b.id))
    with pytest.raises(IntegrityError):
        store.read_bytes(b, of_b.id)
    with pytest.raises(NotFound):
        store.read_bytes(b, of_a.id)  # another tenant's blob id looks absent


def test_deleted_tenant_keys_are_gone_and_every_saved_copy_is_unreadable(services: Services, tmp_path: Path) -> None:
    tenant = _tenant(services, "doomed")
    keep = _tenant(services, "kept")
    store = _store(services)
    cipher = TenantCipher(services.data_keys)
    refs = create_sealed_rows(services, tenant, b"shred me")
    saved = {ref: raw_value(services, ref) for ref in refs}
    info = store.put(tenant, "dataset", _blob_bytes(2 * SEG + 1))
    copy = tmp_path / "stolen-blob"
    shutil.copyfile(store.path(tenant, info.id), copy)
    other = create_sealed_rows(services, keep, b"survivor")

    services.tenants.delete(OP, "doomed")

    with services.sessions() as session:
        from sqlalchemy import func, select

        from appliance.db.models import DataKey

        assert session.scalar(select(func.count()).select_from(DataKey).where(DataKey.scope == tenant)) == 0
    for ref, value in saved.items():
        with pytest.raises(KeyUnavailable):
            cipher.open(tenant, ref.column.kind, "any-row", value)
    with copy.open("rb") as fh, pytest.raises(KeyUnavailable):
        b"".join(
            decrypt_stream(
                fh,
                lambda v: services.data_keys.key(tenant, DATA_PURPOSE, v),
                b"",  # the key lookup fails before identity matters
            )
        )
    # a fresh process (no key cache) cannot read it either
    from appliance.crypto.data_keys import DataKeyService

    fresh = DataKeyService(services.keyring, services.sessions)
    with pytest.raises(KeyUnavailable):
        fresh.key(tenant, DATA_PURPOSE, 1)
    assert [open_ref(services, r) for r in other] == [b"survivor"] * len(other)
