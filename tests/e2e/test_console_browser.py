"""The admin console in a real headless Chromium (Debian's ``chromium``, driven by Playwright
through ``executable_path``; nothing is downloaded): sign in, edit a policy with a schema error,
fix it, preview, apply, see it in history and audit, roll back; a tenant admin sees only its
tenant; the operator's pages. Screenshots of the main pages land in the artifacts folder
(``$APPLIANCE_TEST_ARTIFACTS``, default ``test-artifacts/console``).

One browser per session and one server per module keep the whole file well under a minute.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from appliance.roles import Role
from tests.support import Stack, live_stack, make_services, make_settings

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BAD = "extends: default\nname: e2e\npii:\n  entities:\n    PERSON: {action: shred}\n"
V1 = "extends: default\nname: e2e\npii:\n  entities:\n    PERSON: {action: replace}\n"
V2 = "extends: default\nname: e2e-strict\npii:\n  entities:\n    PERSON: {action: redact}\n"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
def artifacts() -> Path:
    root = Path(os.environ.get("APPLIANCE_TEST_ARTIFACTS") or Path(__file__).parents[2] / "test-artifacts")
    out = root / "console"
    out.mkdir(parents=True, exist_ok=True)
    return out


# Module scope, not session: while sync Playwright is open its event loop counts as running
# in the main thread, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: scripts/test installs it (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("console-e2e")
    with live_stack(make_services(make_settings(tmp / "data", f"sqlite:///{tmp / 'a.db'}"))) as s:
        yield s


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


def sign_in(context: BrowserContext, stack: Stack, key: str, page_name: str = "policies") -> Page:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(f"{stack.base_url}/console/{page_name}")
    expect(page).to_have_url(re.compile(rf"/console/login\?next={page_name}$"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(rf"/console/{page_name}$"))
    expect(page.locator("#who-label")).to_contain_text("Signed in as")
    page.errors = errors  # type: ignore[attr-defined]
    return page


def type_policy(page: Page, text: str) -> None:
    editor = page.get_by_label("Policy YAML")
    editor.fill(text)


def test_officer_edits_previews_applies_audits_and_rolls_back(
    context: BrowserContext, stack: Stack, artifacts: Path
) -> None:
    tenant = stack.tenant("e2e")
    page = sign_in(context, stack, stack.key(Role.COMPLIANCE))
    page.get_by_label("Tenant").select_option(tenant)
    expect(page.locator("#active-summary")).to_contain_text("shipped default policy")
    expect(page.get_by_label("Policy YAML")).to_have_value(f'extends: default\nname: {tenant}\ndescription: ""\n')
    expect(page.locator("#validation")).to_have_text("Valid policy.")

    # A deliberate schema error shows with its field and line, and blocks apply.
    type_policy(page, BAD)
    issues = page.locator("#issues")
    expect(issues).to_contain_text("pii.entities.PERSON.action")
    expect(issues).to_contain_text("line 5")
    expect(page.locator("#validation")).to_contain_text("1 problem")
    expect(page.get_by_label("Policy YAML")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#gutter .bad")).to_have_text("5")
    expect(page.get_by_role("button", name="Apply as new version")).to_be_disabled()
    page.screenshot(path=str(artifacts / "policy-error.png"), full_page=True)

    # Fixed: valid, and the preview highlights the e-mail address and the name.
    type_policy(page, V1)
    expect(page.locator("#validation")).to_have_text("Valid policy.")
    expect(page.locator('#preview-original mark[data-entity="EMAIL_ADDRESS"]')).to_have_text("anna.berg@example.com")
    expect(page.locator('#preview-original mark[data-entity="PERSON"]')).to_have_text("Anna Berg")
    transformed = page.locator("#preview-transformed")
    expect(transformed).to_contain_text("<PERSON>")
    expect(transformed).not_to_contain_text("anna.berg@example.com")
    expect(transformed).not_to_contain_text("Anna Berg")
    page.screenshot(path=str(artifacts / "policies.png"), full_page=True)

    # Apply twice, with comments; both versions are in the history.
    page.get_by_label("Comment for the history").fill("e2e: names become tags")
    page.get_by_role("button", name="Apply as new version").click()
    expect(page.locator("#toast")).to_contain_text("version 1 is now active")
    type_policy(page, V2)
    expect(page.locator("#validation")).to_have_text("Valid policy.")
    page.get_by_label("Comment for the history").fill("e2e: names removed")
    page.get_by_role("button", name="Apply as new version").click()
    expect(page.locator("#toast")).to_contain_text("version 2 is now active")
    history = page.locator("#history")
    expect(history.locator('tr[data-version="1"]')).to_contain_text("e2e: names become tags")
    expect(history.locator('tr[data-version="2"]')).to_contain_text("active")

    # Diff between the two versions.
    page.get_by_role("button", name="Show differences").click()
    expect(page.locator("#diff-changes")).to_contain_text("pii.entities.PERSON.action")
    expect(page.locator("#diff-text .add")).to_contain_text(["+name: e2e-strict"])

    # Roll back to version 1 through the dialog: version 3 becomes active.
    page.get_by_role("button", name="Roll back to version 1").click()
    page.get_by_label("Comment", exact=True).fill("e2e: back to tags")
    page.get_by_role("button", name="Roll back", exact=True).click()
    expect(page.locator("#toast")).to_contain_text("version 3 is now active")
    expect(history.locator('tr[data-version="3"]')).to_contain_text("e2e: back to tags")
    expect(history.locator('tr[data-version="3"]')).to_contain_text("active")
    expect(page.locator("#active-summary")).to_contain_text("version 3 (e2e)")

    # The audit table shows the applies and the rollback; entry detail; verify the chain.
    page.get_by_role("link", name="Audit").click()
    expect(page).to_have_url(re.compile(r"/console/audit$"))
    page.get_by_label("Tenant").select_option(tenant)
    page.get_by_label("Action").fill("policy")
    page.get_by_role("button", name="Apply filters").click()
    rows = page.locator("#audit-rows tr")
    expect(rows).to_have_count(0)  # "policy" alone is not an action: the filter is exact
    page.get_by_label("Action").fill("policy.apply")
    page.get_by_role("button", name="Apply filters").click()
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("policy:2")
    page.get_by_label("Action").fill("policy.rollback")
    page.get_by_role("button", name="Apply filters").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("policy:3")
    rows.first.get_by_role("button").click()
    expect(page.locator("#entry-detail")).to_be_focused()
    expect(page.locator("#detail-fields")).to_contain_text("policy.rollback")
    page.get_by_role("button", name="Verify chain").click()
    expect(page.locator("#verify-result")).to_contain_text("Chain intact")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export the time range").click()
    assert download.value.suggested_filename.endswith(".jsonl")
    page.screenshot(path=str(artifacts / "audit.png"), full_page=True)

    # Sign out: the session is gone, pages send us back to sign-in.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/login\?reason=signed-out$"))
    page.goto(f"{stack.base_url}/console/policies")
    expect(page).to_have_url(re.compile(r"/console/login\?next=policies$"))
    assert page.errors == []  # type: ignore[attr-defined]


def test_tenant_admin_sees_only_its_tenant_and_cannot_edit(
    context: BrowserContext, stack: Stack, artifacts: Path
) -> None:
    mine, other = stack.tenant("mine"), stack.tenant("other")
    stack.client(stack.key(Role.COMPLIANCE)).post(
        f"/admin/v1/tenants/{other}/policy/", json={"document": V2, "comment": "not for mine"}
    )
    page = sign_in(context, stack, stack.key(Role.TENANT_ADMIN, mine))
    tenants = page.get_by_label("Tenant")
    expect(tenants.locator("option")).to_have_count(1)
    expect(tenants.locator("option")).to_have_text(mine)
    expect(page.locator("#read-only-note")).to_be_visible()
    expect(page.get_by_label("Policy YAML")).not_to_be_editable()
    expect(page.get_by_role("button", name="Apply as new version")).to_be_hidden()
    status = page.evaluate("async (t) => (await fetch(`/admin/v1/tenants/${t}/policy/versions`)).status", other)
    assert status == 404
    page.errors.clear()  # type: ignore[attr-defined]  # that 404 was the point; nothing else may fail
    expect(page.get_by_role("link", name="Operations")).to_be_visible()
    page.get_by_role("link", name="Audit").click()
    expect(page.locator("#f-tenant option")).to_have_count(2)  # "All visible" and its own
    expect(page.locator("#audit-rows")).not_to_contain_text(other)
    expect(page.locator("#chain-tools")).to_be_hidden()
    page.screenshot(path=str(artifacts / "audit-tenant-admin.png"), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]


def test_operator_sees_operations_and_a_new_key_once(context: BrowserContext, stack: Stack, artifacts: Path) -> None:
    tenant = stack.tenant("ops")
    page = sign_in(context, stack, stack.operator_key, "operations")
    expect(page.locator("#health")).to_contain_text("ready")
    expect(page.locator("#model-rows")).to_contain_text("smollm2-135m-instruct")
    expect(page.locator("#age-rows")).to_contain_text("operator")
    expect(page.locator("#data-key-rows")).to_contain_text(tenant)
    page.get_by_role("button", name=f"Keys of {tenant}").click()
    page.get_by_label("Key name").fill("e2e billing app")
    page.get_by_label("Role").select_option("app")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("New API key")
    expect(secret).to_have_value(re.compile(r"^apl_[0-9a-f]{16}_"))
    key_id = secret.input_value().split("_")[1]
    expect(page.locator("#key-rows")).to_contain_text("e2e billing app")
    page.screenshot(path=str(artifacts / "operations.png"), full_page=True)
    page.get_by_role("button", name="I have stored it").click()
    expect(page.locator("#new-secret")).to_be_hidden()
    expect(secret).to_have_value("")
    page.get_by_role("button", name=f"Revoke {key_id}").click()
    page.get_by_role("button", name="Revoke", exact=True).click()
    expect(page.locator(f'#key-rows tr[data-key="{key_id}"]')).to_contain_text("revoked")
    page.get_by_role("link", name="Budgets and fine-tuning").click()
    features = page.evaluate("async () => (await (await fetch('/console/api/session')).json()).features")
    if features["privacy_budgets"]:  # a build with the fine-tuning API: the cap, a chart, no jobs yet
        expect(page.locator("#budget-summary")).to_contain_text(re.compile(r"0\.00 of \d+\.\d\d"))
        expect(page.locator("#budget-chart svg")).to_be_visible()
        expect(page.locator("#jobs-empty")).to_be_visible()
        expect(page.locator("#unavailable")).to_be_hidden()
    else:
        expect(page.locator("#unavailable")).to_be_visible()
        expect(page.locator("#budget")).to_be_hidden()
    page.screenshot(path=str(artifacts / "budgets.png"), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]


def test_sign_in_page_is_keyboard_usable_and_says_why_a_key_fails(
    context: BrowserContext, stack: Stack, artifacts: Path
) -> None:
    page = context.new_page()
    page.goto(f"{stack.base_url}/console/login")
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type("apl_0123456789abcdef_" + "x" * 43)
    page.keyboard.press("Enter")
    expect(page.locator("#login-error")).to_contain_text("invalid, revoked or expired")
    expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    page.screenshot(path=str(artifacts / "login.png"))
