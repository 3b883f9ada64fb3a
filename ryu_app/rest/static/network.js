// Network page: switches, links and hosts from discovery as an SVG graph,
// the overlay tree drawn over it, and each agent's health.
//
// Layout: a tidy tree. The switch graph is walked breadth-first from its
// centre (the switch with the smallest eccentricity); hosts hang under their
// switch. Leaves get consecutive slots, a parent sits over its children.
// Links outside that spanning tree (loops) are drawn too.

import { api, clear, el, every, svg, table } from "./util.js";

const SLOT = 78;
const LEVEL = 110;

function switchLabel(dpid) {
  const n = parseInt(dpid, 16);
  return Number.isFinite(n) ? `s${n}` : dpid;
}

function layout(topo) {
  const adj = new Map(topo.switches.map((s) => [s.dpid, new Set()]));
  for (const l of topo.links) {
    if (adj.has(l.src.dpid) && adj.has(l.dst.dpid)) {
      adj.get(l.src.dpid).add(l.dst.dpid);
      adj.get(l.dst.dpid).add(l.src.dpid);
    }
  }
  const bfs = (start) => {
    const dist = new Map([[start, 0]]);
    const parent = new Map();
    const queue = [start];
    while (queue.length) {
      const cur = queue.shift();
      for (const next of [...adj.get(cur)].sort()) {
        if (!dist.has(next)) { dist.set(next, dist.get(cur) + 1); parent.set(next, cur); queue.push(next); }
      }
    }
    return { dist, parent };
  };
  const children = new Map();
  const roots = [];
  const seen = new Set();
  for (const s of [...adj.keys()].sort()) {
    if (seen.has(s)) continue;
    const component = [...bfs(s).dist.keys()];
    const ecc = (n) => Math.max(...bfs(n).dist.values());
    const centre = component.sort().reduce((a, b) => (ecc(b) < ecc(a) ? b : a));
    const { parent } = bfs(centre);
    component.forEach((n) => seen.add(n));
    roots.push(centre);
    for (const [child, par] of parent) {
      if (!children.has(par)) children.set(par, []);
      children.get(par).push(child);
    }
  }
  for (const h of topo.hosts) {
    if (!children.has(h.dpid)) children.set(h.dpid, []);
    children.get(h.dpid).push(`host:${h.mac}`);
  }
  const pos = new Map();
  let slot = 0;
  const place = (node, depth) => {
    const kids = (children.get(node) || []).slice().sort((a, b) => {
      const ha = a.startsWith("host:"), hb = b.startsWith("host:");
      return ha === hb ? (a < b ? -1 : 1) : (ha ? 1 : -1);
    });
    if (kids.length === 0) { pos.set(node, { x: slot++ * SLOT + SLOT / 2, y: depth * LEVEL + 40 }); return; }
    kids.forEach((k) => place(k, depth + 1));
    const xs = kids.map((k) => pos.get(k).x);
    pos.set(node, { x: (Math.min(...xs) + Math.max(...xs)) / 2, y: depth * LEVEL + 40 });
  };
  roots.forEach((r) => place(r, 0));
  const depth = Math.max(0, ...[...pos.values()].map((p) => p.y));
  return { pos, width: Math.max(320, slot * SLOT), height: depth + 70 + Math.min(140, slot * SLOT / 6) };  // room for the overlay arcs
}

function healthClass(agent, health) {
  if (!agent) return "unmonitored";
  if (!agent.up) return "down";
  if (health && (!health.reachable || health.crash_looping)) return "degraded";
  return "up";
}

function draw(topo, agents, overlay, health) {
  const { pos, width, height } = layout(topo);
  const byMac = new Map(agents.filter((a) => a.host).map((a) => [a.host, a]));
  const healthByName = new Map(health.map((h) => [h.name, h]));
  const agentPos = new Map();
  for (const h of topo.hosts) {
    const a = byMac.get(h.mac);
    if (a) agentPos.set(a.name, pos.get(`host:${h.mac}`));
  }
  const graph = svg("svg", { id: "network-graph", viewBox: `0 0 ${width} ${height}`, width, height,
    "data-switches": topo.switches.length, "data-hosts": topo.hosts.length, "data-links": topo.links.length });
  graph.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }))));
  const drawn = new Set();
  for (const l of topo.links) {
    const key = [l.src.dpid, l.dst.dpid].sort().join("-");
    if (drawn.has(key)) continue;
    drawn.add(key);
    const a = pos.get(l.src.dpid), b = pos.get(l.dst.dpid);
    if (a && b) graph.append(svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: "link switch-link" }));
  }
  for (const h of topo.hosts) {
    const a = pos.get(h.dpid), b = pos.get(`host:${h.mac}`);
    if (a && b) graph.append(svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: "link host-link" }));
  }
  for (const [child, parent] of Object.entries(overlay.parent || {})) {
    const a = agentPos.get(parent), b = agentPos.get(child);
    if (!parent || !a || !b) continue;
    const mx = (a.x + b.x) / 2, my = Math.min(a.y, b.y) + 60 + Math.abs(a.x - b.x) / 6;
    graph.append(svg("path", { d: `M ${a.x} ${a.y + 14} Q ${mx} ${my} ${b.x} ${b.y + 14}`,
      class: "overlay-edge", "marker-end": "url(#arrow)", "data-parent": parent, "data-child": child }));
  }
  for (const s of topo.switches) {
    const p = pos.get(s.dpid);
    graph.append(svg("g", { class: "node switch", "data-dpid": s.dpid, transform: `translate(${p.x},${p.y})` },
      svg("rect", { x: -20, y: -13, width: 40, height: 26, rx: 4 }),
      svg("text", { y: 4, "text-anchor": "middle", text: switchLabel(s.dpid) }),
      svg("title", { text: `switch ${s.dpid}, ports ${s.ports.join(", ")}` })));
  }
  for (const h of topo.hosts) {
    const p = pos.get(`host:${h.mac}`);
    const a = byMac.get(h.mac);
    const hh = a ? healthByName.get(a.name) : null;
    const isRoot = a && overlay.root === a.name;
    const name = a ? a.name : (h.ips[0] || h.mac);
    graph.append(svg("g", { class: `node host ${healthClass(a, hh)}${isRoot ? " overlay-root" : ""}`,
      "data-mac": h.mac, "data-agent": a ? a.name : null, transform: `translate(${p.x},${p.y})` },
      isRoot ? svg("circle", { r: 19, class: "root-ring" }) : null,
      svg("circle", { r: 14 }),
      svg("text", { y: 4, "text-anchor": "middle", class: "host-name", text: name }),
      svg("text", { y: 30, "text-anchor": "middle", class: "host-ip", text: h.ips.join(" ") }),
      isRoot ? svg("text", { y: -24, "text-anchor": "middle", class: "root-label", text: "root" }) : null,
      svg("title", { text: `${name} ${h.mac} ${h.ips.join(" ")} on ${switchLabel(h.dpid)} port ${h.port}` })));
  }
  return graph;
}

function agentRows(agents, health) {
  const byName = new Map(health.map((h) => [h.name, h]));
  return agents.map((a) => {
    const h = byName.get(a.name) || {};
    const state = !a.up ? "down" : (h.reachable ? (h.crash_looping ? "crash-looping" : "up") : "unreachable");
    return { attrs: { class: `agent ${state}`, "data-agent": a.name },
      cells: [a.name, state, a.data_ip, a.parent || (a.up ? "(root)" : "-"),
        h.restarts ?? "-", h.packets ?? "-", h.missed ?? "-", a.url, h.error || ""] };
  });
}

export function mount(main) {
  const summary = el("p", { id: "network-summary" });
  const overlayLine = el("p", {}, "overlay root: ", el("strong", { id: "overlay-root", text: "-" }),
    el("span", { id: "overlay-detail" }));
  const graphBox = el("div", { class: "graph-box" });
  const agentsBox = el("div", { id: "agents" });
  main.append(el("h1", { text: "Network" }), summary, overlayLine,
    el("p", { class: "legend-line" },
      el("span", { class: "key up", text: "agent up" }), el("span", { class: "key degraded", text: "unreachable / crash-looping" }),
      el("span", { class: "key down", text: "agent down" }), el("span", { class: "key unmonitored", text: "no agent" }),
      el("span", { class: "key overlay", text: "overlay tree (parent to child)" })),
    graphBox, el("h2", { text: "Agents" }), agentsBox);
  return every(2000, async () => {
    const [topo, agents, overlay, health] = await Promise.all([
      api("/measure/v1/topology"), api("/measure/v1/agents"), api("/measure/v1/overlay"),
      api("/dashboard/api/agent-health")]);
    const links = new Set(topo.links.map((l) => [l.src.dpid, l.dst.dpid].sort().join("-")));
    summary.textContent = `${topo.switches.length} switches, ${links.size} links, ` +
      `${topo.hosts.length} hosts, ${agents.agents.filter((a) => a.up).length} of ${agents.agents.length} agents up`;
    document.getElementById("overlay-root").textContent = overlay.root || "none";
    document.getElementById("overlay-detail").textContent =
      `  (epoch ${overlay.epoch}, depth ${overlay.depth ?? "-"}, fanout ${overlay.fanout ?? "-"}` +
      `${overlay.unlocated && overlay.unlocated.length ? `, not located: ${overlay.unlocated.join(", ")}` : ""})`;
    clear(graphBox).append(draw(topo, agents.agents, overlay, health.agents));
    clear(agentsBox).append(table(["NAME", "STATE", "DATA IP", "PARENT", "MONITOR RESTARTS",
      "PACKETS SEEN", "PACKETS MISSED", "URL", "ERROR"], agentRows(agents.agents, health.agents),
    { id: "agents-table" }));
  });
}
