// Today: fetches /api/today/page and redraws; no reload needed.
"use strict";
const REFRESH_MS = 5000;

function setText(id, text) { document.getElementById(id).textContent = text; }

function row(cells, cls) {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
  for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
  return tr;
}

function draw(d) {
  setText("date", d.date);
  setText("visitors", d.visitors);
  setText("female", d.gender.female);
  setText("male", d.gender.male);
  setText("failed", d.failed_checks);
  setText("unmeasured", d.unmeasured_checks);
  const last = d.latest[0];
  setText("last", last ? `${last.at} · ${last.gender}, ${last.age_group}` : "none yet");
  setText("updated", new Date(d.updated_at).toLocaleTimeString([], {timeZone: d.timezone}));
  barChart(document.getElementById("hours"),
    d.hours.map(h => ({label: h.hour.slice(0, 2), title: `${h.hour}${h.offset}`,
                       values: {f: h.visitors.female, m: h.visitors.male, w: h.failed}})),
    [{key: "f", cls: "bar-f", name: "women"}, {key: "m", cls: "bar-m", name: "men"},
     {key: "w", cls: "bar-w", name: "failed checks", counted: false}], {values: true});
  const body = document.querySelector("#agegender tbody");
  const rows = Object.entries(d.age_gender).map(([age, g]) => row([age, g.female, g.male, g.female + g.male]));
  rows.push(row(["all", d.gender.female, d.gender.male, d.visitors], "total"));
  body.replaceChildren(...rows);
  const latest = document.querySelector("#latest tbody");
  latest.replaceChildren(...(d.latest.length ? d.latest.map(v => row([
    v.date === d.date ? v.at : `${v.date} ${v.at}`, v.age_group, v.gender, v.temperature]))
    : [row(["no visits yet", "", "", ""])]));
  const trend = (n, id, every) => {
    const days = d.trend.slice(-n);
    const sum = days.reduce((s, x) => s + x.visitors, 0);
    setText("avg" + n, `· ${sum} visitors, ${(sum / n).toFixed(1)} a day`);
    barChart(document.getElementById(id), days.map((x, i) => ({
      label: n > 7 ? x.date.slice(8) : x.date.slice(5), title: x.date, values: {t: x.visitors},
      cls: i === days.length - 1 ? "today" : ""})), [{key: "t", cls: "bar-t", name: "visitors"}],
      {values: n <= 7, every: every, height: 200, width: 560});
  };
  trend(7, "trend7", 1);
  trend(30, "trend30", 3);
  if (!window.lastToday) performance.mark("drawn");  // first numbers on screen (tools/bench_web.py)
  window.lastToday = d;  // what was drawn, for the browser test
}

async function refresh() {
  try {
    const r = await fetch("/api/today/page", {cache: "no-store"});
    if (r.status === 401) { location.href = "/login"; return; }
    if (r.ok) draw(await r.json());
  } catch (e) { setText("updated", "offline, retrying"); }
  setTimeout(refresh, REFRESH_MS);
}
refresh();
