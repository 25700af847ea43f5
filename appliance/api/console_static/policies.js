// Policies: per tenant the active version and history, a YAML editor validated as you type
// (the API's lint endpoint: the policy schema plus the checks an apply runs), a live preview,
// apply with a comment, diff between versions and rollback.
import { api, apiEvery, clear, debounce, describe, el, fillTenants, start, toast, when } from "./common.js";

const $ = (id) => document.getElementById(id);
const editor = $("policy-editor");
const gutter = $("gutter");
const sample = $("sample-text");
const state = {
  tenant: null,
  canWrite: false,
  valid: false,
  checked: null,
  issues: [],
  history: [],
  active: null,
  checking: 0,
  previewing: 0,
  loading: 0,
  edits: 0,
};

function lineStarts(text) {
  const starts = [0];
  for (let i = 0; i < text.length; i += 1) if (text[i] === "\n") starts.push(i + 1);
  return starts;
}

function drawGutter() {
  const lines = editor.value.split("\n").length;
  const bad = new Set(state.issues.map((i) => i.line).filter(Boolean));
  clear(gutter);
  for (let n = 1; n <= lines; n += 1) {
    gutter.append(el("span", { className: bad.has(n) ? "bad" : "" }, String(n)), "\n");
  }
  gutter.scrollTop = editor.scrollTop;
}

function goTo(line, column) {
  const starts = lineStarts(editor.value);
  const at = (starts[Math.max(0, (line || 1) - 1)] || 0) + Math.max(0, (column || 1) - 1);
  editor.focus();
  editor.setSelectionRange(at, at);
}

function hasComment(input) {
  return input.value.trim().length > 0;
}

/** Apply needs a valid policy, the right to write, and a comment for the history. */
function updateApply() {
  $("apply").disabled = !(state.valid && state.canWrite && hasComment($("apply-comment")));
}

function showIssues(ok, issues) {
  state.valid = ok;
  state.issues = issues;
  const list = clear($("issues"));
  const status = $("validation");
  status.className = `validation ${ok ? "ok" : "bad"}`;
  status.textContent = ok ? "Valid policy." : `${issues.length} problem${issues.length === 1 ? "" : "s"} in the policy:`;
  editor.setAttribute("aria-invalid", ok ? "false" : "true");
  for (const issue of issues) {
    const where = issue.line ? `line ${issue.line}, column ${issue.column}` : "document";
    const text = `${where}: ${issue.field ? `${issue.field}: ` : ""}${issue.message}`;
    list.append(el("li", {}, el("button", { type: "button", className: "link", onclick: () => goTo(issue.line, issue.column) }, text)));
  }
  updateApply();
  drawGutter();
}

async function validate() {
  const ticket = ++state.checking;
  const document = editor.value;
  if (!document.trim()) {
    showIssues(false, [{ field: "", message: "the policy is empty", line: 1, column: 1 }]);
    await preview();
    return;
  }
  try {
    const result = await api("/admin/v1/policies/lint", { method: "POST", body: { document } });
    if (ticket !== state.checking) return; // a newer keystroke is being checked
    state.checked = document;
    showIssues(result.ok, result.issues);
    await preview();
  } catch (err) {
    if (ticket === state.checking) {
      showIssues(false, [{ field: "", message: describe(err), line: null, column: null }]);
      await preview();
    }
  }
}

function highlighted(text, detections) {
  const out = [];
  let at = 0;
  const sorted = [...detections].sort((a, b) => a.start - b.start || b.end - a.end);
  for (const d of sorted) {
    if (d.start < at) continue; // overlapping detections: the first wins, as in the transform
    out.push(text.slice(at, d.start));
    out.push(
      el("mark", { className: `action-${d.action}`, dataset: { entity: d.entity_type }, title: `${d.entity_type} → ${d.action}` }, d.text),
      el("small", { className: "entity" }, d.entity_type),
    );
    at = d.end;
  }
  out.push(text.slice(at));
  return out;
}

async function preview() {
  // Only the document the last check found valid is previewed, and only while it is still
  // what the editor holds (the next check follows any newer keystroke).
  const document = state.valid && state.checked === editor.value ? state.checked : null;
  const text = sample.value;
  const ticket = ++state.previewing;
  let r = null;
  let failure = null;
  if (document && text.trim()) {
    try {
      r = await api("/admin/v1/policies/preview", {
        method: "POST",
        body: { document, texts: [text], tenant: state.tenant },
      });
    } catch (err) {
      failure = describe(err);
    }
  }
  if (ticket !== state.previewing) return; // a newer preview is on its way
  const original = clear($("preview-original"));
  const transformed = clear($("preview-transformed"));
  const rows = clear($("detections"));
  $("preview-blocked").textContent = "";
  if (!document) {
    original.append(el("span", { className: "muted" }, "Fix the policy to see the preview."));
    return;
  }
  if (failure) {
    original.append(el("span", { className: "error" }, failure));
    return;
  }
  if (!r) return;
  const detections = r.detections[0];
  original.append(...highlighted(text, detections));
  if (r.blocked.length) {
    $("preview-blocked").textContent = `A request with this text is refused: the policy blocks ${r.blocked.join(", ")}.`;
    transformed.append(el("span", { className: "muted" }, "(blocked: the model receives nothing)"));
  } else {
    transformed.textContent = r.texts ? r.texts[0] : text;
  }
  for (const d of detections) {
    rows.append(el("tr", {}, el("td", {}, d.entity_type), el("td", {}, d.text), el("td", {}, d.score.toFixed(2)), el("td", {}, d.action)));
  }
  if (!detections.length) rows.append(el("tr", {}, el("td", { colspan: "4", className: "muted" }, "Nothing detected.")));
}

function versionOptions(select, chosen) {
  clear(select);
  for (const v of state.history) select.append(el("option", { value: String(v.version), selected: v.version === chosen }, `version ${v.version}`));
}

function drawHistory() {
  const body = clear($("history"));
  $("history-empty").hidden = state.history.length > 0;
  for (const v of [...state.history].reverse()) {
    const actions = el("td", { className: "actions" },
      el("button", { type: "button", className: "secondary", onclick: () => viewVersion(v.version) }, `View version ${v.version}`));
    if (state.canWrite && !v.active) {
      actions.append(el("button", { type: "button", className: "secondary", onclick: () => askRollback(v.version) }, `Roll back to version ${v.version}`));
    }
    body.append(el("tr", { dataset: { version: String(v.version) } },
      el("td", {}, String(v.version)), el("td", {}, when(v.created_at)), el("td", {}, v.author),
      el("td", {}, v.comment || "—"), el("td", {}, v.active ? el("strong", {}, "active") : "earlier"), actions));
  }
  const last = state.history.length;
  versionOptions($("diff-from"), Math.max(1, last - 1));
  versionOptions($("diff-to"), last);
  $("diff-form").hidden = last < 2;
}

/**
 * Show a tenant's active policy and history. Loads can overlap (a tenant picked while the page
 * still loads the first one), so only the newest load draws, and it never replaces text typed
 * into the editor after it began: the officer's keystrokes are never thrown away.
 */
async function loadTenant(tenant, { keepEditor = false } = {}) {
  const ticket = ++state.loading;
  const edits = state.edits;
  state.tenant = tenant;
  const [active, history] = await Promise.all([
    api(`/admin/v1/tenants/${encodeURIComponent(tenant)}/policy/`),
    apiEvery(`/admin/v1/tenants/${encodeURIComponent(tenant)}/policy/versions`),
  ]);
  if (ticket !== state.loading) return;
  state.active = active.version;
  state.history = history;
  $("active-summary").textContent = active.version
    ? `Active: version ${active.version} (${active.policy.name})`
    : "Active: the shipped default policy (no version applied yet)";
  drawHistory();
  $("diff-changes").hidden = true;
  $("diff-text").hidden = true;
  if (keepEditor || state.edits !== edits) return;
  const document = active.version
    ? (await api(`/admin/v1/tenants/${encodeURIComponent(tenant)}/policy/versions/${active.version}`)).document
    : `extends: default\nname: ${tenant}\ndescription: ""\n`;
  if (ticket !== state.loading || state.edits !== edits) return;
  editor.value = document;
  await validate();
}

async function viewVersion(version) {
  const doc = await api(`/admin/v1/tenants/${encodeURIComponent(state.tenant)}/policy/versions/${version}`);
  $("version-title").textContent = `Version ${version}`;
  $("version-text").textContent = doc.document;
  $("version-load").onclick = () => {
    editor.value = doc.document;
    $("version-dialog").close();
    validate();
    editor.focus();
  };
  $("version-dialog").showModal();
}

function askRollback(version) {
  const dialog = $("rollback-dialog");
  $("rollback-what").textContent = `Make version ${version} of tenant ${state.tenant} active again, as a new version.`;
  $("rollback-comment").value = `rollback to version ${version}`;
  dialog.dataset.version = String(version);
  dialog.returnValue = ""; // Escape need not reset it: an earlier "confirm" must not count
  $("rollback-confirm").disabled = false;
  dialog.showModal();
  $("rollback-comment").select();
}

$("rollback-comment").addEventListener("input", () => {
  $("rollback-confirm").disabled = !hasComment($("rollback-comment"));
});

$("rollback-dialog").addEventListener("close", async () => {
  const dialog = $("rollback-dialog");
  if (dialog.returnValue !== "confirm" || !hasComment($("rollback-comment"))) return;
  try {
    const v = await api(`/admin/v1/tenants/${encodeURIComponent(state.tenant)}/policy/rollback`, {
      method: "POST",
      body: { version: Number(dialog.dataset.version), comment: $("rollback-comment").value.trim() },
    });
    toast(`Rolled back: version ${v.version} is now active.`);
    await loadTenant(state.tenant);
  } catch (err) {
    toast(`Rollback failed: ${describe(err)}`);
  }
});

$("apply-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!state.valid || !state.canWrite || !hasComment($("apply-comment"))) return;
  const button = $("apply");
  button.disabled = true;
  try {
    const v = await api(`/admin/v1/tenants/${encodeURIComponent(state.tenant)}/policy/`, {
      method: "POST",
      body: { document: editor.value, comment: $("apply-comment").value.trim() },
    });
    $("apply-comment").value = "";
    toast(`Applied: version ${v.version} is now active for ${state.tenant}.`);
    await loadTenant(state.tenant, { keepEditor: true });
  } catch (err) {
    toast(`Not applied: ${describe(err)}`);
  } finally {
    updateApply();
  }
});

$("diff-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const from = $("diff-from").value;
  const to = $("diff-to").value;
  try {
    const d = await api(`/admin/v1/tenants/${encodeURIComponent(state.tenant)}/policy/diff?from=${from}&to=${to}`);
    const table = $("diff-changes");
    const body = clear(table.tBodies[0]);
    const show = (v) => (v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
    for (const c of d.changes) body.append(el("tr", {}, el("td", {}, el("code", {}, c.path)), el("td", {}, show(c.old)), el("td", {}, show(c.new))));
    if (!d.changes.length) body.append(el("tr", {}, el("td", { colspan: "3", className: "muted" }, "The two versions mean the same policy.")));
    table.hidden = false;
    const pre = clear($("diff-text"));
    for (const line of d.text_diff.split("\n")) {
      const kind = line.startsWith("+") && !line.startsWith("+++") ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : "";
      pre.append(el("span", { className: kind }, line), "\n");
    }
    pre.hidden = !d.text_diff;
  } catch (err) {
    toast(`Diff failed: ${describe(err)}`);
  }
});

editor.addEventListener("input", () => {
  state.edits += 1;
  drawGutter();
  $("apply").disabled = true; // until the new text is checked
  scheduleValidate();
});
editor.addEventListener("scroll", () => {
  gutter.scrollTop = editor.scrollTop;
});
const scheduleValidate = debounce(validate, 300);
sample.addEventListener("input", debounce(preview, 300));
$("apply-comment").addEventListener("input", updateApply);

async function main() {
  const s = await start();
  state.canWrite = s.role === "compliance";
  $("read-only-note").hidden = state.canWrite;
  editor.readOnly = !state.canWrite;
  $("apply-form").hidden = !state.canWrite;
  const tenants = await fillTenants($("tenant"));
  $("tenant").addEventListener("change", () => {
    if ($("tenant").value !== state.tenant) loadTenant($("tenant").value);
  });
  if (!tenants.length) {
    $("active-summary").textContent = "No tenants yet: an operator creates them on the Operations page.";
    return;
  }
  const wanted = new URLSearchParams(window.location.search).get("tenant");
  const first = tenants.includes(wanted) ? wanted : tenants[0];
  $("tenant").value = first;
  await loadTenant(first);
}

main();
