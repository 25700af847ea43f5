// Audit: a filtered, paginated table of the trail; entry detail; verify the chain; export.
import { api, clear, describe, el, fillTenants, start, toast, when } from "./common.js";

const $ = (id) => document.getElementById(id);
const state = { cursors: [null], page: 0, next: null, tenants: {} };

function iso(localValue) {
  return localValue ? new Date(localValue).toISOString() : null;
}

function query(cursor) {
  const params = new URLSearchParams();
  const add = (key, value) => value && params.set(key, value);
  add("since", iso($("f-since").value));
  add("until", iso($("f-until").value));
  add("tenant", $("f-tenant").value);
  add("actor", $("f-actor").value.trim());
  add("action", $("f-action").value.trim());
  add("outcome", $("f-outcome").value.trim());
  params.set("limit", $("f-limit").value);
  if (cursor) params.set("cursor", cursor);
  return params;
}

async function load() {
  const body = clear($("audit-rows"));
  let page;
  try {
    page = await api(`/admin/v1/audit/?${query(state.cursors[state.page])}`);
  } catch (err) {
    body.append(el("tr", {}, el("td", { colspan: "8", className: "error" }, describe(err))));
    return;
  }
  state.next = page.next_cursor;
  for (const e of page.items) {
    body.append(el("tr", { dataset: { id: String(e.id) } },
      el("td", {}, String(e.id)),
      el("td", {}, when(e.created_at)),
      el("td", {}, state.tenants[e.tenant_id] || e.tenant_id || "—"),
      el("td", {}, el("code", {}, e.actor)),
      el("td", {}, e.action),
      el("td", {}, e.object || "—"),
      el("td", { className: `outcome-${e.outcome}` }, e.outcome),
      el("td", {}, el("button", { type: "button", className: "secondary", onclick: () => detail(e.id) }, `Entry ${e.id}`))));
  }
  $("audit-empty").hidden = page.items.length > 0;
  $("page-label").textContent = `Page ${state.page + 1}${page.items.length ? ` · ${page.items.length} entries` : ""}`;
  $("prev-page").disabled = state.page === 0;
  $("next-page").disabled = !state.next;
}

async function detail(id) {
  let e;
  try {
    e = await api(`/admin/v1/audit/${id}`);
  } catch (err) {
    toast(describe(err));
    return;
  }
  const dl = clear($("detail-fields"));
  const row = (name, value) => dl.append(el("dt", {}, name), el("dd", {}, value));
  row("Id", String(e.id));
  row("Time", when(e.created_at));
  row("Tenant", state.tenants[e.tenant_id] || e.tenant_id || "— (no tenant)");
  row("Actor", e.actor);
  row("Action", e.action);
  row("Object", e.object || "—");
  row("Policy version", e.policy_version === null ? "—" : String(e.policy_version));
  row("Outcome", e.outcome);
  row("Latency", e.latency_ms === null ? "—" : `${e.latency_ms} ms`);
  row("Facts", el("pre", { className: "code" }, JSON.stringify(e.facts, null, 2)));
  row("Payload kept", e.has_payload ? `yes, sealed, until ${when(e.payload_expires_at)}` : "no");
  $("detail-title").textContent = `Entry ${e.id}`;
  const section = $("entry-detail");
  section.hidden = false;
  section.focus();
}

$("audit-filters").addEventListener("submit", (event) => {
  event.preventDefault();
  state.cursors = [null];
  state.page = 0;
  load();
});
$("audit-filters").addEventListener("reset", () => {
  setTimeout(() => {
    state.cursors = [null];
    state.page = 0;
    load();
  });
});
$("next-page").addEventListener("click", () => {
  if (!state.next) return;
  state.cursors[state.page + 1] = state.next;
  state.page += 1;
  load();
});
$("prev-page").addEventListener("click", () => {
  if (state.page === 0) return;
  state.page -= 1;
  load();
});

$("verify-chain").addEventListener("click", async () => {
  const out = $("verify-result");
  out.className = "";
  out.textContent = "Verifying the whole chain…";
  try {
    const r = await api("/admin/v1/audit/verify");
    out.className = r.ok ? "ok" : "bad";
    out.textContent = r.ok
      ? `Chain intact: ${r.entries_checked} entries and ${r.checkpoints_checked} checkpoints verified.`
      : `Chain broken: ${r.detail}${r.entry_id ? ` (entry ${r.entry_id})` : ""}.`;
  } catch (err) {
    out.className = "bad";
    out.textContent = describe(err);
  }
});

$("export-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const format = $("export-format").value;
  try {
    const r = await api("/admin/v1/audit/export", {
      method: "POST",
      raw: true,
      body: { format, since: iso($("f-since").value), until: iso($("f-until").value) },
    });
    const blob = await r.blob();
    const name = (/filename="([^"]+)"/.exec(r.headers.get("content-disposition") || "") || [])[1] || `audit.${format}`;
    const link = el("a", { href: URL.createObjectURL(blob), download: name });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    toast(`Exported ${name}. Verify it offline with \`appliance audit verify-export\`.`);
  } catch (err) {
    toast(`Export failed: ${describe(err)}`);
  }
});

async function main() {
  const s = await start();
  $("chain-tools").hidden = s.role === "tenant_admin";
  const tenants = await api("/admin/v1/tenants/");
  for (const t of tenants) state.tenants[t.id] = t.name;
  await fillTenants($("f-tenant"), { allOption: true });
  await load();
}

main();
