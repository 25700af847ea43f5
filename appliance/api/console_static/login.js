// Sign-in: exchange an API key for a session cookie, then go to the page that sent us here.
const PAGES = ["policies", "audit", "budgets", "operations"];
const NOTICES = {
  expired: "Your session ended (idle or too old). Sign in again to continue.",
  "signed-out": "You are signed out.",
};

const form = document.getElementById("login-form");
const input = document.getElementById("api-key");
const error = document.getElementById("login-error");
const params = new URLSearchParams(window.location.search);
const notice = NOTICES[params.get("reason")];
if (notice) {
  const box = document.getElementById("login-notice");
  box.textContent = notice;
  box.hidden = false;
}
input.focus();

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  input.removeAttribute("aria-invalid");
  const key = input.value.trim();
  if (!key) {
    error.textContent = "Enter an API key.";
    input.setAttribute("aria-invalid", "true");
    return;
  }
  const button = document.getElementById("sign-in");
  button.disabled = true;
  try {
    const r = await fetch("/console/api/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ api_key: key }),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      error.textContent =
        r.status === 403 ? "This key may not use the console (app keys cannot sign in)." : body.detail || "Sign-in failed.";
      input.setAttribute("aria-invalid", "true");
      input.select();
      return;
    }
    input.value = "";
    const next = params.get("next");
    const home = body.role === "operator" ? "operations" : "policies";
    window.location.assign(`/console/${PAGES.includes(next) ? next : home}`);
  } catch (err) {
    error.textContent = "The appliance could not be reached.";
  } finally {
    button.disabled = false;
  }
});
