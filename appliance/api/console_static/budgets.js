// Privacy budgets and fine-tuning jobs, from the fine-tuning API when this build serves it:
// epsilon spent against the tenant's cap over time (a chart and the numbers beside it), per
// dataset, and each job with its progress. Without that API the page says so.
import { api, clear, describe, el, fillTenants, start, when } from "./common.js";

const $ = (id) => document.getElementById(id);
const W = 720;
const H = 220;
const PAD = { left: 48, right: 16, top: 16, bottom: 32 };
let features = {};

function fmt(x) {
  return Number(x).toFixed(2);
}

/** A step chart of cumulative epsilon over time with the cap as a line. Only numbers and
 * dates formatted here go into the markup: nothing a tenant wrote. */
function chart(report) {
  const box = clear($("budget-chart"));
  const charges = [...report.charges].sort((a, b) => new Date(a.charged_at) - new Date(b.charged_at));
  const start = new Date(report.period_start).getTime();
  const end = Math.max(Date.now(), ...charges.map((c) => new Date(c.charged_at).getTime()));
  const top = Math.max(report.total_limit, report.total_spent + report.total_reserved) * 1.1 || 1;
  const x = (t) => PAD.left + ((t - start) / Math.max(1, end - start)) * (W - PAD.left - PAD.right);
  const y = (e) => H - PAD.bottom - (e / top) * (H - PAD.top - PAD.bottom);
  let total = 0;
  let path = `M${x(start).toFixed(1)},${y(0).toFixed(1)}`;
  for (const c of charges) {
    const t = new Date(c.charged_at).getTime();
    path += ` H${x(t).toFixed(1)}`;
    total += c.epsilon;
    path += ` V${y(total).toFixed(1)}`;
  }
  path += ` H${x(end).toFixed(1)}`;
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
    `<path d="${path}" class="chart-spent"></path>` +
    label("0", PAD.left - 6, H - PAD.bottom + 4, "end") +
    label(fmt(top), PAD.left - 6, PAD.top + 4, "end") +
    label(new Date(start).toLocaleDateString(), PAD.left, H - 8) +
    label(new Date(end).toLocaleDateString(), W - PAD.right, H - 8, "end") +
    `</svg>`;
  box.append(tpl.content);
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
  const jobs = await api(`/admin/v1/tenants/${encodeURIComponent(tenant)}/finetune/jobs/`);
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
  try {
    if (features.privacy_budgets) await loadBudget(tenant);
    if (features.fine_tuning) await loadJobs(tenant);
  } catch (err) {
    $("budget-summary").textContent = describe(err);
    $("budget").hidden = false;
  }
}

async function main() {
  const s = await start();
  features = s.features;
  await fillTenants($("tenant"));
  $("tenant").addEventListener("change", load);
  const available = features.privacy_budgets || features.fine_tuning;
  $("unavailable").hidden = available;
  if (available) await load();
}

main();
