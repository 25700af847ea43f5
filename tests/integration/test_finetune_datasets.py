"""Fine-tuning datasets through real HTTP on SQLite and PostgreSQL: validation naming lines,
anonymization on ingress, policy limits, sealed storage and deletion."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from appliance.db.models import AuditEntry, Blob, Dataset, Pseudonym
from appliance.roles import Role
from appliance.services.datasets import BLOB_KIND
from tests.finetune_support import OP, finetune_tenant, tickets_jsonl
from tests.support import Stack

PROBLEM = "application/problem+json"
JSONL = {"content-type": "application/jsonl"}


def _admin(stack: Stack, tenant: str):
    return stack.client(stack.key(Role.TENANT_ADMIN, tenant))


def test_a_tenant_admin_uploads_lists_shows_and_deletes_a_dataset(stack: Stack) -> None:
    tenant = finetune_tenant(stack.services)
    admin = _admin(stack, tenant)
    up = admin.post(f"/admin/v1/tenants/{tenant}/datasets?name=tickets", content=tickets_jsonl(), headers=JSONL)
    assert up.status_code == 201, up.text
    body = up.json()
    assert (body["name"], body["task"], body["shape"], body["rows"]) == ("tickets", "classification", "text,label", 12)
    assert body["label_counts"] == {"billing": 6, "technical": 6}
    assert len(body["content_hash"]) == 64
    assert [d["id"] for d in admin.get(f"/admin/v1/tenants/{tenant}/datasets").json()["items"]] == [body["id"]]
    for ref in (body["id"], "tickets"):
        assert admin.get(f"/admin/v1/tenants/{tenant}/datasets/{ref}").json()["content_hash"] == body["content_hash"]
    with stack.services.sessions() as s:
        blob_id = s.scalar(select(Dataset.blob_id).where(Dataset.id == body["id"]))
    path = stack.services.blobs.path(stack.services.tenants.get(OP, tenant).id, str(blob_id))
    assert path.exists()
    assert b"refund" not in path.read_bytes()

    gone = admin.delete(f"/admin/v1/tenants/{tenant}/datasets/tickets")
    assert gone.status_code == 200
    assert not path.exists()
    assert admin.get(f"/admin/v1/tenants/{tenant}/datasets/{body['id']}").status_code == 404
    with stack.services.sessions() as s:
        actions = list(s.scalars(select(AuditEntry.action).where(AuditEntry.object == f"dataset:{body['id']}")))
        assert s.scalar(select(func.count()).select_from(Blob).where(Blob.id == blob_id)) == 0
    assert actions == ["dataset.upload", "dataset.delete"]


def test_personal_data_is_anonymized_before_the_rows_are_stored(stack: Stack) -> None:
    tenant = finetune_tenant(stack.services)
    tenant_id = stack.services.tenants.get(OP, tenant).id
    rows = [
        ("Anna Berg wrote from anna.berg@example.org about her invoice", "billing"),
        ("Call Anna Berg back on +1 415 555 0133, the app crashes", "technical"),
    ]
    r = _admin(stack, tenant).post(
        f"/admin/v1/tenants/{tenant}/datasets?name=people", content=tickets_jsonl(rows), headers=JSONL
    )
    assert r.status_code == 201, r.text
    assert r.json()["entities"]["EMAIL_ADDRESS"] == {"count": 1, "action": "pseudonymize"}
    assert r.json()["entities"]["PERSON"]["count"] == 2
    stored = stack.services.datasets.load(tenant_id, r.json()["id"])
    texts = [row["text"] for row in stored.rows]
    assert texts[0] == "<PERSON_1> wrote from <EMAIL_ADDRESS_1> about her invoice"
    assert "Anna" not in json.dumps(stored.rows) and "555" not in json.dumps(stored.rows)
    with stack.services.sessions() as s:  # numbered per row; no original went into the vault
        assert s.scalar(select(func.count()).select_from(Pseudonym).where(Pseudonym.tenant_id == tenant_id)) == 0


def test_a_row_with_a_blocked_entity_refuses_the_upload_naming_the_line_and_stores_nothing(stack: Stack) -> None:
    tenant = finetune_tenant(stack.services)
    rows = [("fine row", "a"), ("another fine row", "b"), ("my card is 4111 1111 1111 1111", "a")]
    r = _admin(stack, tenant).post(
        f"/admin/v1/tenants/{tenant}/datasets?name=cards", content=tickets_jsonl(rows), headers=JSONL
    )
    assert r.status_code == 422
    assert r.headers["content-type"].startswith(PROBLEM)
    problem = r.json()
    assert problem["errors"] == [
        {
            "line": 3,
            "field": "text",
            "message": "holds data the policy blocks: CREDIT_CARD",
            "entity_types": ["CREDIT_CARD"],
        }
    ]
    assert "4111" not in r.text
    tenant_id = stack.services.tenants.get(OP, tenant).id
    with stack.services.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Dataset).where(Dataset.tenant_id == tenant_id)) == 0
        assert not s.scalar(
            select(func.count()).select_from(Blob).where(Blob.tenant_id == tenant_id, Blob.kind == BLOB_KIND)
        )
        outcome = s.scalar(
            select(AuditEntry.outcome).where(AuditEntry.action == "dataset.upload", AuditEntry.tenant_id == tenant_id)
        )
    assert outcome == "blocked"


def test_invalid_rows_get_a_problem_listing_each_line_and_field(stack: Stack) -> None:
    tenant = finetune_tenant(stack.services)
    body = b"text,label\nok,a\n,b\nthree,\n"
    r = _admin(stack, tenant).post(
        f"/admin/v1/tenants/{tenant}/datasets?name=bad", content=body, headers={"content-type": "text/csv"}
    )
    assert r.status_code == 422
    assert r.json()["type"] == "urn:appliance:problem:invalid-rows"
    assert [(e["line"], e["field"]) for e in r.json()["errors"]] == [(3, "text"), (4, "label")]


def test_policy_limits_and_permission_are_enforced(stack: Stack) -> None:
    small = finetune_tenant(stack.services, max_dataset_rows=5, max_dataset_bytes=2048)
    admin = _admin(stack, small)
    too_many = admin.post(f"/admin/v1/tenants/{small}/datasets?name=many", content=tickets_jsonl(), headers=JSONL)
    assert too_many.status_code == 422
    assert "max_dataset_rows" in too_many.json()["detail"]
    too_big = admin.post(f"/admin/v1/tenants/{small}/datasets?name=big", content=b"x" * 4096, headers=JSONL)
    assert too_big.status_code == 422
    assert "max_dataset_bytes" in too_big.json()["detail"]

    closed = stack.tenant()  # the default policy does not allow fine-tuning
    r = _admin(stack, closed).post(
        f"/admin/v1/tenants/{closed}/datasets?name=t", content=tickets_jsonl(), headers=JSONL
    )
    assert r.status_code == 403
    assert "finetune.allowed" in r.json()["detail"]
    app = stack.client(stack.key(Role.APP, small))
    assert (
        app.post(f"/admin/v1/tenants/{small}/datasets?name=t", content=tickets_jsonl(), headers=JSONL).status_code
        == 403
    )


def test_a_second_dataset_with_the_same_name_conflicts_and_an_unknown_format_is_refused(stack: Stack) -> None:
    tenant = finetune_tenant(stack.services)
    admin = _admin(stack, tenant)
    url = f"/admin/v1/tenants/{tenant}/datasets?name=dup"
    assert admin.post(url, content=tickets_jsonl(), headers=JSONL).status_code == 201
    assert admin.post(url, content=tickets_jsonl(), headers=JSONL).status_code == 409
    unknown = admin.post(f"/admin/v1/tenants/{tenant}/datasets?name=x", content=tickets_jsonl())
    assert unknown.status_code == 422
    assert "jsonl or csv" in unknown.json()["detail"]


def test_the_content_hash_names_the_rows_whatever_their_order_or_format_and_changes_with_any_row(
    stack: Stack,
) -> None:
    """The privacy-budget ledger keeps a dataset's budget by this hash: a re-upload of the same
    rows (shuffled, or as CSV) must hash the same, and any changed row must not."""
    tenant = finetune_tenant(stack.services)
    admin = _admin(stack, tenant)
    base = f"/admin/v1/tenants/{tenant}/datasets"
    rows = [("I was charged twice", "billing"), ("The app crashes", "technical"), ("Refund me", "billing")]
    first = admin.post(f"{base}?name=a", content=tickets_jsonl(rows), headers=JSONL).json()["content_hash"]
    shuffled = admin.post(f"{base}?name=b", content=tickets_jsonl(rows[::-1]), headers=JSONL).json()["content_hash"]
    csv = "text,label\n" + "".join(f"{t},{label}\n" for t, label in rows)
    as_csv = admin.post(f"{base}?name=c", content=csv.encode(), headers={"content-type": "text/csv"})
    assert as_csv.status_code == 201, as_csv.text
    edited = [*rows[:2], ("Refund me now", "billing")]
    other = admin.post(f"{base}?name=d", content=tickets_jsonl(edited), headers=JSONL).json()["content_hash"]
    assert first == shuffled == as_csv.json()["content_hash"]
    assert other != first
