// DOM, token and REST helpers shared by the pages.
// Data reaches the DOM only as text (textContent, text nodes, attribute
// values): nothing here or in the pages parses data as HTML.

const TOKEN_KEY = "measure.token";
const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: el("td", {class: "num", text: 3}, child, "text"). */
export function el(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, same calling convention as el(). */
export function svg(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** Raised for an HTTP error; .status and .message (the API's "error" text). */
export class ApiError extends Error {
  constructor(status, message, details = null) {
    super(message);
    this.status = status;
    this.details = details;  // every error, when the API lists them ("errors")
  }
}

let onAuthFailure = () => {};
export function setAuthFailureHandler(fn) { onAuthFailure = fn; }

/** Call the controller; resolves to the parsed JSON body, rejects with ApiError. */
export async function api(path, { method = "GET", json, yaml } = {}) {
  const headers = {};
  const tok = token.get();
  if (tok) headers.Authorization = `Bearer ${tok}`;
  let body;
  if (yaml !== undefined) {
    headers["Content-Type"] = "application/yaml";
    body = yaml;
  } else if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, body, cache: "no-store" });
  } catch (exc) {
    throw new ApiError(0, `controller unreachable: ${exc.message}`);
  }
  let data = null;
  const text = await resp.text();
  try { data = JSON.parse(text); } catch { data = text; }
  if (!resp.ok) {
    const message = data && typeof data === "object" && "error" in data
      ? String(data.error) : `HTTP ${resp.status}`;
    if (resp.status === 401 || resp.status === 403) onAuthFailure(message);
    const details = data && typeof data === "object" && Array.isArray(data.errors) ? data.errors.map(String) : null;
    throw new ApiError(resp.status, message, details);
  }
  return data;
}

/** Run fn now and every `ms` until the returned stop function is called. */
export function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const loop = async () => {
    if (stopped) return;
    try { await fn(); } catch (exc) { showStatus(exc.message, true); }
    if (!stopped) timer = setTimeout(loop, ms);
  };
  loop();
  return () => { stopped = true; clearTimeout(timer); };
}

export function showStatus(message, isError = false) {
  const node = document.getElementById("status");
  node.textContent = message || "";
  node.classList.toggle("error", Boolean(isError));
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

export function fmtTime(seconds) {
  if (typeof seconds !== "number") return "-";
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

export function fmtNum(value) {
  if (typeof value !== "number") return value === undefined || value === null ? "-" : String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  return value.toLocaleString("en-US", { maximumFractionDigits: 3 });
}

/** A table: headers and rows of cells (strings, numbers or nodes). */
export function table(headers, rows, attrs = {}) {
  return el("table", attrs,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.map((row) => el("tr", row.attrs || {},
      (row.cells || row).map((c) => (c instanceof Node ? el("td", {}, c)
        : el("td", { class: typeof c === "number" ? "num" : null, text: typeof c === "number" ? fmtNum(c) : (c ?? "-") })))))));
}

/** Query parameters of the hash route (#/task/3?focus=k). */
export function hashParams() {
  const [, query = ""] = location.hash.split("?");
  return new URLSearchParams(query);
}

export function setHashParam(name, value) {
  const [route] = location.hash.split("?");
  const params = hashParams();
  if (value === null || value === undefined) params.delete(name);
  else params.set(name, value);
  const query = params.toString();
  history.replaceState(null, "", query ? `${route}?${query}` : route);
}

/** A number with an SI prefix and its unit: fmtSI(2050000, "bit/s") -> "2.05 Mbit/s". */
export function fmtSI(value, unit = "") {
  if (typeof value !== "number" || !Number.isFinite(value)) return "-";
  const steps = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  const [factor, prefix] = steps.find(([f]) => Math.abs(value) >= f) || [1, ""];
  const n = value / factor;
  const text = Math.abs(n) >= 100 || Number.isInteger(n) ? String(Math.round(n)) : n.toPrecision(3).replace(/\.?0+$/, "");
  return `${text} ${prefix}${unit}`.trim();
}
