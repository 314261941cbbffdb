// Health: polls /api/health.
"use strict";
function state(id, text, ok) {
  const el = document.getElementById(id);
  el.textContent = text;
  el.className = ok === undefined ? "" : ok ? "state-ok" : "state-bad";
}
function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min ${Math.floor(s % 60)} s`;
}
let drawn = false;
function draw(h) {
  if (!drawn) { performance.mark("drawn"); drawn = true; }  // tools/bench_web.py
  state("camera", h.camera, h.camera === "streaming");
  state("fps", h.fps.toFixed(1));
  state("thermal", h.thermal === null ? "no thermal camera" : h.thermal, h.thermal === null ? undefined : h.thermal === "streaming");
  state("mqtt", !h.mqtt_enabled ? "off" : h.mqtt_connected ? "connected" : "not connected", h.mqtt_enabled ? h.mqtt_connected : undefined);
  state("outbox", h.outbox_depth === null ? "–" : String(h.outbox_depth), h.outbox_depth === null ? undefined : h.outbox_depth < 100);
  state("clock", h.clock_trusted ? "trusted (synchronised)" : "not synchronised yet", h.clock_trusted);
  state("disk", h.disk_free_bytes === null ? "–" : (h.disk_free_bytes / 1e9).toFixed(1) + " GB",
        h.disk_free_bytes === null ? undefined : h.disk_free_bytes > 200e6);
  state("unstored", String(h.records_not_stored), h.records_not_stored === 0);
  state("model", h.model);
  state("version", h.version);
  state("uptime", duration(h.uptime_s));
  const tz = document.body.dataset.timezone;
  document.getElementById("updated").textContent = new Date().toLocaleTimeString([], {timeZone: tz});
}
async function refresh() {
  try {
    const r = await fetch("/api/health", {cache: "no-store"});
    if (r.status === 401) { location.href = "/login"; return; }
    if (r.ok) draw(await r.json());
  } catch (e) { document.getElementById("updated").textContent = "offline, retrying"; }
  setTimeout(refresh, 3000);
}
refresh();
