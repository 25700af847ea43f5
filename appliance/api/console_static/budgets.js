// Privacy budgets and fine-tuning jobs. This build serves no fine-tuning API: the page says so.
import { fillTenants, start } from "./common.js";

const $ = (id) => document.getElementById(id);

async function main() {
  const s = await start();
  await fillTenants($("tenant"));
  const available = s.features.privacy_budgets || s.features.fine_tuning;
  $("unavailable").hidden = available;
  $("budget").hidden = true;
  $("jobs").hidden = true;
}

main();
