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
import { el, fmtNum, fmtSI, fmtTime, table } from "./util.js";

// "limits" and "sketch" are the engine's internal settings, not measured data: never
// shown as data.
export const META = new Set(["task_id", "host", "kind", "covered", "missing", "complete",
  "covered_count", "missing_count",
  "oldest", "age", "interval_end", "received_at", "generated_at", "epoch", "per_host",
  "limits", "sketch", "carried", "coverage_changed"]);
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

function pairsSection(name, pairs, keyName, heading = null) {
  const sorted = [...pairs].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const shown = sorted.slice(0, MAX_ROWS);
  return el("section", { class: "result-section", "data-field": name },
    el("h3", { text: heading || `${title(name)} (${pairs.length})` }),
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

const section = (name, heading, ...body) => el("section", { class: "result-section", "data-field": name },
  el("h3", { text: heading }), ...body);
const unitOf = (result) => (result.increment === "bytes" ? "B" : "pkt");

/** The last interval's rates: the answer to "what is happening now". */
function rateView(result) {
  const rate = result.rate;
  const out = [section("rate", `Now: last ${fmtNum(rate.seconds)} s interval${result.complete === false ? " (partial: agents missing)" : ""}`,
    el("dl", { class: "facts" }, [["bit rate", fmtSI(rate.bps, "bit/s")], ["packet rate", fmtSI(rate.pps, "pkt/s")],
      ["bytes", fmtSI(rate.bytes, "B")], ["packets", fmtSI(rate.packets, "pkt")]]
      .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])))];
  const keys = Object.entries(rate.keys || {});
  if (keys.length && result.kind !== "flows") {  // a flows task's table has each flow's rate
    const heavy = rate.heavy_hitters || {};
    const by = keys.some(([, v]) => v.bps !== null) ? "bps" : "pps";
    const unit = by === "bps" ? "bit/s" : "pkt/s";
    out.push(section("rate.keys", `Keys now (${keys.length}), by ${unit}`,
      el("div", { class: "pair-view" },
        table([String(result.key || "key").toUpperCase(), "RATE", "HEAVY NOW"],
          keys.map(([k, v]) => ({ attrs: { "data-key": k }, cells: [k, fmtSI(v[by], unit), k in heavy ? "yes" : ""] })),
          { class: "pairs" }),
        barChart(keys.slice(0, 15).map(([k, v]) => [k, v[by] || 0]), { unit }))));
  }
  return out;
}

/** "1 h 2 min", "3 min 5 s", "12.5 s" */
export function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "-";
  if (seconds < 60) return `${Number(seconds.toPrecision(3))} s`;
  const whole = Math.floor(seconds);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

/** "h1 -> h5" for a key whose first two parts are agents' addresses. */
function hostsOf(key, names) {
  const hosts = String(key).split(",").slice(0, 2).map((part) => names[part] || "");
  return hosts.some(Boolean) ? hosts.map((h) => h || "?").join(" -> ") : "-";
}

function keyRate(r, k) {
  const v = r.rate?.keys?.[k];
  if (!v) return "-";
  return v.bps !== null && v.bps !== undefined ? fmtSI(v.bps, "bit/s") : fmtSI(v.pps, "pkt/s");
}

const bounds = (a, digits = 3) => (typeof a?.lower === "number" && typeof a?.upper === "number"
  ? `${fmtNum(Number(a.lower.toFixed(digits)))} .. ${fmtNum(Number(a.upper.toFixed(digits)))}` : "-");

function log2Bins(histogram) {
  const bins = new Map();
  for (const [size, n] of Object.entries(histogram || {})) {
    const s = Number(size);
    const low = s >= 1 ? 2 ** Math.floor(Math.log2(s)) : 0;
    bins.set(low, (bins.get(low) || 0) + n);
  }
  return [...bins.entries()].sort((a, b) => a[0] - b[0]);
}

// One view per kind: fields it draws (skipped by the generic rendering) and a function
// returning its sections. A kind added later adds one row here.
export const VIEWS = {
  flow_size: { fields: ["flow_size"], render: (r) => {
    const a = r.flow_size;
    const unit = unitOf(r);
    const bins = log2Bins(a.histogram).map(([low, n]) => [`>= ${fmtSI(low, unit)}`, n]);
    return [section("flow_size", `Flow sizes: ~${fmtNum(a.flows)} flows since the start (power-of-two bins; flows)`,
      bins.length ? barChart(bins) : el("p", { class: "empty", text: "no flows yet" })),
    section("flow_size.largest", `Largest flows (${(a.largest || []).length})`,
      table([String(r.key || "key").toUpperCase(), `SIZE (${unit})`, "EXACT", "RATE NOW"],
        (a.largest || []).slice(0, MAX_ROWS).map(([k, n, exact]) => ({ attrs: { "data-key": k },
          cells: [k, n, exact ? "yes" : `+- ${fmtNum(a.error?.per_key_abs ?? 0)}`,
            r.rate?.keys?.[k] ? fmtSI(r.rate.keys[k].bps ?? r.rate.keys[k].pps, r.rate.keys[k].bps !== null ? "bit/s" : "pkt/s") : "-"] }))))];
  } },
  flows: { fields: ["top_k", "flow_times"], render: (r, names) => {
    const times = r.flow_times || {};
    const unit = unitOf(r);
    const rows = (r.top_k || []).slice(0, MAX_ROWS).map(([k, n]) => ({ attrs: { "data-key": k },
      cells: [k, hostsOf(k, names), times[k] ? fmtDuration(times[k][1] - times[k][0]) : "-", fmtSI(n, unit), keyRate(r, k)] }));
    return [section("flows", `Active flows, largest first (${rows.length})`,
      rows.length ? table(["FLOW", "HOSTS", "DURATION", "SINCE START", "RATE NOW"], rows, { id: "flows-table" })
        : el("p", { class: "empty", text: "no active flows" }))];
  } },
  entropy: { fields: ["entropy"], render: (r) => [section("entropy", "Entropy",
    el("dl", { class: "facts" }, [["bits", fmtNum(r.entropy.bits)], ["bounds (bits)", bounds(r.entropy)],
      ["normalized (0..1)", fmtNum(r.entropy.normalized)],
      ["keys", `~${fmtNum(r.entropy.flows)}`], ["over", r.entropy.scope === "interval" ? "the last interval" : "everything so far"],
      ["since start", r.entropy.since_start_bits === undefined ? "-" : `${fmtNum(r.entropy.since_start_bits)} bits`],
      ["exact share", `${fmtNum(100 * (r.entropy.exact_share || 0))}%`]]
      .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })])))] },
  cardinality: { fields: ["cardinality"], render: (r) => {
    const c = r.cardinality;
    const rows = [["since the start", `~${fmtNum(c.estimate)} +- ${fmtNum(c.stderr)}`, bounds(c, 0)]];
    if (c.interval) rows.push(["last interval", `~${fmtNum(c.interval.estimate)} +- ${fmtNum(c.interval.stderr)}`, bounds(c.interval, 0)]);
    return [section("cardinality", `Distinct ${r.key || ""} keys`, table(["OVER", "ESTIMATE (1 std. error)", "BOUNDS"], rows))];
  } },
  heavy_changers: { fields: ["heavy_changers", "change_threshold", "heavy_changers_note"], render: (r) => {
    const list = r.heavy_changers || [];
    const note = r.coverage_changed ? "the agents covered changed: no change computed across it" : r.heavy_changers_note;
    return [section("heavy_changers", `Heavy changers (change >= ${fmtNum(r.change_threshold ?? "-")} between the last two intervals)`,
      list.length ? table([String(r.key || "key").toUpperCase(), "BEFORE", "AFTER", "CHANGE", "+-"],
        list.map((c) => ({ attrs: { "data-key": c.key }, cells: [c.key, c.before, c.after, c.change, c.error] })))
        : el("p", { class: "empty", text: note || "no heavy changer" }))];
  } },
};
for (const kind of ["superspreaders", "ddos_victims"]) {
  VIEWS[kind] = { fields: [kind, "min_distinct", "distinct_readable_up_to"], render: (r) => {
    const list = r[kind] || [];
    return [section(kind, `${kind === "superspreaders" ? "Sources" : "Destinations"} with at least ${fmtNum(r.min_distinct)} distinct peers`,
      list.length ? table(["KEY", "DISTINCT", "+-"], list.map((x) => ({ attrs: { "data-key": x.key },
        cells: [x.key, x.saturated ? "saturated" : x.distinct, x.stderr] })))
        : el("p", { class: "empty", text: "none" }))];
  } };
}

/** The real-time window: its per-key counts as a table and bars, its facts in words. */
function windowView(result) {
  const w = result.window;
  const pairs = Object.entries(w.counts || {});
  const head = `Current window: ${w.mode || "tumbling"}, ${fmtNum(w.length ?? "-")} s from ${fmtTime(w.start)}, ` +
    `${fmtNum(w.distinct ?? 0)} distinct keys${w.truncated ? " (largest kept)" : ""}`;
  return pairs.length ? pairsSection("window", pairs, result.key, head)
    : section("window", head, el("p", { class: "empty", text: "nothing counted in this window yet" }));
}

/** The sections of one result, as DOM nodes; names: agent name by address. */
export function renderSections(result, names = {}) {
  const facts = [];
  const sections = [];
  const view = VIEWS[result.kind];
  const drawn = new Set(view ? view.fields.filter((f) => f in result) : []);
  if (result.rate && typeof result.rate === "object") sections.push(...rateView(result));
  if (view && drawn.size) sections.push(...view.render(result, names));
  for (const [name, value] of Object.entries(result)) {
    if (META.has(name) || drawn.has(name) || name === "rate") continue;
    if (name === "window" && value && typeof value === "object") {
      sections.push(windowView(result));
      continue;
    }
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
    el("p", {}, `covered ${result.covered_count ?? covered.length}: `, el("span", { id: "covered", text: (covered.join(", ") || "-") + (result.covered_count > covered.length ? " ..." : "") })),
    el("p", {}, `missing ${result.missing_count ?? missing.length}: `, el("span", { id: "missing", class: missing.length ? "error" : "", text: (missing.join(", ") || "none") + (result.missing_count > missing.length ? " ..." : "") })));
}
