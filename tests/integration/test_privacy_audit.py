"""/v1/privacy/anonymize stores pseudonyms for the caller, so each call is audited (types and
counts only), blocked calls included."""

from __future__ import annotations

import json

from sqlalchemy import select

from appliance.db.models import AuditEntry
from appliance.roles import Role
from appliance.services.principal import Principal
from tests.support import Stack


def test_anonymize_calls_are_audited_without_values(stack: Stack) -> None:
    tenant = stack.tenant("paudit")
    app = stack.client(stack.key(Role.APP, tenant))
    ok = app.post("/v1/privacy/anonymize", json={"text": "Ask Ingrid Halvorsen at ingrid.h@example.com"})
    assert ok.status_code == 200, ok.text
    blocked = app.post("/v1/privacy/anonymize", json={"text": "card 4111 1111 1111 1111"})
    assert blocked.status_code == 422
    tenant_id = stack.services.tenants.get(Principal.local_operator(), tenant).id
    with stack.services.sessions() as s:
        rows = s.scalars(
            select(AuditEntry)
            .where(AuditEntry.tenant_id == tenant_id, AuditEntry.action == "privacy.anonymize")
            .order_by(AuditEntry.id)
        ).all()
    assert [r.outcome for r in rows] == ["ok", "blocked"]
    facts = json.loads(rows[0].facts)
    assert facts["entities"]["EMAIL_ADDRESS"] == {"count": 1, "action": "pseudonymize"}
    assert json.loads(rows[1].facts) == {"blocked_types": ["CREDIT_CARD"]}
    dumped = " ".join(r.facts + (r.object or "") for r in rows)
    assert "Halvorsen" not in dumped and "ingrid.h" not in dumped and "4111" not in dumped
    assert stack.services.audit.verify().ok
