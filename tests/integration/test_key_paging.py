"""API key listings are paged and leave revoked keys out unless asked: a tenant that rotates
keys often must not make each listing grow for ever (found by the one-hour soak)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import update

from appliance.db.models import ApiKey
from appliance.roles import Role
from appliance.services.principal import Principal
from tests.support import Stack

PROBLEM = "application/problem+json"
OP = Principal.local_operator()


def _issue(stack: Stack, tenant: str, count: int) -> list[str]:
    return [stack.services.api_keys.create(OP, role=Role.APP, name=f"k{i}", tenant=tenant).key.id for i in range(count)]


def _walk(client: httpx.Client, path: str, **params: str | int) -> tuple[list[str], int]:
    """Every key id, page by page; and how many pages that took."""
    ids: list[str] = []
    pages = 0
    while True:
        r = client.get(path, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        ids += [k["id"] for k in body["items"]]
        pages += 1
        if body["next_cursor"] is None:
            return ids, pages
        params = {**params, "cursor": body["next_cursor"]}


def test_pages_cover_every_live_key_once_in_creation_order(stack: Stack) -> None:
    tenant = stack.tenant()
    ids = _issue(stack, tenant, 7)
    for revoked in ids[1::3]:
        stack.services.api_keys.revoke(OP, revoked, tenant)
    live = [k for k in ids if k not in ids[1::3]]
    admin = stack.client(stack.key(Role.TENANT_ADMIN, tenant))
    path = f"/admin/v1/tenants/{tenant}/keys"
    listed, pages = _walk(admin, path, limit=2)
    assert listed[: len(live)] == live  # the admin's own key was issued last
    assert len(listed) == len(live) + 1 and pages == 3
    with_revoked, _ = _walk(admin, path, limit=3, include_revoked="true")
    assert with_revoked[: len(ids)] == ids


def test_keys_created_in_the_same_instant_are_neither_skipped_nor_repeated(stack: Stack) -> None:
    tenant = stack.tenant()
    ids = _issue(stack, tenant, 6)
    same = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    with stack.services.sessions() as s, s.begin():
        s.execute(update(ApiKey).where(ApiKey.id.in_(ids)).values(created_at=same))
    listed, pages = _walk(stack.client(stack.operator_key), f"/admin/v1/tenants/{tenant}/keys", limit=4)
    assert listed == sorted(ids) and pages == 2


def test_a_key_issued_between_pages_appears_on_a_later_page(stack: Stack) -> None:
    tenant = stack.tenant()
    first = _issue(stack, tenant, 3)
    op = stack.client(stack.operator_key)
    path = f"/admin/v1/tenants/{tenant}/keys"
    page = op.get(path, params={"limit": 2}).json()
    assert [k["id"] for k in page["items"]] == first[:2]
    later = _issue(stack, tenant, 1)
    rest, _ = _walk(op, path, limit=2, cursor=page["next_cursor"])
    assert rest == [first[2], *later]


def test_global_keys_are_paged_and_hide_revoked_ones(stack: Stack) -> None:
    ids = [stack.services.api_keys.create(OP, role=Role.COMPLIANCE, name=f"dpo{i}").key.id for i in range(3)]
    stack.services.api_keys.revoke(OP, ids[0])
    op = stack.client(stack.operator_key)
    listed, _ = _walk(op, "/admin/v1/keys", limit=1)
    assert ids[0] not in listed and set(ids[1:]) <= set(listed)
    everything, _ = _walk(op, "/admin/v1/keys", limit=500, include_revoked="true")
    assert set(ids) <= set(everything)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"cursor": "not-a-cursor"},
        {"cursor": "YTE6NDI"},  # an audit-trail cursor ("a1:42"), not a key listing's
        {"cursor": "azE6bm90LWEtZGF0ZXwwMTIzNDU2Nzg5YWJjZGVm"},  # "k1:not-a-date|0123456789abcdef"
        {"cursor": "azE6MjAyNi0wMS0wMlQwMzowNDowNXwwMTIzNDU2Nzg5YWJjZGVm"},  # a date with no zone
        {"cursor": "azE6MjAyNi0wMS0wMlQwMzowNDowNSswMDowMHxub3QtYS1rZXktaWQ"},  # "k1:<date>|not-a-key-id"
        {"include_revoked": "perhaps"},
    ],
    ids=["limit-0", "limit-501", "garbage", "audit-cursor", "bad-date", "naive-date", "bad-key-id", "bad-flag"],
)
def test_bad_paging_parameters_are_a_clear_4xx(stack: Stack, params: dict[str, str | int]) -> None:
    tenant = stack.tenant()
    r = stack.client(stack.operator_key).get(f"/admin/v1/tenants/{tenant}/keys", params=params)
    assert r.status_code in (400, 422), r.text  # 422: the schema refused it; 400: the cursor did
    assert r.headers["content-type"].startswith(PROBLEM)
    assert "Traceback" not in r.text
