// Generic rendering of one result: every section of a result is drawn by
// its shape, not by its task kind, so a kind added later is shown too.
//
//   {key: number, ...}           -> table + bar chart (heavy hitters, scanners, ...)
//   [[key, number], ...]          -> table + bar chart (top k)
//   {key: {field: value}, ...}    -> table, one row per key (scan details)
//   number / string / boolean     -> a line in the summary list
//   anything else                 -> its JSON, as text
//
// Fields about time and coverage are shown by the page itself (META).

import { barChart } from "./chart.js";
import { el, fmtNum, fmtTime, table } from "./util.js";

export const META = new Set(["task_id", "host", "kind", "covered", "missing", "complete",
  "oldest", "age", "interval_end", "received_at", "generated_at", "epoch", "per_host"]);
const TITLES = { heavy_hitters: "Heavy hitters", top_k: "Top k", scanners: "Port scans (source: ports)",
  scan: "Scan details", distinct: "Distinct keys", window: "Window", sketch: "Sketch" };
const MAX_ROWS = 50;

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const isScalar = (v) => v === null || ["number", "string", "boolean"].includes(typeof v);

function title(name) {
  return TITLES[name] || name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

/** [[key, number]] of a mapping or pair list, or null when it is neither. */
export function numericPairs(value) {
  if (Array.isArray(value)) {
    if (value.every((p) => Array.isArray(p) && p.length === 2 && isNum(p[1]))) {
      return value.map(([k, v]) => [String(k), v]);
    }
    return null;
  }
  if (value && typeof value === "object") {
    const entries = Object.entries(value);
    if (entries.length && entries.every(([, v]) => isNum(v))) return entries;
  }
  return null;
}

function text(value) {
  if (isScalar(value)) return value === null ? "-" : (isNum(value) ? fmtNum(value) : String(value));
  return JSON.stringify(value);
}

function pairsSection(name, pairs, keyName) {
  const sorted = [...pairs].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const shown = sorted.slice(0, MAX_ROWS);
  return el("section", { class: "result-section", "data-field": name },
    el("h3", { text: `${title(name)} (${pairs.length})` }),
    el("div", { class: "pair-view" },
      table([String(keyName || "key").toUpperCase(), "VALUE"], shown.map(([k, v]) => ({ attrs: { "data-key": k }, cells: [k, v] })),
        { class: "pairs" }),
      barChart(shown.slice(0, 15))));
}

function objectSection(name, value) {
  const rows = Object.entries(value);
  const columns = [...new Set(rows.flatMap(([, v]) => Object.keys(v)))].slice(0, 8);
  return el("section", { class: "result-section", "data-field": name },
    el("h3", { text: `${title(name)} (${rows.length})` }),
    table(["KEY", ...columns.map((c) => c.toUpperCase())],
      rows.slice(0, MAX_ROWS).map(([k, v]) => [k, ...columns.map((c) => text(v[c]))])));
}

/** The sections of one result, as DOM nodes. */
export function renderSections(result) {
  const facts = [];
  const sections = [];
  for (const [name, value] of Object.entries(result)) {
    if (META.has(name)) continue;
    const pairs = numericPairs(value);
    if (isScalar(value)) {
      facts.push([name, text(value)]);
    } else if (pairs) {
      if (["heavy_hitters", "top_k", "scanners"].includes(name) || pairs.length > 4) {
        sections.push(pairsSection(name, pairs, result.key));
      } else {
        facts.push([name, pairs.map(([k, v]) => `${k} ${fmtNum(v)}`).join(", ")]);
      }
    } else if (value && typeof value === "object" && !Array.isArray(value)
      && Object.values(value).length && Object.values(value).every((v) => v && typeof v === "object" && !Array.isArray(v))) {
      sections.push(objectSection(name, value));
    } else if (value && typeof value === "object" && !Array.isArray(value) && Object.values(value).every(isScalar)) {
      facts.push([name, Object.entries(value).map(([k, v]) => `${k} ${text(v)}`).join(", ") || "-"]);
    } else if (Array.isArray(value) && value.length === 0) {
      facts.push([name, "none"]);
    } else {
      sections.push(el("section", { class: "result-section", "data-field": name },
        el("h3", { text: title(name) }), el("pre", { class: "json", text: JSON.stringify(value, null, 2) })));
    }
  }
  const list = el("dl", { class: "facts" }, facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  return [list, ...sections];
}

/** Coverage of one result: covered and missing agents, age, completeness. */
export function renderCoverage(result) {
  const covered = result.covered || [];
  const missing = result.missing || [];
  return el("div", { id: "coverage", class: result.complete === false ? "incomplete" : "complete" },
    el("p", {}, `interval ending ${fmtTime(result.interval_end)}, age ${fmtNum(result.age)} s, `,
      el("strong", { text: result.complete === false ? "incomplete" : "complete" })),
    el("p", {}, `covered ${covered.length}: `, el("span", { id: "covered", text: covered.join(", ") || "-" })),
    el("p", {}, `missing ${missing.length}: `, el("span", { id: "missing", class: missing.length ? "error" : "", text: missing.join(", ") || "none" })));
}
