"""Datasets, fine-tuning jobs and policy versions are listed a page at a time, like API keys
and the audit trail: each grows with a tenant's use, and one request must not answer with
all of them (OWASP API4, unrestricted resource consumption)."""

from __future__ import annotations

import httpx
import pytest

from appliance.roles import Role
from tests.finetune_support import COMPLIANCE, add_tickets, finetune_policy, finetune_tenant, queue_job
from tests.support import Stack

PROBLEM = "application/problem+json"


def _walk(client: httpx.Client, path: str, **params: str | int) -> tuple[list[dict[str, object]], int]:
    """Every item, page by page; and how many pages that took."""
    items: list[dict[str, object]] = []
    pages = 0
    while True:
        r = client.get(path, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        pages += 1
        if body["next_cursor"] is None:
            return items, pages
        params = {**params, "cursor": body["next_cursor"]}


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> str:
    """A tenant with three datasets, a job on each, and five policy versions in all."""
    slug = finetune_tenant(stack.services, prefix="pages")
    for i in range(3):
        add_tickets(stack.services, slug, name=f"set-{i}")
        queue_job(stack.services, slug, f"set-{i}", output_model=f"clf-{i}")
    for i in range(4):
        document = finetune_policy().replace("name: finetune-test\n", f"name: finetune-test\ndescription: edit {i}\n")
        stack.services.policies.apply(COMPLIANCE, slug, document, f"edit {i}")
    return slug


def test_datasets_come_a_page_at_a_time_oldest_first(stack: Stack, tenant: str) -> None:
    admin = stack.client(stack.key(Role.TENANT_ADMIN, tenant))
    items, pages = _walk(admin, f"/admin/v1/tenants/{tenant}/datasets", limit=2)
    assert [d["name"] for d in items] == ["set-0", "set-1", "set-2"] and pages == 2
    whole, pages = _walk(admin, f"/admin/v1/tenants/{tenant}/datasets")
    assert whole == items and pages == 1


def test_jobs_come_a_page_at_a_time_and_the_state_filter_holds_on_every_page(stack: Stack, tenant: str) -> None:
    admin = stack.client(stack.key(Role.TENANT_ADMIN, tenant))
    path = f"/admin/v1/tenants/{tenant}/finetune/jobs"
    items, pages = _walk(admin, path, limit=1)
    assert [j["output_model"] for j in items] == ["clf-0", "clf-1", "clf-2"] and pages == 3
    queued, _ = _walk(admin, path, limit=2, state="queued")
    assert [j["id"] for j in queued] == [j["id"] for j in items]
    assert _walk(admin, path, limit=2, state="succeeded") == ([], 1)


def test_policy_versions_come_a_page_at_a_time_in_version_order(stack: Stack, tenant: str) -> None:
    officer = stack.client(stack.key(Role.COMPLIANCE))
    items, pages = _walk(officer, f"/admin/v1/tenants/{tenant}/policy/versions", limit=2)
    assert [v["version"] for v in items] == [1, 2, 3, 4, 5] and pages == 3
    assert [v["active"] for v in items] == [False, False, False, False, True]


def test_a_cursor_of_another_listing_or_a_mangled_one_is_refused_with_a_problem(stack: Stack, tenant: str) -> None:
    admin = stack.client(stack.key(Role.TENANT_ADMIN, tenant))
    base = f"/admin/v1/tenants/{tenant}"
    cursors = {
        path: admin.get(f"{base}/{path}", params={"limit": 1}).json()["next_cursor"]
        for path in ("datasets", "finetune/jobs", "policy/versions", "keys")
    }
    assert all(cursors.values())
    for path in ("datasets", "finetune/jobs", "policy/versions"):
        for other, cursor in cursors.items():
            if other == path:
                continue
            r = admin.get(f"{base}/{path}", params={"cursor": cursor})
            assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), (path, other, r.text)
            assert "invalid cursor" in r.json()["detail"]
        for bad in ("x", cursors[path][:-3], cursors[path] + "A", "%00"):
            r = admin.get(f"{base}/{path}", params={"cursor": bad})
            assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), (path, bad, r.text)
        for limit in (0, 501, "many"):  # refused by the route's schema, before any query
            r = admin.get(f"{base}/{path}", params={"limit": limit})
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "limit", (path, limit, r.text)


def test_a_cursor_grants_nothing_in_another_tenant(stack: Stack, tenant: str) -> None:
    """Another tenant's cursor pages that tenant's own rows, never the first tenant's."""
    other = finetune_tenant(stack.services, prefix="pages-b")
    for i in range(2):
        add_tickets(stack.services, other, name=f"b-{i}")
    mine = stack.client(stack.key(Role.TENANT_ADMIN, tenant))
    cursor = mine.get(f"/admin/v1/tenants/{tenant}/datasets", params={"limit": 1}).json()["next_cursor"]
    theirs = stack.client(stack.key(Role.TENANT_ADMIN, other))
    r = theirs.get(f"/admin/v1/tenants/{other}/datasets", params={"cursor": cursor})
    assert r.status_code == 200, r.text
    assert {d["tenant"] for d in r.json()["items"]} <= {other}
    assert not {d["name"] for d in r.json()["items"]} & {"set-0", "set-1", "set-2"}
    assert theirs.get(f"/admin/v1/tenants/{tenant}/datasets", params={"cursor": cursor}).status_code == 404
