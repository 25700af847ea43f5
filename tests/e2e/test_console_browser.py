"""The admin console in a real headless Chromium (Debian's ``chromium``, driven by Playwright
through ``executable_path``; nothing is downloaded): sign in, edit a policy with a schema error,
fix it, preview, apply, see it in history and audit, roll back; a tenant admin sees only its
tenant; the operator's pages; the privacy-budget chart against the API's figures. Every page
runs at a laptop's 1280x800 and must not scroll sideways. Screenshots of the main pages land in
``$APPLIANCE_TEST_ARTIFACTS/console`` (default ``test-artifacts/console`` in the checkout).

One browser per session and one server per module keep the whole file well under a minute.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright
from sqlalchemy import update

from appliance.db.base import utcnow
from appliance.db.models import PrivacyCharge
from appliance.roles import Role
from appliance.services.finetune import JobView
from appliance.services.finetune_queue import DbJobStore
from appliance.services.principal import Principal
from appliance.training.accounting import epsilon_of
from appliance.training.spec import Progress, TrainingCancelled
from appliance.training.worker import ClaimedJob
from tests.finetune_support import add_tickets, finetune_tenant, queue_job
from tests.support import Stack, list_every, live_stack, make_services, make_settings

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
# Assertions wait as long as actions do: expect()'s own 5 s default was too short for a lint
# and preview round trip while the full suite loads both cores (seen in CI).
expect.set_options(timeout=TIMEOUT_MS)
LAPTOP = {"width": 1280, "height": 800}


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
    ctx = browser.new_context(viewport=LAPTOP)
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


def assert_fits(page: Page) -> None:
    """Nothing on the page makes it scroll sideways at the context's (laptop) width."""
    scroll, client = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll <= client, f"{page.url} scrolls sideways: {scroll} px of content in {client} px"


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
    assert_fits(page)
    page.screenshot(path=str(artifacts / "policies.png"), full_page=True)

    # A valid policy is not enough: Apply waits for a comment (blanks do not count).
    apply = page.get_by_role("button", name="Apply as new version")
    comment = page.get_by_label("Comment for the history")
    expect(comment).to_have_attribute("required", "")
    expect(apply).to_be_disabled()
    comment.fill("   ")
    expect(apply).to_be_disabled()

    # Apply twice, with comments; both versions are in the history.
    comment.fill("e2e: names become tags")
    expect(apply).to_be_enabled()
    apply.click()
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

    # The rollback dialog closes with Escape and changes nothing; it too needs a comment.
    dialog = page.locator("#rollback-dialog")
    page.get_by_role("button", name="Roll back to version 1").click()
    expect(dialog).to_be_visible()
    expect(page.get_by_label("Comment", exact=True)).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="Roll back to version 1")).to_be_visible()
    assert len(list_every(stack.client(stack.key(Role.COMPLIANCE)), f"/admin/v1/tenants/{tenant}/policy/versions")) == 2

    # Roll back to version 1 through the dialog: version 3 becomes active.
    page.get_by_role("button", name="Roll back to version 1").click()
    rollback_comment = page.get_by_label("Comment", exact=True)
    expect(rollback_comment).to_have_value("rollback to version 1")
    rollback_comment.fill(" ")
    expect(page.get_by_role("button", name="Roll back", exact=True)).to_be_disabled()
    rollback_comment.fill("e2e: back to tags")
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
    assert_fits(page)
    page.screenshot(path=str(artifacts / "audit.png"), full_page=True)

    # Sign out: the session is gone, pages send us back to sign-in.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/login\?reason=signed-out$"))
    page.goto(f"{stack.base_url}/console/policies")
    expect(page).to_have_url(re.compile(r"/console/login\?next=policies$"))
    assert page.errors == []  # type: ignore[attr-defined]


def test_text_typed_while_a_tenant_loads_is_kept(context: BrowserContext, stack: Stack) -> None:
    """A tenant's policy that arrives after the officer started typing must not replace the text.

    The page loads its first tenant on its own, and a tenant picked meanwhile loads too; CI once
    saw a late load wipe what the test had just typed. Here the load is held until after typing.
    """
    first, second = stack.tenant("load-a"), stack.tenant("load-b")
    page = sign_in(context, stack, stack.key(Role.COMPLIANCE))
    page.get_by_label("Tenant").select_option(first)
    expect(page.get_by_label("Policy YAML")).to_have_value(re.compile(rf"name: {first}"))
    held: list[Route] = []
    page.route(re.compile(rf"/admin/v1/tenants/{second}/policy/$"), lambda route: held.append(route))
    page.get_by_label("Tenant").select_option(second)
    for _ in range(300):  # at most 15 s for the request to reach the route
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the second tenant's policy was never requested"
    type_policy(page, BAD)
    expect(page.locator("#issues")).to_contain_text("pii.entities.PERSON.action")
    held[0].continue_()
    page.wait_for_load_state("networkidle")  # a wrongful reload would lint and preview again
    expect(page.get_by_label("Policy YAML")).to_have_value(BAD)
    expect(page.locator("#issues")).to_contain_text("pii.entities.PERSON.action")
    expect(page.get_by_role("button", name="Apply as new version")).to_be_disabled()
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
    assert_fits(page)
    page.screenshot(path=str(artifacts / "audit-tenant-admin.png"), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_long_key_list_comes_a_page_at_a_time(context: BrowserContext, stack: Stack) -> None:
    tenant = stack.tenant("many")
    op = Principal.local_operator()
    ids = [stack.services.api_keys.create(op, role=Role.APP, name=f"app {i}", tenant=tenant).key.id for i in range(103)]
    page = sign_in(context, stack, stack.operator_key, "operations")
    page.get_by_role("button", name=f"Keys of {tenant}").click()
    rows = page.locator("#key-rows tr")
    expect(rows).to_have_count(100)
    expect(page.locator(f'#key-rows tr[data-key="{ids[0]}"]')).to_have_count(1)  # oldest first
    page.get_by_role("button", name="More keys").click()
    expect(rows).to_have_count(103)
    expect(page.locator(f'#key-rows tr[data-key="{ids[-1]}"]')).to_have_count(1)
    expect(page.get_by_role("button", name="More keys")).to_be_hidden()
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
    assert_fits(page)

    # The revoke dialog opens on Cancel: Enter there keeps the key.
    deletes: list[str] = []
    page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)
    dialog = page.locator("#revoke-dialog")
    page.get_by_role("button", name=f"Revoke {key_id}").click()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name=f"Revoke {key_id}").click()
    page.get_by_role("button", name="Revoke", exact=True).click()
    expect(page.locator(f'#key-rows tr[data-key="{key_id}"]')).to_have_count(0)  # revoked keys are hidden
    page.get_by_label("Show revoked keys").check()
    expect(page.locator(f'#key-rows tr[data-key="{key_id}"]')).to_contain_text("revoked")
    assert len(deletes) == 1

    # After that confirmed revoke, Escape on the next key's dialog revokes nothing.
    page.get_by_label("Key name").fill("e2e second app")
    page.get_by_role("button", name="Create key").click()
    expect(secret).to_have_value(re.compile(r"^apl_[0-9a-f]{16}_"))
    second = secret.input_value().split("_")[1]
    page.get_by_role("button", name="I have stored it").click()
    page.get_by_role("button", name=f"Revoke {second}").click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.evaluate("() => new Promise((done) => setTimeout(done, 200))")  # a close handler would have sent its DELETE
    assert len(deletes) == 1
    expect(page.locator(f'#key-rows tr[data-key="{second}"]')).to_contain_text("active")
    keys = list_every(stack.client(stack.operator_key), f"/admin/v1/tenants/{tenant}/keys", include_revoked="true")
    assert next(k for k in keys if k["id"] == second)["revoked_at"] is None
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
    assert_fits(page)
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
    assert_fits(page)
    page.screenshot(path=str(artifacts / "login.png"))


def _stopped(store: DbJobStore, job: JobView) -> None:
    """Run ``job`` through the real job store as a worker would: claim it (its charge opens)
    and stop it after its planned steps (the charge settles with what those steps spent)."""
    claimed = store.claim("e2e-worker")
    assert claimed is not None and claimed.id == job.id
    ran = ((job.noise_multiplier, job.sample_rate, job.planned_steps),)
    spent = epsilon_of(ran, job.delta)
    store.cancelled(claimed, TrainingCancelled(steps=job.planned_steps, epsilon_spent=spent, history=ran))


def _budget_tenant(stack: Stack) -> tuple[str, JobView, ClaimedJob, DbJobStore]:
    """A tenant with a finished job charged a year ago (outside the 365-day period), one
    finished in the period, and one running: its whole plan is reserved."""
    services = stack.services
    tenant = finetune_tenant(services, "budget")
    add_tickets(services, tenant)
    store = services.job_store()
    old = queue_job(services, tenant, "tickets", output_model="old-clf")
    _stopped(store, old)
    with services.sessions.begin() as s:
        s.execute(
            update(PrivacyCharge)
            .where(PrivacyCharge.job_id == old.id)
            .values(charged_at=utcnow() - timedelta(days=400))
        )
    _stopped(store, queue_job(services, tenant, "tickets", output_model="done-clf"))
    running = queue_job(services, tenant, "tickets", output_model="running-clf")
    claimed = store.claim("e2e-worker")
    assert claimed is not None and claimed.id == running.id
    return tenant, running, claimed, store


def _last_height(path: str) -> float:
    """The last vertical position a step line reaches (its final ``V``)."""
    return float(re.findall(r"V(-?[\d.]+)", path)[-1])


def test_the_budget_chart_plots_this_periods_spent_and_reserved_as_the_api_reports_them(
    context: BrowserContext, stack: Stack, artifacts: Path
) -> None:
    tenant, running, claimed, store = _budget_tenant(stack)
    report = stack.client(stack.key(Role.COMPLIANCE)).get(f"/admin/v1/tenants/{tenant}/privacy-budget").json()
    # What makes the old chart wrong: three charges, one before the period and one not settled.
    assert len(report["charges"]) == 3
    assert [c["settled"] for c in report["charges"]].count(False) == 1
    in_period = sum(c["epsilon"] for c in report["charges"] if c["settled"]) - report["total_spent"]
    assert in_period > 0.1  # the old charge is real and left out of the period's total
    assert report["total_reserved"] == pytest.approx(running.target_epsilon)
    spent, reserved, cap = report["total_spent"], report["total_reserved"], report["total_limit"]

    page = sign_in(context, stack, stack.key(Role.COMPLIANCE), "budgets")
    page.get_by_label("Tenant").select_option(tenant)
    summary = page.locator("#budget-summary")
    expect(summary).to_contain_text(f"{spent:.2f} of {cap:.2f}")
    expect(summary).to_contain_text(f"{reserved:.2f} reserved by running jobs")
    expect(page.locator("#chart-spent-total")).to_have_text(f"{spent:.2f}")
    expect(page.locator("#chart-reserved-total")).to_have_text(f"{reserved:.2f}")
    expect(page.locator("#chart-cap-total")).to_have_text(f"{cap:.2f}")
    expect(page.locator("#budget-legend")).to_contain_text("Spent by 1 finished job this period")
    expect(page.locator("#budget-legend")).to_contain_text("Reserved by 1 running or queued job")
    expect(page.locator("#budget-mismatch")).to_be_hidden()

    # The lines end where the figures say: the chart's scale is budgets.js's (220 high,
    # 16 above and 32 below the plot, the top 10% over the larger of the cap and the total).
    top = max(cap, spent + reserved) * 1.1

    def height(epsilon: float) -> float:
        return 220 - 32 - epsilon / top * (220 - 16 - 32)

    spent_line = page.locator("#budget-chart path.chart-spent").get_attribute("d") or ""
    reserved_line = page.locator("#budget-chart path.chart-reserved").get_attribute("d") or ""
    assert _last_height(spent_line) == pytest.approx(height(spent), abs=0.1)
    assert _last_height(reserved_line) == pytest.approx(height(spent + reserved), abs=0.1)

    # Progress shows as it was at load; Refresh fetches it again (nothing polls on its own).
    row = page.locator(f'#job-rows tr[data-job="{running.id}"]')
    expect(row).to_contain_text("running")
    expect(row.locator("progress")).to_have_attribute("value", "0")
    total = running.planned_steps
    store.progress(
        claimed, Progress(step=1, total_steps=total, epoch=1, loss=0.7, epsilon_spent=0.2, elapsed_s=3.0, eta_s=120.0)
    )
    page.wait_for_timeout(300)
    expect(row.locator("progress")).to_have_attribute("value", "0")
    page.get_by_role("button", name="Refresh").click()
    expect(row.locator("progress")).to_have_attribute("value", "1")
    expect(row).to_contain_text(f"{round(100 / total)}%")
    expect(row).to_contain_text("about 2 min left")
    expect(page.locator("#jobs-updated")).to_contain_text("Updated")
    assert_fits(page)
    page.screenshot(path=str(artifacts / "budgets.png"), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]
