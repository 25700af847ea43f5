// Operations: health, tenants, API keys (a new secret is shown once), key ages and rotation,
// data keys and models. Tenant admins see their own tenant's keys only.
import { api, clear, describe, el, start, toast, when } from "./common.js";

const $ = (id) => document.getElementById(id);
const GLOBAL = "(global)";
const state = { role: null, tenants: [] };

function keysPath(scope) {
  return scope === GLOBAL ? "/admin/v1/keys/" : `/admin/v1/tenants/${encodeURIComponent(scope)}/keys`;
}

async function loadHealth() {
  const dl = clear($("health"));
  const row = (name, value, ok) => dl.append(el("dt", {}, name), el("dd", { className: ok ? "ok" : "bad" }, value));
  for (const [name, path] of [["Liveness (/healthz)", "/healthz"], ["Readiness (/readyz)", "/readyz"]]) {
    try {
      const r = await fetch(path, { credentials: "same-origin" });
      const body = await r.json();
      row(name, r.ok ? body.status : `${r.status}: ${body.detail}`, r.ok);
    } catch (err) {
      row(name, "no answer", false);
    }
  }
}

async function loadTenants() {
  state.tenants = await api("/admin/v1/tenants/");
  const body = clear($("tenant-rows"));
  for (const t of state.tenants) {
    body.append(el("tr", {}, el("td", {}, t.name), el("td", {}, t.display_name), el("td", {}, when(t.created_at)),
      el("td", {}, el("button", { type: "button", className: "secondary", onclick: () => showKeys(t.name) }, `Keys of ${t.name}`))));
  }
  const scope = $("key-scope");
  const chosen = scope.value;
  clear(scope);
  if (state.role === "operator") scope.append(el("option", { value: GLOBAL }, "Operator and compliance keys (global)"));
  for (const t of state.tenants) scope.append(el("option", { value: t.name }, `Tenant ${t.name}`));
  if ([...scope.options].some((o) => o.value === chosen)) scope.value = chosen;
}

function roleChoices() {
  const role = $("new-key-role");
  clear(role);
  const roles = $("key-scope").value === GLOBAL ? ["compliance", "operator"] : ["app", "tenant_admin"];
  for (const r of roles) role.append(el("option", { value: r }, r));
}

const KEY_PAGE = 100;
let keyCursor = null; // next_cursor of the last page shown; null when it was the last
let keyLoad = 0; // which load is current: an answer to an older one (another scope) is dropped

function keyRow(scope, k) {
  const revoked = Boolean(k.revoked_at);
  const expired = k.expires_at && new Date(k.expires_at) <= new Date();
  const status = revoked ? `revoked ${when(k.revoked_at)}` : expired ? "expired" : "active";
  const actions = el("td", {});
  if (!revoked && state.role !== "compliance") {
    actions.append(el("button", { type: "button", className: "danger", onclick: () => askRevoke(scope, k) }, `Revoke ${k.id}`));
  }
  return el("tr", { dataset: { key: k.id } }, el("td", {}, el("code", {}, k.id)), el("td", {}, k.name), el("td", {}, k.role),
    el("td", {}, when(k.created_at)), el("td", {}, when(k.last_used_at)), el("td", {}, when(k.expires_at)),
    el("td", {}, status), actions);
}

// One page of keys (oldest first), appended to the table; the first page replaces it.
async function loadKeyPage(cursor) {
  const load = ++keyLoad;
  const scope = $("key-scope").value;
  const body = $("key-rows");
  const more = $("key-more");
  if (!cursor) clear(body);
  more.hidden = true;
  if (!scope) return;
  const params = new URLSearchParams({ limit: String(KEY_PAGE) });
  if ($("key-revoked").checked) params.set("include_revoked", "true");
  if (cursor) params.set("cursor", cursor);
  let page;
  try {
    page = await api(`${keysPath(scope)}?${params}`);
  } catch (err) {
    if (load === keyLoad) body.append(el("tr", {}, el("td", { colspan: "8", className: "error" }, describe(err))));
    return;
  }
  if (load !== keyLoad) return;
  if (!cursor) clear(body);
  for (const k of page.items) body.append(keyRow(scope, k));
  if (!cursor && !page.items.length) body.append(el("tr", {}, el("td", { colspan: "8", className: "muted" }, "No keys.")));
  keyCursor = page.next_cursor;
  more.hidden = !keyCursor;
}

async function loadKeys() {
  roleChoices();
  keyCursor = null;
  await loadKeyPage(null);
}

function showKeys(tenant) {
  $("key-scope").value = tenant;
  loadKeys();
  $("key-scope").focus();
}

function askRevoke(scope, key) {
  const dialog = $("revoke-dialog");
  $("revoke-what").textContent = `Revoke key ${key.id} (${key.name}, ${key.role})? Callers using it are refused from now on; console sessions opened with it end.`;
  dialog.dataset.scope = scope;
  dialog.dataset.key = key.id;
  // The spec lets Escape close a dialog without a new returnValue (Chromium clears it, not every
  // browser need): clear the last answer, so an Escape after an earlier "Revoke" revokes
  // nothing. Focus starts on Cancel (autofocus), so Enter does not revoke either.
  dialog.returnValue = "";
  dialog.showModal();
}

$("revoke-dialog").addEventListener("close", async () => {
  const dialog = $("revoke-dialog");
  if (dialog.returnValue !== "confirm") return;
  try {
    await api(`${keysPath(dialog.dataset.scope)}${dialog.dataset.scope === GLOBAL ? "" : "/"}${dialog.dataset.key}`, { method: "DELETE" });
    toast(`Key ${dialog.dataset.key} revoked.`);
  } catch (err) {
    toast(`Not revoked: ${describe(err)}`);
  }
  await loadKeys();
  if (state.role === "operator") await loadAges();
});

$("key-scope").addEventListener("change", loadKeys);
$("key-revoked").addEventListener("change", () => loadKeyPage(null));
$("key-more").addEventListener("click", () => loadKeyPage(keyCursor));

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const scope = $("key-scope").value;
  const name = $("new-key-name").value.trim();
  if (!name) {
    toast("Give the key a name (who or what will use it).");
    $("new-key-name").focus();
    return;
  }
  const expires = $("new-key-expires").value;
  try {
    const issued = await api(keysPath(scope), {
      method: "POST",
      body: { name, role: $("new-key-role").value, expires_at: expires ? new Date(`${expires}T23:59:59`).toISOString() : null },
    });
    $("new-key-name").value = "";
    $("new-key-expires").value = "";
    $("new-secret-value").value = issued.api_key;
    const box = $("new-secret");
    box.hidden = false;
    box.focus();
    await loadKeys();
    if (state.role === "operator") await loadAges();
  } catch (err) {
    toast(`Key not created: ${describe(err)}`);
  }
});

$("copy-secret").addEventListener("click", async () => {
  const input = $("new-secret-value");
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    toast("Copied.");
  } catch (err) {
    toast("Select the key and copy it with your keyboard.");
  }
});
$("dismiss-secret").addEventListener("click", () => {
  $("new-secret-value").value = "";
  $("new-secret").hidden = true;
  $("key-form").querySelector("input").focus();
});

$("tenant-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("new-tenant").value.trim();
  try {
    await api("/admin/v1/tenants/", {
      method: "POST",
      body: { name, display_name: $("new-tenant-display").value.trim() || null },
    });
    $("new-tenant").value = "";
    $("new-tenant-display").value = "";
    toast(`Tenant ${name} created.`);
    await loadTenants();
  } catch (err) {
    toast(`Tenant not created: ${describe(err)}`);
  }
});

async function loadAges() {
  const [keys, data] = await Promise.all([api("/admin/v1/operations/api-keys"), api("/admin/v1/operations/data-keys")]);
  const due = keys.filter((k) => k.rotation_due).length + data.keys.filter((k) => k.rotation_due).length;
  $("rotation-summary").textContent =
    `Rotation period: ${data.rotation_days} days. ${due ? `${due} key${due === 1 ? "" : "s"} due for rotation.` : "No key is due for rotation."}` +
    (data.rows_on_old_kek ? ` ${data.rows_on_old_kek} data keys are still wrapped by an older master key: finish \`appliance crypto-keys rotate-master\`.` : "");
  const badge = (due) => el("span", { className: due ? "badge bad" : "badge ok" }, due ? "rotate" : "ok");
  const ages = clear($("age-rows"));
  for (const k of keys) {
    ages.append(el("tr", {}, el("td", {}, el("code", {}, k.id)), el("td", {}, k.tenant || "— (global)"), el("td", {}, k.role),
      el("td", {}, k.name), el("td", {}, k.age_days.toFixed(1)), el("td", {}, when(k.last_used_at)), el("td", {}, badge(k.rotation_due))));
  }
  const dks = clear($("data-key-rows"));
  for (const k of data.keys.filter((x) => x.state === "active")) {
    dks.append(el("tr", {}, el("td", {}, k.tenant || "— (system)"), el("td", {}, k.purpose), el("td", {}, String(k.version)),
      el("td", {}, k.state), el("td", {}, k.age_days.toFixed(1)), el("td", {}, k.on_current_kek ? "yes" : "no (re-wrap pending)"),
      el("td", {}, String(k.records + k.blobs)), el("td", {}, badge(k.rotation_due))));
  }
}

async function loadModels() {
  const models = await api("/admin/v1/operations/models");
  const body = clear($("model-rows"));
  for (const m of models) {
    body.append(el("tr", {}, el("td", {}, m.name), el("td", {}, m.kind), el("td", {}, m.owner || (m.builtin ? "built-in" : "shared")),
      el("td", {}, m.device), el("td", {}, String(m.version)), el("td", {}, m.builtin ? "shipped" : when(m.created_at))));
  }
}

async function main() {
  const s = await start();
  state.role = s.role;
  if (s.role === "compliance") {
    $("main").prepend(el("p", { className: "notice" }, "Operations are for operators and tenant admins; as a compliance officer you can read keys but not create or revoke them."));
    $("key-form").hidden = true;
  }
  const operator = s.role === "operator";
  for (const node of document.querySelectorAll(".operator-only")) node.hidden = !operator;
  await loadTenants();
  await loadKeys();
  if (operator) await Promise.all([loadHealth(), loadAges(), loadModels()]);
}

main();
