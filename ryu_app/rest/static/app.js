// The dashboard's entry point: asks for the token once (kept in
// sessionStorage), then routes #/network, #/tasks, #/task/ID, #/events, #/paths.

import * as events from "./events.js";
import * as network from "./network.js";
import * as paths from "./paths.js";
import * as task from "./task.js";
import * as tasks from "./tasks.js";
import { api, setAuthFailureHandler, showStatus, token } from "./util.js";

const main = document.getElementById("main");
const login = document.getElementById("login");
let unmount = () => {};

function route() {
  unmount();
  main.replaceChildren();
  showStatus("");
  const [path] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("nav a")) a.classList.remove("active");
  if (parts[0] === "task" && parts[1]) {
    document.getElementById("nav-tasks").classList.add("active");
    unmount = task.mount(main, decodeURIComponent(parts[1]));
  } else if (parts[0] === "tasks") {
    document.getElementById("nav-tasks").classList.add("active");
    unmount = tasks.mount(main);
  } else if (parts[0] === "paths") {
    document.getElementById("nav-paths").classList.add("active");
    unmount = paths.mount(main);
  } else if (parts[0] === "events") {
    document.getElementById("nav-events").classList.add("active");
    unmount = events.mount(main);
  } else {
    document.getElementById("nav-network").classList.add("active");
    unmount = network.mount(main);
  }
}

function askToken(message) {
  unmount();
  unmount = () => {};
  main.replaceChildren();
  main.hidden = true;
  login.hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").focus();
}

async function start() {
  login.hidden = true;
  main.hidden = false;
  document.getElementById("logout").hidden = !token.get();
  route();
}

setAuthFailureHandler((message) => {
  token.clear();
  askToken(`refused: ${message}`);
});

document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const value = document.getElementById("token").value.trim();
  if (!value) return;
  token.set(value);
  try {
    await api("/measure/v1/tasks");
    document.getElementById("token").value = "";
    start();
  } catch {
    // the auth failure handler has shown the API's message
  }
});

document.getElementById("logout").addEventListener("click", () => {
  token.clear();
  askToken("");
});

window.addEventListener("hashchange", () => { if (login.hidden) route(); });

(async () => {
  try {
    await api("/measure/v1/tasks");  // with the stored token, or none when reads are open
    start();
  } catch (exc) {
    if (exc.status !== 401 && exc.status !== 403) askToken(exc.message);
  }
})();
