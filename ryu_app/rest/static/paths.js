// Path health (#/paths): the suspect links, a loss / RTT matrix of the probe
// pairs (Pingmesh's picture: one row per source, one column per destination)
// and the topology with every link coloured by its estimated loss. Polls GET
// links, GET topology, GET agents and the path_health tasks' results every 2 s.

import { api, clear, el, every, fmtNum, svg, table } from "./util.js";

const W = 560;
const H = 420;

/** Loss 0 -> green, 2% and more -> red; null -> grey. */
export function lossColour(loss) {
  if (loss === null || loss === undefined) return "#ccc";
  const t = Math.min(1, Math.max(0, loss / 0.02));
  return `hsl(${Math.round(120 * (1 - t))}, 70%, 45%)`;
}

function rttColour(ms, lo, hi) {
  if (ms === null || ms === undefined) return "#ccc";
  const t = hi > lo ? Math.min(1, (ms - lo) / (hi - lo)) : 0;
  return `hsl(${Math.round(210 - 210 * t)}, 65%, 50%)`;
}

const pct = (v) => (typeof v === "number" ? `${(100 * v).toFixed(2)}%` : "-");

function matrix(pairs, metric) {
  const hosts = [...new Set(pairs.flatMap((p) => [p.src, p.dst]))]
    .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const at = new Map(pairs.map((p) => [`${p.src}>${p.dst}`, p]));
  const rtts = pairs.map((p) => p.rtt_ms && p.rtt_ms.p50).filter((v) => typeof v === "number");
  const lo = Math.min(...rtts);
  const hi = Math.max(...rtts);
  const head = el("tr", {}, el("th", { text: "src \\ dst" }), ...hosts.map((h) => el("th", { text: h })));
  const rows = hosts.map((src) => el("tr", {}, el("th", { text: src }), ...hosts.map((dst) => {
    const p = at.get(`${src}>${dst}`);
    if (!p) return el("td", { class: "cell none" });
    const p50 = p.rtt_ms && p.rtt_ms.p50;
    const colour = metric === "loss" ? lossColour(p.loss) : rttColour(p50, lo, hi);
    const td = el("td", {
      class: "cell", "data-pair": `${src}>${dst}`, "data-loss": p.loss,
      title: `${src} -> ${dst}: loss ${pct(p.loss)} (${p.lost}/${p.sent}), RTT p50 ${fmtNum(p50)} ms`,
    }, metric === "loss" ? (p.loss ? (100 * p.loss).toFixed(1) : "") : "");
    td.style.background = colour; // CSSOM: allowed by the page's style-src 'self'
    return td;
  })));
  return el("table", { class: "pair-matrix", id: `matrix-${metric}` }, head, ...rows);
}

function topology(topo, links, agents) {
  const byName = new Map(links.map((l) => [l.name, l]));
  const hostName = new Map(agents.filter((a) => a.host).map((a) => [a.host, a.name]));
  const switches = topo.switches.map((s) => s.dpid);
  const pos = new Map();
  switches.forEach((d, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, switches.length) - Math.PI / 2;
    pos.set(d, [W / 2 + 140 * Math.cos(a), H / 2 + 140 * Math.sin(a)]);
  });
  const short = (dpid) => `s${parseInt(dpid, 16).toString(16)}`;
  const out = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "paths-topology", id: "paths-topology" });
  const draw = (name, a, b) => {
    const l = byName.get(name);
    out.append(svg("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], "data-link": name,
      class: l && l.suspect ? "path-link suspect" : "path-link",
      stroke: l && l.pairs ? lossColour(l.loss) : "#ccc", "stroke-width": l && l.suspect ? 6 : 3 },
    svg("title", { text: l ? `${name}: loss ${pct(l.loss)}, ${l.pairs} pairs` : `${name}: not measured` })));
  };
  for (const l of topo.links) {
    const [a, b] = [l.src, l.dst].sort((x, y) => parseInt(x.dpid, 16) - parseInt(y.dpid, 16));
    draw(`${short(a.dpid)}:${a.port}-${short(b.dpid)}:${b.port}`, pos.get(a.dpid), pos.get(b.dpid));
  }
  const perSwitch = new Map();
  for (const h of topo.hosts) {
    const n = perSwitch.get(h.dpid) || 0;
    perSwitch.set(h.dpid, n + 1);
    const [x, y] = pos.get(h.dpid) || [W / 2, H / 2];
    const a = Math.atan2(y - H / 2, x - W / 2) + (n - 1) * 0.25;
    const hp = [x + 60 * Math.cos(a), y + 60 * Math.sin(a)];
    const name = hostName.get(h.mac) || h.mac;
    draw(`${name}-${short(h.dpid)}:${h.port}`, [x, y], hp);
    out.append(svg("circle", { cx: hp[0], cy: hp[1], r: 5, class: "host" }),
      svg("text", { x: hp[0] + 7, y: hp[1] + 4, class: "label", text: name }));
  }
  for (const [d, [x, y]] of pos) {
    out.append(svg("rect", { x: x - 12, y: y - 9, width: 24, height: 18, class: "switch" }),
      svg("text", { x: x - 9, y: y + 4, class: "label", text: short(d) }));
  }
  return out;
}

export function mount(main) {
  const suspectsBox = el("div", { id: "suspects" });
  const metric = el("select", { id: "matrix-metric" },
    el("option", { value: "loss", text: "loss" }), el("option", { value: "rtt", text: "RTT p50" }));
  const matrixBox = el("div", { id: "pair-matrix" });
  const topoBox = el("div", { class: "graph-box", id: "paths-topology-box" });
  main.append(el("h1", { text: "Path health" }), el("h2", { text: "Suspect links" }), suspectsBox,
    el("h2", {}, "Pairs ", el("label", {}, metric)), matrixBox,
    el("h2", { text: "Links by estimated loss" }),
    el("p", { class: "legend-line" }, el("span", { class: "key loss0", text: "0%" }),
      el("span", { class: "key loss1", text: "1%" }), el("span", { class: "key loss2", text: ">= 2%" }),
      el("span", { class: "key unmeasured", text: "not measured" })), topoBox);
  let pairs = [];
  metric.addEventListener("change", () => clear(matrixBox).append(matrix(pairs, metric.value)));
  return every(2000, async () => {
    const [links, topo, agents, tasks] = await Promise.all([api("/measure/v1/links"),
      api("/measure/v1/topology"), api("/measure/v1/agents"), api("/measure/v1/tasks")]);
    const health = tasks.tasks.filter((t) => t.kind === "path_health");
    pairs = [];
    for (const t of health) {
      try {
        pairs.push(...((await api(`/measure/v1/tasks/${encodeURIComponent(t.id)}/result`)).pairs || []));
      } catch { /* no result yet */ }
    }
    clear(suspectsBox).append(links.suspects.length
      ? table(["LINK", "LOSS", "CONFIDENCE", "PAIRS", "TASK"], links.suspects.map((l) => ({
        attrs: { class: "suspect-row", "data-link": l.name },
        cells: [l.name, pct(l.loss), (l.confidence || 0).toFixed(2), l.pairs, l.task_id] })), { id: "suspects-table" })
      : el("p", { class: "empty", id: "no-suspects", text: health.length ? "no suspect link" : "no path_health task" }));
    clear(matrixBox).append(pairs.length ? matrix(pairs, metric.value)
      : el("p", { class: "empty", text: "no pair measured yet" }));
    clear(topoBox).append(topology(topo, links.links, agents.agents));
  });
}
