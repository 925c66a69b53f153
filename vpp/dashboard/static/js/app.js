// Sign-in and the role's view. The token stays in this tab's session storage and goes only to this service.

import { Api, ApiError } from "./api.js";
import { renderAdmin } from "./admin.js";
import { renderEnterprise } from "./enterprise.js";
import { renderGrid } from "./grid.js";
import { fill, h } from "./util.js";

const TOKEN_KEY = "vpp.token";

const loginSection = document.getElementById("login");
const loginForm = document.getElementById("login-form");
const tokenInput = document.getElementById("token");
const tokenError = document.getElementById("token-error");
const view = document.getElementById("view");
const who = document.getElementById("who");
const logout = document.getElementById("logout");
let stopView = null;

async function start(token) {
  const api = new Api(token);
  const me = await api.get("/api/v1/whoami");
  sessionStorage.setItem(TOKEN_KEY, token);
  loginSection.hidden = true;
  logout.hidden = false;
  who.hidden = false;
  fill(who, h("span", { class: `role ${me.role}`, id: "role" }, me.role), me.enterprise_id ? ` ${me.enterprise_id}` : "");
  document.body.dataset.role = me.role;
  document.title = `VPP park · ${me.role}${me.enterprise_id ? ` ${me.enterprise_id}` : ""}`;
  if (me.role === "admin") stopView = renderAdmin(view, api);
  else if (me.role === "grid") stopView = renderGrid(view, api);
  else stopView = await renderEnterprise(view, api, me.enterprise_id);
  document.body.dataset.ready = "true";
}

function signOut() {
  if (stopView) stopView();
  stopView = null;
  sessionStorage.removeItem(TOKEN_KEY);
  fill(view);
  fill(who);
  who.hidden = true;
  logout.hidden = true;
  loginSection.hidden = false;
  delete document.body.dataset.role;
  delete document.body.dataset.ready;
  document.title = "VPP park";
  tokenInput.value = "";
  tokenInput.focus();
}

loginForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  tokenError.textContent = "";
  const token = tokenInput.value.trim();
  if (!token) {
    tokenError.textContent = "paste a token (it starts with vpp_)";
    return;
  }
  try {
    await start(token);
  } catch (err) {
    tokenError.textContent = err instanceof ApiError && err.status === 401 ? `not accepted: ${err.message}` : err.message;
  }
});
logout.addEventListener("click", signOut);

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) start(saved).catch(signOut);
