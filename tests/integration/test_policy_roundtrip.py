"""The compliance officer's loop on SQLite and PostgreSQL: lint -> test (preview) -> apply ->
a live request follows the new rules -> rollback -> the old rules apply again."""

from __future__ import annotations

from appliance.roles import Role
from tests.support import Stack

SAMPLE = "Please call Dana Whitfield about the renewal."
STRICT = "extends: default\nname: names-redacted\npii:\n  entities:\n    PERSON: {action: redact}\n"
TAGS = "extends: default\nname: names-tagged\npii:\n  entities:\n    PERSON: {action: replace}\n"


def test_lint_test_apply_live_rollback(stack: Stack) -> None:
    tenant = stack.tenant("officer")
    officer = stack.client(stack.key(Role.COMPLIANCE))
    app = stack.client(stack.key(Role.APP, tenant))

    def live() -> str:
        r = app.post("/v1/privacy/anonymize", json={"text": SAMPLE})
        assert r.status_code in (200, 201), r.text
        return str(r.json()["texts"][0])

    assert "<PERSON_1>" in live()  # the default preset pseudonymizes names

    for doc in (TAGS, STRICT):
        assert officer.post("/admin/v1/policies/lint", json={"document": doc}).json()["ok"] is True
    preview = officer.post("/admin/v1/policies/preview", json={"document": TAGS, "texts": [SAMPLE], "tenant": tenant})
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["texts"] == ["Please call <PERSON> about the renewal."]
    assert [(d["entity_type"], d["text"], d["action"]) for d in body["detections"][0]] == [
        ("PERSON", "Dana Whitfield", "replace")
    ]

    base = f"/admin/v1/tenants/{tenant}/policy"
    assert officer.post(base, json={"document": TAGS, "comment": "tags"}).json()["version"] == 1
    assert live() == "Please call <PERSON> about the renewal."
    assert officer.post(base, json={"document": STRICT, "comment": "redact"}).json()["version"] == 2
    redacted = live()
    assert "Dana" not in redacted and "<PERSON" not in redacted

    assert officer.post(f"{base}/rollback", json={"version": 1}).json()["version"] == 3
    assert live() == "Please call <PERSON> about the renewal."


def test_preview_stores_nothing_and_reports_blocks(stack: Stack) -> None:
    from sqlalchemy import func, select

    from appliance.db.models import Pseudonym

    officer = stack.client(stack.key(Role.COMPLIANCE))
    with stack.services.sessions() as s:
        before = s.scalar(select(func.count()).select_from(Pseudonym))
    r = officer.post(
        "/admin/v1/policies/preview",
        json={
            "document": "extends: default\n",
            "texts": ["Mail jo@example.com", "Card 4111 1111 1111 1111"],
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["blocked"] == ["CREDIT_CARD"] and r.json()["texts"] is None
    with stack.services.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Pseudonym)) == before
    bad = officer.post("/admin/v1/policies/preview", json={"document": "pii: [", "texts": ["x"]})
    assert bad.status_code == 422
    assert bad.json()["type"] == "urn:appliance:problem:invalid-policy"
