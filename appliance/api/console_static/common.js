// Shared by every console page: the session, API calls with the CSRF token, small DOM helpers.
// No framework and no inline script (the Content-Security-Policy forbids both).

const PAGES = ["policies", "audit", "budgets", "operations"];
let current = null;
let idleTimer = null;

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `request failed (${status})`);
    this.status = status;
    this.body = body || {};
  }
}

function toLogin(reason) {
  const page = document.body.dataset.page;
  const params = new URLSearchParams();
  if (PAGES.includes(page)) params.set("next", page);
  if (reason) params.set("reason", reason);
  window.location.assign(`/console/login?${params}`);
}

function armIdleTimer() {
  if (!current) return;
  clearTimeout(idleTimer);
  // A little after the server would end the session: ask it, and leave if it says so.
  idleTimer = setTimeout(async () => {
    try {
      await loadSession();
      armIdleTimer();
    } catch (err) {
      toLogin("expired");
    }
  }, (current.idle_timeout_s + 5) * 1000);
}

async function loadSession() {
  const r = await fetch("/console/api/session", { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!r.ok) throw new ApiError(r.status, null);
  current = await r.json();
  return current;
}

/** Call the appliance API with the session cookie; state changes carry the CSRF token. */
export async function api(path, { method = "GET", body, raw = false } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = current ? current.csrf_token : "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401 && current) {
    toLogin("expired");
    throw new ApiError(401, { detail: "the session has ended; sign in again" });
  }
  armIdleTimer();
  if (!r.ok) {
    let problem = null;
    try {
      problem = await r.json();
    } catch (err) {
      problem = null;
    }
    throw new ApiError(r.status, problem);
  }
  if (raw) return r;
  const type = r.headers.get("content-type") || "";
  return type.includes("json") ? r.json() : r.text();
}

/** Every item of a paged listing ({items, next_cursor}), page after page of the largest size. */
export async function apiEvery(path) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${sep}limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

/** Start a signed-in page: load the session (or go to sign-in), fill the header, return the session. */
export async function start() {
  try {
    await loadSession();
  } catch (err) {
    toLogin();
    throw err;
  }
  const nav = document.getElementById("nav");
  for (const link of nav.querySelectorAll("a")) {
    const allowed = link.dataset.roles;
    if (allowed && !allowed.split(" ").includes(current.role)) link.hidden = true;
    if (link.dataset.nav === document.body.dataset.page) link.setAttribute("aria-current", "page");
  }
  nav.hidden = false;
  const label = current.tenant ? `${current.role} · tenant ${current.tenant}` : current.role;
  document.getElementById("who-label").textContent = `Signed in as ${label}`;
  document.getElementById("who").hidden = false;
  document.getElementById("sign-out").addEventListener("click", signOut);
  armIdleTimer();
  return current;
}

export function session() {
  return current;
}

async function signOut() {
  try {
    await api("/console/api/session", { method: "DELETE" });
  } finally {
    current = null;
    window.location.assign("/console/login?reason=signed-out");
  }
}

/** Build an element: el("td", {className: "x"}, "text", child). Text is always set as text. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2).toLowerCase(), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else if (key === "className" || key === "textContent" || key === "value") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

export function when(value) {
  if (!value) return "—";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString();
}

export function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.add("shown");
  clearTimeout(box._timer);
  box._timer = setTimeout(() => box.classList.remove("shown"), 6000);
}

/** A readable message for a failed call, naming each field of a problem+json body. */
export function describe(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  const extra = (err.body.errors || [])
    .map((e) => [e.field, e.message].filter(Boolean).join(": "))
    .filter(Boolean);
  return extra.length && !err.message.includes(extra[0]) ? `${err.message} (${extra.join("; ")})` : err.message;
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Fill a <select> with the tenants this session may see; returns their names. */
export async function fillTenants(select, { allOption = null } = {}) {
  const tenants = await api("/admin/v1/tenants/");
  const keep = allOption ? [...select.options].filter((o) => o.value === "") : [];
  clear(select).append(...keep);
  for (const t of tenants) select.append(el("option", { value: t.name }, t.display_name === t.name ? t.name : `${t.name} (${t.display_name})`));
  return tenants.map((t) => t.name);
}
