// Task page: live chart of the totals over time, the top keys over time
// (click a legend item to focus on one key; the focus is kept in the URL),
// the current or a past interval's sections (tables and charts) and coverage.
//
// The series are built from GET tasks/{id}/history when the page opens and
// grown from GET tasks/{id}/result every second. A past interval is picked
// in the history list or by clicking a point of the totals chart (?at=).
// An elastic five_tuple or src_dst task also offers "by key" (?key=): the
// same state answered for a coarser key (GET tasks/{id}/result?key=).

import { lineChart } from "./chart.js";
import { numericPairs, renderCoverage, renderSections } from "./sections.js";
import { ApiError, api, clear, el, every, fmtNum, fmtTime, hashParams, setHashParam, table } from "./util.js";

const COARSER = { five_tuple: ["src", "dst", "src_dst", "sport", "dport", "proto", "src_dport", "dst_dport"],
  src_dst: ["src", "dst"] };

const KEY_FIELDS = ["heavy_hitters", "top_k", "scanners"];
const MAX_SERIES = 8;
const MAX_POINTS = 600;

/** The field whose keys are charted over time: a known one, else the first key->number section. */
export function keyField(result) {
  for (const name of KEY_FIELDS) if (numericPairs(result[name])) return name;
  for (const [name, value] of Object.entries(result)) {
    if (!["per_host", "distinct", "sketch"].includes(name) && numericPairs(value) && !Array.isArray(value)
      && Object.keys(value).length > 1) return name;
  }
  return null;
}

/** Per-key rates of the last interval (bit/s, else pkt/s) as series, largest first. */
function rateKeySeries(results) {
  const best = new Map();
  const value = (v) => (v.bps !== null && v.bps !== undefined ? v.bps : v.pps || 0);
  for (const r of results) {
    for (const [k, v] of Object.entries(r.rate?.keys || {})) best.set(k, Math.max(best.get(k) || 0, value(v)));
  }
  const keys = [...best.entries()].sort((a, b) => b[1] - a[1]).slice(0, MAX_SERIES).map(([k]) => k);
  return keys.map((k) => ({ name: k, partial: results.filter((r) => r.complete === false).map((r) => r.interval_end),
    points: results.filter((r) => r.rate).map((r) => [r.interval_end, r.rate.keys?.[k] ? value(r.rate.keys[k]) : 0]) }));
}

function keySeries(results, field) {
  const best = new Map();
  for (const r of results) {
    for (const [k, v] of numericPairs(r[field]) || []) best.set(k, Math.max(best.get(k) || 0, v));
  }
  const keys = [...best.entries()].sort((a, b) => b[1] - a[1]).slice(0, MAX_SERIES).map(([k]) => k);
  return keys.map((k) => ({ name: k, points: results.flatMap((r) => {
    const found = (numericPairs(r[field]) || []).find(([key]) => key === k);
    return found ? [[r.interval_end, found[1]]] : [];
  }) }));
}

// Kinds whose answer is one estimate per interval, charted with its bounds (a band).
const ESTIMATES = {
  entropy: { title: "Entropy per interval, with its bounds", unit: "bit", axisTitle: "entropy (bit)",
    of: (r) => r.entropy && [r.entropy.bits, r.entropy.lower, r.entropy.upper] },
  cardinality: { title: "Distinct keys per interval, with their bounds", unit: "keys", axisTitle: "distinct keys",
    format: (v) => `${fmtNum(Math.round(v))} keys`,
    of: (r) => { const c = r.cardinality?.interval || r.cardinality; return c && [c.estimate, c.lower, c.upper]; } },
};

/** The estimate of an entropy or cardinality task per interval, with its band. */
export function estimateSeries(results, kind) {
  const spec = ESTIMATES[kind];
  const rows = results.map((r) => [r.interval_end, spec.of(r)]).filter(([, e]) => e && typeof e[0] === "number");
  return [{ name: kind === "entropy" ? "entropy" : "distinct keys",
    partial: results.filter((r) => r.complete === false).map((r) => r.interval_end),
    points: rows.map(([x, e]) => [x, e[0]]),
    band: rows.filter(([, e]) => typeof e[1] === "number" && typeof e[2] === "number").map(([x, e]) => [x, e[1], e[2]]) }];
}

export function mount(main, id) {
  const results = new Map();  // interval_end -> result
  let latest = null;
  let names = {};  // agent name by data IP, MAC and name (host names of flows)
  const head = el("div", { id: "task-head" });
  const waiting = el("p", { id: "task-waiting", class: "hint" });
  const picker = el("select", { id: "history" });
  const totalsBox = el("div", { id: "totals-chart" });
  const keysBox = el("div", { id: "keys-chart" });
  const coverageBox = el("div");
  const sectionsBox = el("div", { id: "sections" });
  const shownLabel = el("span", { id: "shown-interval" });
  const keySelect = el("select", { id: "key-select" });
  const partialBox = el("div", { id: "partial" });
  keySelect.addEventListener("change", () => { setHashParam("key", keySelect.value || null); clear(partialBox); });
  picker.addEventListener("change", () => { setHashParam("at", picker.value || null); render(); });
  const rateBox = el("div", { id: "rate-chart" });
  const estimateTitle = el("h2", { id: "estimate-title" });
  const estimateBox = el("div", { id: "estimate-chart" });
  main.append(head, waiting,
    partialBox, estimateTitle, estimateBox,
    el("h2", { text: "Rate over time (each interval's own traffic)" }),
    el("p", { class: "hint", text: "Hollow points: partial intervals (agents missing), not drops." }), rateBox,
    el("h2", { text: "Top keys over time" }), el("p", { class: "hint", text: "Click a key in the legend to focus on it; click it again to see all." }), keysBox,
    el("h2", { text: "Cumulative total since the task started" }), totalsBox,
    el("h2", {}, "Interval ", el("label", {}, picker), " ", shownLabel),
    coverageBox, sectionsBox);

  const sorted = () => [...results.values()].sort((a, b) => a.interval_end - b.interval_end);

  function updatePicker(list) {
    const wanted = ["", ...list.map((r) => String(r.interval_end)).reverse()];
    const have = [...picker.options].map((o) => o.value);
    if (wanted.join() === have.join()) return;
    const value = hashParams().get("at") || "";
    picker.replaceChildren(el("option", { value: "", text: "live (latest)" }),
      ...list.slice().reverse().map((r) => el("option", { value: String(r.interval_end),
        text: `${fmtTime(r.interval_end)}  total ${fmtNum(r.total ?? "-")}` })));
    picker.value = wanted.includes(value) ? value : "";
  }

  function render() {
    const list = sorted();
    updatePicker(list);
    const at = hashParams().get("at");
    const shown = (at && results.get(Number(at))) || latest;
    const focus = hashParams().get("focus");
    const partial = list.filter((r) => r.complete === false).map((r) => r.interval_end);
    const withRate = list.filter((r) => r.rate);
    const onPoint = (x) => { setHashParam("at", String(x)); render(); };
    const estimate = ESTIMATES[latest?.kind];
    estimateTitle.textContent = estimate ? estimate.title : "";
    clear(estimateBox);
    if (estimate) {
      estimateBox.append(el("p", { class: "hint", text: "Line: the estimate; shaded band: its bounds (README, Reading results). Hollow points: partial intervals." }),
        lineChart(estimateSeries(list, latest.kind), { id: "estimate", unit: estimate.unit, format: estimate.format, axisTitle: estimate.axisTitle,
          marker: at ? Number(at) : undefined, empty: "no estimate yet", onPoint }));
    }
    clear(rateBox).append(lineChart([{ name: "bit rate", partial, points: withRate.map((r) => [r.interval_end, r.rate.bps]) }],
      { id: "rate", unit: "bit/s", axisTitle: "bit/s", marker: at ? Number(at) : undefined, empty: "no rate yet", onPoint }));
    const unit = latest?.increment === "bytes" ? "B" : "pkt";
    const totals = [{ name: "total", partial, points: list.filter((r) => typeof r.total === "number").map((r) => [r.interval_end, r.total]) }];
    clear(totalsBox).append(lineChart(totals, { id: "totals", unit, axisTitle: `${unit === "B" ? "bytes" : "packets"} since the start`,
      marker: at ? Number(at) : undefined, empty: "no result yet", onPoint }));
    const field = latest ? keyField(latest) : null;
    const byRate = withRate.some((r) => Object.keys(r.rate.keys || {}).length);
    const keyUnit = withRate.some((r) => Object.values(r.rate.keys || {}).some((v) => v.bps !== null)) ? "bit/s" : "pkt/s";
    clear(keysBox).append(byRate ? lineChart(rateKeySeries(withRate), { id: "keys", focus, unit: keyUnit, axisTitle: keyUnit,
      onLegend: (name) => { setHashParam("focus", focus === name ? null : name); render(); } })
      : field ? lineChart(keySeries(list, field), { id: "keys", focus, unit, axisTitle: `${unit} since the start`,
      empty: `no ${field.replace(/_/g, " ")} yet`,
      onLegend: (name) => { setHashParam("focus", focus === name ? null : name); render(); } })
      : el("p", { class: "empty", text: "this task's results have no per-key values" }));
    shownLabel.textContent = shown ? (shown === latest && !at ? "(live)" : `(past: ${fmtTime(shown.interval_end)})`) : "";
    clear(coverageBox);
    clear(sectionsBox);
    if (shown) {
      coverageBox.append(renderCoverage(shown));
      sectionsBox.append(...renderSections(shown, names));
    }
  }

  function add(result) {
    if (typeof result.interval_end !== "number") return;
    results.set(result.interval_end, result);
    while (results.size > MAX_POINTS) results.delete(sorted()[0].interval_end);
    if (!latest || result.interval_end >= latest.interval_end) latest = result;
  }

  const started = Date.now();
  const stopTask = every(2000, async () => {
    const task = await api(`/measure/v1/tasks/${encodeURIComponent(id)}`);
    if (task.kind === "flows") {
      const { agents: list } = await api("/measure/v1/agents");
      names = Object.fromEntries(list.flatMap((a) => [a.name, a.data_ip, a.host, a.mac]
        .filter((ref) => typeof ref === "string" && ref).map((ref) => [ref, a.name])));
    }
    const agents = Object.entries(task.agents || {});
    clear(head).append(...[
      el("h1", {}, "Task ", el("span", { id: "task-id", text: task.id }), " ", el("span", { id: "task-name", text: task.name })),
      el("p", { id: "task-facts", text: `${task.kind}, status ${task.status}, key ${task.task.key ?? "-"}, ` +
        `increment ${task.task.increment ?? "-"}, report every ${task.task.report_interval ?? "-"} s` }),
      task.last_error ? el("p", { class: "error", text: task.last_error }) : null,
      agents.length ? el("p", { class: "hint", text: `agents: ${agents.map(([n, s]) => `${n} ${s}`).join(", ")}` }) : null].filter(Boolean));
    const coarser = task.task.memory ? COARSER[task.task.key] || [] : [];
    if (coarser.length && keySelect.options.length === 0) {
      keySelect.append(el("option", { value: "", text: `${task.task.key} (the task's key)` }),
        ...coarser.map((k) => el("option", { value: k, text: k })));
      keySelect.value = coarser.includes(hashParams().get("key")) ? hashParams().get("key") : "";
    }
    if (coarser.length) head.append(el("p", {}, el("label", {}, "by key ", keySelect)));
  });
  const stopPartial = every(1000, async () => {
    const key = keySelect.value;
    if (!key) return;
    try {
      const r = await api(`/measure/v1/tasks/${encodeURIComponent(id)}/result?key=${encodeURIComponent(key)}`);
      const p = r.partial || { keys: [] };
      clear(partialBox).append(el("h2", { text: `By ${key} (from the ${p.of} task's heavy entries)` }),
        el("p", { class: "hint", text: `truth in [lower, upper]; ${fmtNum(p.light_total)} in the light part` }),
        table([key, "size", "lower", "upper", "exact"], p.keys.map((row) =>
          [row.key, fmtNum(row.size), fmtNum(row.lower), fmtNum(row.upper), row.exact ? "yes" : "no"]),
        { id: "partial-table" }));
    } catch (exc) {
      if (!(exc instanceof ApiError) || exc.status !== 404) throw exc;
    }
  });
  let history = false;
  const stopResult = every(1000, async () => {
    if (!history) {
      const past = await api(`/measure/v1/tasks/${encodeURIComponent(id)}/history?limit=1000`);
      past.results.forEach(add);
      history = true;
    }
    try {
      add(await api(`/measure/v1/tasks/${encodeURIComponent(id)}/result`));
      waiting.textContent = "";
    } catch (exc) {
      if (!(exc instanceof ApiError) || exc.status !== 404) throw exc;
      waiting.textContent = `waiting for the first result... ${Math.round((Date.now() - started) / 1000)} s (${exc.message})`;
    }
    render();
  });
  return () => { stopTask(); stopResult(); stopPartial(); };
}
