// Bar charts drawn as SVG by the project (no chart library, nothing from the internet).
"use strict";
const SVGNS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceMax(v) {
  if (v <= 4) return 4;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// series: [{key, cls, name, counted?}]; rows: [{label, values: {key: n}, cls?, title?}]; stacked
// bars, labelled with the sum of the series that are not `counted: false`.
function barChart(container, rows, series, opts) {
  const W = opts.width || 900, H = opts.height || 220, L = 34, B = 22, T = 10;
  const total = r => series.reduce((s, x) => s + (r.values[x.key] || 0), 0);
  const max = niceMax(Math.max(0, ...rows.map(total)));
  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "xMidYMid meet"});
  const plotH = H - B - T, step = (W - L) / Math.max(1, rows.length), bw = Math.max(2, step * 0.7);
  for (let i = 0; i <= 4; i++) {
    const y = T + plotH - plotH * i / 4;
    svg.appendChild(svgEl("line", {x1: L, x2: W, y1: y, y2: y, class: "axis"}));
    svg.appendChild(svgEl("text", {x: L - 6, y: y + 4, "text-anchor": "end"}, String(Math.round(max * i / 4))));
  }
  rows.forEach((r, i) => {
    const x = L + i * step + (step - bw) / 2;
    let y = T + plotH;
    for (const s of series) {
      const n = r.values[s.key] || 0;
      if (!n) continue;
      const h = plotH * n / max;
      y -= h;
      const rect = svgEl("rect", {x: x, y: y, width: bw, height: h, class: s.cls + (r.cls ? " " + r.cls : ""), rx: 2});
      rect.appendChild(svgEl("title", {}, `${r.title || r.label}: ${n} ${s.name || ""}`.trim()));
      svg.appendChild(rect);
    }
    const t = series.filter(x => x.counted !== false).reduce((s, x) => s + (r.values[x.key] || 0), 0);
    if (t && opts.values) svg.appendChild(svgEl("text", {x: x + bw / 2, y: y - 3, "text-anchor": "middle", class: "val"}, String(t)));
    if (!opts.every || i % opts.every === 0 || i === rows.length - 1)
      svg.appendChild(svgEl("text", {x: x + bw / 2, y: H - 6, "text-anchor": "middle"}, r.label));
  });
  container.replaceChildren(svg);
}
