// Small SVG charts: a time-series line chart with a clickable legend and
// clickable points, and a horizontal bar chart. Labels are SVG text nodes,
// written with SI prefixes and the chart's unit, and the margins are sized from
// the longest label, so every label lies inside the SVG. The SVG scales to the
// page's width (viewBox, width 100%).

import { el, svg, fmtNum, fmtSI, fmtTime } from "./util.js";

const CHAR = 6.5;  // px per character of an 11px label (a safe upper bound)

const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

export function color(i) { return COLORS[i % COLORS.length]; }

function ticks(lo, hi, n) {
  if (hi <= lo) return [lo];
  const step = (hi - lo) / n;
  return Array.from({ length: n + 1 }, (_, i) => lo + i * step);
}

/**
 * series: [{name, points: [[x, y], ...], partial?: [x, ...], band?: [[x, lower, upper], ...]}];
 * a band (an estimate's bounds) is drawn as a shaded area behind its line.
 * options: {width, height, focus, unit, format (a value's label; default: SI prefix
 * and unit), axisTitle, marker (an x drawn as a vertical line), onPoint(x),
 * onLegend(name), id}.
 * Returns a <div class="chart"> holding the SVG and its legend.
 */
export function lineChart(series, options = {}) {
  const width = options.width || 900;
  const height = options.height || 240;
  const unit = options.unit || "";
  const label = options.format || ((v) => fmtSI(v, unit));
  const all = series.flatMap((s) => s.points);
  const root = el("div", { class: "chart", id: options.id });
  if (all.length === 0) {
    root.append(el("p", { class: "empty", text: options.empty || "no data yet" }));
    return root;
  }
  let x0 = Math.min(...all.map((p) => p[0]));
  let x1 = Math.max(...all.map((p) => p[0]));
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  const highs = series.flatMap((s) => (s.band || []).map((b) => b[2]));
  const top = Math.max(...all.map((p) => p[1]), ...highs);
  const y1 = (top > 0 ? top : 1) * 1.05;
  const longest = Math.max(...ticks(0, y1, 4).map((t) => label(t).length));
  const pad = { left: Math.ceil(longest * CHAR) + 12, right: 40, top: 22, bottom: 26 };
  const sx = (x) => pad.left + ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const sy = (y) => height - pad.bottom - (y / y1) * (height - pad.top - pad.bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%",
    class: "line-chart", "data-points": all.length, "data-unit": unit });
  if (options.axisTitle) {
    chart.append(svg("text", { x: 4, y: 12, class: "axis axis-title", text: options.axisTitle }));
  }
  for (const t of ticks(0, y1, 4)) {
    chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: sy(t), y2: sy(t), class: "grid" }),
      svg("text", { x: pad.left - 6, y: sy(t) + 4, class: "axis", "text-anchor": "end", text: label(t) }));
  }
  for (const t of ticks(x0, x1, 4)) {
    chart.append(svg("text", { x: sx(t), y: height - 8, class: "axis", "text-anchor": "middle", text: fmtTime(t) }));
  }
  if (typeof options.marker === "number") {
    chart.append(svg("line", { x1: sx(options.marker), x2: sx(options.marker), y1: pad.top,
      y2: height - pad.bottom, class: "marker" }));
  }
  series.forEach((s, i) => {
    const dim = options.focus && options.focus !== s.name;
    const g = svg("g", { class: `series${dim ? " dimmed" : ""}${options.focus === s.name ? " focused" : ""}`,
      "data-name": s.name, stroke: color(i), fill: color(i) });
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    const band = [...(s.band || [])].sort((a, b) => a[0] - b[0]);
    if (band.length) {  // upper edge left to right, then the lower edge back
      const edge = [...band.map((b) => `${sx(b[0])},${sy(b[2])}`), ...band.reverse().map((b) => `${sx(b[0])},${sy(b[1])}`)];
      g.append(svg("polygon", { points: edge.join(" "), class: "band", stroke: "none" },
        svg("title", { text: `${s.name}: bounds` })));
    }
    if (pts.length > 1) {
      g.append(svg("polyline", { points: pts.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" "), fill: "none" }));
    }
    const partial = new Set(s.partial || []);
    for (const [x, y] of pts) {
      const part = partial.has(x);
      const dot = svg("circle", { cx: sx(x), cy: sy(y), r: 3.5, class: part ? "point partial" : "point", "data-x": x, "data-y": y },
        svg("title", { text: `${s.name}: ${label(y)} at ${fmtTime(x)}${part ? " (partial: agents missing)" : ""}` }));
      if (options.onPoint) dot.addEventListener("click", () => options.onPoint(x));
      g.append(dot);
    }
    chart.append(g);
  });
  root.append(chart);
  if (series.length > 1 || options.onLegend) {
    const legend = el("ul", { class: "legend" });
    series.forEach((s, i) => {
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = color(i);  // CSSOM, not a style attribute (CSP)
      const item = el("li", { class: `legend-item${options.focus === s.name ? " focused" : ""}`,
        "data-name": s.name, title: "click to focus on this key" }, swatch, s.name);
      if (options.onLegend) item.addEventListener("click", () => options.onLegend(s.name));
      legend.append(item);
    });
    root.append(legend);
  }
  return root;
}

/** pairs: [[label, value], ...] largest first; a horizontal bar per pair. */
export function barChart(pairs, options = {}) {
  const width = options.width || 640;
  const bar = 18;
  const unit = options.unit || "";
  const valueText = (v) => (unit ? fmtSI(v, unit) : fmtNum(v));
  const labelWidth = Math.ceil(Math.max(4, ...pairs.map(([l]) => String(l).length)) * CHAR) + 10;
  const valueWidth = Math.ceil(Math.max(4, ...pairs.map(([, v]) => valueText(v).length)) * CHAR) + 10;
  const height = pairs.length * (bar + 4) + 4;
  const max = Math.max(1, ...pairs.map((p) => p[1]));
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", class: "bar-chart",
    "data-unit": unit });
  pairs.forEach(([label, value], i) => {
    const y = 2 + i * (bar + 4);
    const w = Math.max(1, (value / max) * (width - labelWidth - valueWidth));
    chart.append(
      svg("text", { x: labelWidth - 6, y: y + 13, "text-anchor": "end", class: "label", text: label }),
      svg("rect", { x: labelWidth, y, width: w, height: bar, class: "bar", fill: color(i) },
        svg("title", { text: `${label}: ${valueText(value)}` })),
      svg("text", { x: labelWidth + w + 4, y: y + 13, class: "value", text: valueText(value) }));
  });
  return chart;
}
