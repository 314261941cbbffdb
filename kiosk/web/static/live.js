// Live view: asks for the next frame as soon as one is shown (at most MAX_FPS), only while the
// page is visible; the server stops handing frames over within seconds of the last request.
"use strict";
const MAX_FPS = 10;
let seq = 0, count = 0, shown = [], url = null;

function setText(id, text) { document.getElementById(id).textContent = text; }

function describe(m) {
  setText("detection", {full: "full frame", windows: "windows around tracked faces", none: "skipped (nothing moved)"}[m.detection] || m.detection);
  setText("motion", m.motion);
  setText("faces", m.faces.length ? m.faces.map(f => `#${f.track} ${f.w} px` +
    (f.temperature_c !== null ? ` ${f.temperature_c.toFixed(1)} °C` : f.reading ? ` (${f.reading})` : "")).join(", ") : "none");
  setText("thermal", m.thermal || "no thermal camera");
  setText("reference", m.reference_c === null ? "–" : `${m.reference_c.toFixed(1)} °C`);
}

async function next() {
  if (document.hidden) { setTimeout(next, 500); return; }
  const started = performance.now();
  try {
    const r = await fetch(`/live/frame.jpg?after=${seq}`, {cache: "no-store"});
    if (r.status === 401) { location.href = "/login"; return; }
    if (r.status === 200) {
      const meta = JSON.parse(r.headers.get("X-Live"));
      seq = meta.seq;
      const blob = await r.blob();
      if (url) URL.revokeObjectURL(url);
      url = URL.createObjectURL(blob);
      document.getElementById("frame").src = url;
      describe(meta);
      const now = performance.now();
      shown.push(now);
      shown = shown.filter(t => now - t < 3000);
      setText("rate", `${(shown.length / 3).toFixed(1)} a second`);
      if (++count === 1) performance.mark("drawn");  // first frame on screen (tools/bench_web.py)
      document.body.dataset.shown = count;
    } else if (r.status === 204) {
      setText("rate", "no camera frame");
    }
  } catch (e) { setText("rate", "offline, retrying"); await new Promise(ok => setTimeout(ok, 1000)); }
  setTimeout(next, Math.max(0, 1000 / MAX_FPS - (performance.now() - started)));
}
next();
