// Privacy budgets and fine-tuning jobs, from the fine-tuning API when this build serves it:
// epsilon spent against the tenant's cap over time (a chart and the numbers beside it), per
// dataset, and each job with its progress. Without that API the page says so.
import { api, apiEvery, clear, describe, el, fillTenants, start, when } from "./common.js";

const $ = (id) => document.getElementById(id);
const W = 720;
const H = 220;
const PAD = { left: 48, right: 16, top: 16, bottom: 32 };
let features = {};

function fmt(x) {
  return Number(x).toFixed(2);
}

/** The charges behind the summary's figures, as the ledger counts them (services/privacy_budget):
 * spent is every finished job charged since the period start; reserved is every unfinished job's
 * whole plan, whenever it was queued (the budget holds it until the job settles). Charges from
 * before the period are left out: they no longer count against the cap. */
function series(report) {
  const start = new Date(report.period_start).getTime();
  const at = (c) => new Date(c.charged_at).getTime();
  const byTime = (a, b) => at(a) - at(b);
  const spent = report.charges.filter((c) => c.settled && at(c) >= start).sort(byTime);
  const reserved = report.charges.filter((c) => !c.settled).sort(byTime);
  const sum = (list) => list.reduce((total, c) => total + c.epsilon, 0);
  return { start, at, spent, reserved, spentTotal: sum(spent), reservedTotal: sum(reserved) };
}

function close(a, b) {
  return Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(a), Math.abs(b));
}

/** A step line of cumulative epsilon: ``steps`` is [time, amount] in time order, from ``base``. */
function stepPath(steps, base, x, y, start, end) {
  let total = base;
  let path = `M${x(start).toFixed(1)},${y(total).toFixed(1)}`;
  for (const [t, amount] of steps) {
    path += ` H${x(t).toFixed(1)}`;
    total += amount;
    path += ` V${y(total).toFixed(1)}`;
  }
  return `${path} H${x(end).toFixed(1)}`;
}

/** Two step lines over the period: spent (finished jobs) and spent plus reserved (running and
 * queued jobs on top), with the cap as a line and a legend in numbers. Only numbers and dates
 * formatted here go into the markup: nothing a tenant wrote. */
function chart(report) {
  const box = clear($("budget-chart"));
  const s = series(report);
  // The time axis runs from a little before the period's first plotted charge (the period
  // start when there is none: a year-long axis would squash a day's jobs into one pixel) to now.
  const times = [...s.spent.map(s.at), ...s.reserved.map((c) => Math.max(s.at(c), s.start))];
  const end = Math.max(Date.now(), ...times);
  const first = times.length ? Math.min(...times) : s.start;
  const start = Math.min(Math.max(s.start, first - Math.max((end - first) * 0.05, 60_000)), end - 1);
  const day = (t) => (end - start < 2 * 86_400_000 ? new Date(t).toLocaleString() : new Date(t).toLocaleDateString());
  const top = Math.max(report.total_limit, s.spentTotal + s.reservedTotal) * 1.1 || 1;
  const x = (t) => PAD.left + ((Math.max(t, start) - start) / Math.max(1, end - start)) * (W - PAD.left - PAD.right);
  const y = (e) => H - PAD.bottom - (e / top) * (H - PAD.top - PAD.bottom);
  const spentSteps = s.spent.map((c) => [s.at(c), c.epsilon]);
  // Reservations stack on what was spent by then; one queued before the period counts from its start.
  const both = [...spentSteps, ...s.reserved.map((c) => [Math.max(s.at(c), start), c.epsilon])].sort((a, b) => a[0] - b[0]);
  const cap = y(report.total_limit).toFixed(1);
  const label = (text, px, py, anchor = "start") =>
    `<text x="${px}" y="${py}" text-anchor="${anchor}" class="chart-label">${text}</text>`;
  const tpl = document.createElement("template");
  tpl.innerHTML =
    `<svg viewBox="0 0 ${W} ${H}" width="100%" aria-hidden="true" focusable="false">` +
    `<line x1="${PAD.left}" y1="${H - PAD.bottom}" x2="${W - PAD.right}" y2="${H - PAD.bottom}" class="chart-axis"></line>` +
    `<line x1="${PAD.left}" y1="${PAD.top}" x2="${PAD.left}" y2="${H - PAD.bottom}" class="chart-axis"></line>` +
    `<line x1="${PAD.left}" y1="${cap}" x2="${W - PAD.right}" y2="${cap}" class="chart-cap"></line>` +
    label(`cap ${fmt(report.total_limit)}`, W - PAD.right, Number(cap) - 4, "end") +
    (s.reserved.length ? `<path d="${stepPath(both, 0, x, y, start, end)}" class="chart-reserved"></path>` : "") +
    `<path d="${stepPath(spentSteps, 0, x, y, start, end)}" class="chart-spent"></path>` +
    label("0", PAD.left - 6, H - PAD.bottom + 4, "end") +
    label(fmt(top), PAD.left - 6, PAD.top + 4, "end") +
    label(day(start), PAD.left, H - 8) +
    label(day(end), W - PAD.right, H - 8, "end") +
    `</svg>`;
  box.append(tpl.content);
  const legend = clear($("budget-legend"));
  const item = (cls, text, value, id) =>
    el("li", {}, el("span", { className: `swatch ${cls}`, "aria-hidden": "true" }), `${text}: `, el("strong", { id }, fmt(value)));
  legend.append(
    item("swatch-spent", `Spent by ${s.spent.length} finished job${s.spent.length === 1 ? "" : "s"} this period`, s.spentTotal, "chart-spent-total"),
    item("swatch-reserved", `Reserved by ${s.reserved.length} running or queued job${s.reserved.length === 1 ? "" : "s"}`, s.reservedTotal, "chart-reserved-total"),
    item("swatch-cap", "Cap", report.total_limit, "chart-cap-total"),
  );
  // The chart is drawn from the charges, the summary from the ledger's totals: say so if they part.
  const agrees = close(s.spentTotal, report.total_spent) && close(s.reservedTotal, report.total_reserved);
  $("budget-mismatch").hidden = agrees;
}

async function loadBudget(tenant) {
  const report = await api(`/admin/v1/tenants/${encodeURIComponent(tenant)}/privacy-budget/`);
  $("budget-summary").textContent =
    `Epsilon spent in the period since ${when(report.period_start)} (${report.period_days} days): ` +
    `${fmt(report.total_spent)} of ${fmt(report.total_limit)}` +
    (report.total_reserved ? `, ${fmt(report.total_reserved)} reserved by running jobs` : "") +
    `; ${fmt(report.total_remaining)} left. Each dataset may spend at most ${fmt(report.per_dataset_limit)} (δ = ${report.delta}).`;
  chart(report);
  const rows = clear($("budget-rows"));
  for (const d of report.datasets) {
    rows.append(el("tr", {}, el("td", {}, d.name || `${d.dataset_id} (deleted)`), el("td", {}, String(d.jobs)),
      el("td", {}, fmt(d.epsilon_spent)), el("td", {}, fmt(d.epsilon_reserved)), el("td", {}, fmt(d.limit)), el("td", {}, fmt(d.remaining))));
  }
  if (!report.datasets.length) rows.append(el("tr", {}, el("td", { colspan: "6", className: "muted" }, "No dataset has spent any budget.")));
  $("budget").hidden = false;
}

async function loadJobs(tenant) {
  const jobs = await apiEvery(`/admin/v1/tenants/${encodeURIComponent(tenant)}/finetune/jobs/`);
  const rows = clear($("job-rows"));
  for (const j of jobs) {
    const total = Math.max(1, j.total_steps || j.planned_steps || 1);
    const progress = el("progress", { max: String(total), value: String(Math.min(j.step, total)), "aria-label": `Job ${j.id} progress` });
    const pct = `${Math.round((100 * Math.min(j.step, total)) / total)}%`;
    rows.append(el("tr", { dataset: { job: j.id } }, el("td", {}, el("code", {}, j.id)), el("td", {}, j.output_model), el("td", {}, j.base_model),
      el("td", {}, j.error ? `${j.state}: ${j.error}` : j.state),
      el("td", {}, progress, ` ${pct}${j.eta_s ? ` · about ${Math.ceil(j.eta_s / 60)} min left` : ""}`),
      el("td", {}, `${fmt(j.epsilon_spent)} / ${fmt(j.target_epsilon)}`), el("td", {}, when(j.created_at))));
  }
  $("jobs-empty").hidden = jobs.length > 0;
  $("jobs").hidden = false;
}

async function load() {
  const tenant = $("tenant").value;
  if (!tenant) return;
  const button = $("refresh");
  button.disabled = true;
  try {
    if (features.privacy_budgets) await loadBudget(tenant);
    if (features.fine_tuning) await loadJobs(tenant);
    $("jobs-updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    $("budget-summary").textContent = describe(err);
    $("budget").hidden = false;
  } finally {
    button.disabled = false;
  }
}

async function main() {
  const s = await start();
  features = s.features;
  await fillTenants($("tenant"));
  $("tenant").addEventListener("change", load);
  // On request only: polling would count as activity and keep an unattended session alive.
  $("refresh").addEventListener("click", load);
  const available = features.privacy_budgets || features.fine_tuning;
  $("unavailable").hidden = available;
  if (available) await load();
}

main();
