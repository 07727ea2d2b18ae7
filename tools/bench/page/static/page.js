// The live bench page (docs/bench.md, "The page"): plain browser features, nothing fetched
// from elsewhere. Everything arrives pushed on /events (server-sent events): a "hello" with
// the whole picture, then each change; a control POSTs to /api/{charger}/{topic} and shows
// the answer the page's server got back from the charger or the bench. With a site, site.js
// (loaded first) adds the site's own view.
"use strict";

const SERIES = [  // the plot, in A per phase; the right axis reads the same lines in kW
  {key: "current", label: "measured", color: "#2563eb", width: 2.5, fill: true},
  {key: "offered", label: "offered", color: "#1f8a4c", width: 1.5},
  {key: "cap", label: "cap", color: "#e67e22", width: 2, dash: [7, 4]},
  {key: "dynamic", label: "dynamic limit", color: "#8e44ad", width: 2, dash: [7, 4]},
  {key: "failsafe", label: "failsafe", color: "#c0392b", width: 2, dash: [2, 3]},
  {key: "site", label: "site share", color: "#16a085", width: 2, dash: [9, 3, 2, 3]},
  {key: "maxCurrent", label: "max current", color: "#9aa5b4", width: 1, dash: [1, 3]},
];
const EVENTS_SHOWN = 50;

const HISTORY_MS = 10 * 60000;  // what the server keeps, and so the longest window
const view = {chargers: {}, devices: [], selected: null, offset: 0, windowS: 300, faults: [],
              meterFaults: [], live: false, site: null, showSite: false};
const $ = (id) => document.getElementById(id);

// -- receiving

function connect() {
  const source = new EventSource("/events");
  source.onmessage = (m) => receive(JSON.parse(m.data));
  // EventSource reconnects by itself (the server asks for 1 s); the hello that follows
  // redraws everything, so nothing is lost but the wait.
  source.onerror = () => { view.live = false; setLink("lost", "reconnecting"); redraw(); };
}

function receive(msg) {
  if (msg.type === "hello") {
    view.live = true;
    setLink("live", "live (pushed)");
    view.offset = msg.now - Date.now();
    view.devices = msg.devices;
    view.faults = msg.faults;
    view.meterFaults = msg.meterFaults;
    view.chargers = msg.chargers;
    for (const id of view.devices) {
      const ch = view.chargers[id];
      ch.log = ch.events.map(logEntry);  // the server's events, in the order they came
    }
    if (!view.devices.includes(view.selected)) {
      view.selected = view.devices[0];
      view.showSite = !!msg.site;  // a site bench opens on the whole site
    }
    view.site = msg.site;
    if (!view.site) view.showSite = false;
    buildSite();
    buildTabs();
    buildFaults();
    redraw();
    return;
  }
  if (msg.type === "site") {
    if (!view.site) return;
    view.site.readings = msg.body;
    keepRecent(view.site.history, msg.sample);
    redraw();
    return;
  }
  const ch = view.chargers[msg.device];
  if (!ch) return;
  if (msg.type === "readings") {
    ch.readings = msg.body;
    keepRecent(ch.history, msg.sample);
  } else if (msg.type === "state") {
    ch.state = msg.body;
  } else if (msg.type === "events") {
    ch.log.push(logEntry(msg.body));
  } else if (msg.type === "availability") {
    if (msg.body !== ch.availability) {
      ch.log.push({t: now(), cls: "local", text: msg.device + " is " + msg.body +
                   (msg.body === "offline" ? " (its last will: power cut, or a lost link)" : "")});
    }
    ch.availability = msg.body;
  }
  if (ch.log.length > EVENTS_SHOWN) ch.log.splice(0, ch.log.length - EVENTS_SHOWN);
  redraw();
}

function keepRecent(history, sample) {
  history.push(sample);
  while (history.length && history[0].t < sample.t - HISTORY_MS) history.shift();
}

function logEntry(e) {
  // An event's own time; one sent before the board knew the time has none: when it came.
  const d = e.data || {};
  const parts = [e.type];
  for (const key of ["command", "actionId", "fault", "sessionId", "reason", "source", "meter",
                     "lastError"]) {
    if (d[key]) parts.push(d[key]);
  }
  if (typeof d.energy === "number") parts.push(fmt(d.energy, 3) + " kWh");
  return {t: Date.parse(e.timestamp) || now(), text: parts.join(" "),
          cls: /fault/.test(e.type) ? "fault" : ""};
}

function setLink(cls, text) {
  const el = $("link");
  el.className = "pill " + cls;
  el.textContent = text;
}

const now = () => Date.now() + view.offset;

// -- drawing

let pending = false;
function redraw() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; render(); });
}

function render() {
  $("site-view").hidden = !view.showSite;
  $("charger-view").hidden = view.showSite;
  renderTabs();
  if (view.showSite) return renderSite();
  const ch = view.chargers[view.selected];
  if (!ch) return;
  renderStatus(ch);
  renderMeters(ch);
  drawScope($("scope"), ch.readings);
  drawPlot($("plot"), ch);
  renderLegend(ch);
  renderLog(ch);
}

function fmt(x, digits = 2) {
  if (x === null || x === undefined) return "-";
  if (typeof x !== "number") return String(x);
  return x.toFixed(digits).replace(/\.?0+$/, "");
}

function renderStatus(ch) {
  const s = (ch.state && ch.state.state) || {};
  const settings = (ch.state && ch.state.settings) || {};
  const r = ch.readings;
  // Without the page's server there is no news: nothing shown is known to be true.
  const seen = view.live ? ch.availability || "never seen" : "unknown";
  const online = seen === "online";
  const avail = $("availability");
  avail.textContent = seen;
  avail.className = "pill " + seen;
  $("charger-name").textContent = view.selected;
  document.querySelector(".status-card").classList.toggle("stale", !online);
  const status = $("status");
  status.textContent = online ? (s.status || "-") : seen;
  status.className = "status " + (online ? s.status || "" : "offline");
  $("contactor").textContent = s.contactor || "-";
  $("fault").textContent = s.fault || "none";
  $("offered").textContent = s.offeredCurrent === undefined ? "-" : fmt(s.offeredCurrent, 1) + " A";
  $("power").textContent = s.currentPower === undefined ? "-" : fmt(s.currentPower) + " kW";
  $("energy").textContent = s.sessionEnergy === undefined ? "-" : fmt(s.sessionEnergy, 3) + " kWh";
  $("limited-by").textContent = s.limitedBy || "-";
  const cap = settings.max_charge_rate;
  $("cap").textContent = cap ? fmt(cap.value) + " kW" +
    (cap.effectiveMax !== undefined && cap.value > cap.effectiveMax
      ? " (at most " + fmt(cap.effectiveMax) + " kW here)" : "") : "-";
  $("current").textContent = r ? r.current.toFixed(1) + " A" : "-";
  renderSlot(ch.state && ch.state.lastAction);
  if (r) {
    const p = r.pilot;
    $("pilot-state").textContent = p.state;
    $("duty").textContent = p.dutyPercent >= 100 ? "100 % (x1: steady +12 V)"
      : p.dutyPercent <= 0 ? "0 % (F: steady -12 V)" : p.dutyPercent.toFixed(2) + " %";
    $("levels").textContent = signed(p.high) + " / " + signed(p.low) + " V";
    const ev = r.ev || {};
    $("vehicle").textContent = ev.connected
      ? "connected" + (ev.request ? ", asks" : "") + (ev.asleep ? ", asleep" : "") +
        ", max " + fmt(ev.maxCurrent, 1) + " A" : "not connected";
    syncControls(r);
  }
}

const signed = (v) => (v > 0 ? "+" : "") + v.toFixed(1);

// The Modbus meters (docs/meters.md): each as the charger reads it (its device read's
// "meters") and as the bench holds it (the pymodbus meter: its fault, what it was asked),
// with a button per fault. Only where the bench has meters.
function renderMeters(ch) {
  const bench = (ch.readings && ch.readings.meters) || {};
  const read = (ch.state && ch.state.meters) || {};
  const roles = Object.keys(bench);
  $("meters-card").hidden = !roles.length;
  const box = $("meters");
  const shown = box.dataset.roles || "";
  if (shown !== roles.join(",")) {  // the rows, once per set of meters
    box.dataset.roles = roles.join(",");
    box.replaceChildren(...roles.map(meterRow));
  }
  for (const role of roles) {
    const row = box.querySelector('[data-meter="' + role + '"]');
    const m = read[role], b = bench[role];
    const status = row.querySelector(".state");
    status.textContent = m ? m.status : "-";
    status.className = "state " + (m ? m.status : "");
    row.querySelector(".reading").textContent = !m ? "not in the charger's read yet"
      : (m.currents ? m.currents.map((a) => fmt(a, 1)).join(" / ") + " A, " + m.powerW +
         " W, " + fmt(m.energyWh / 1000, 1) + " kWh (" + m.ageMs + " ms old); " : "no reading; ") +
        Object.entries(m.counts).map(([k, v]) => k + " " + v).join(", ") +
        (m.lastError ? " (last error " + m.lastError +
          (m.lastException ? ", exception " + m.lastException : "") + ")" : "");
    row.querySelector(".bench").textContent = "bench: " + b.model + " at " + b.address +
      ", fault " + b.fault + ", " + b.requests + " requests, " + b.answered + " answered";
    for (const button of row.querySelectorAll("button")) {
      button.classList.toggle("active", button.dataset.fault !== "none" &&
                              button.dataset.fault === b.fault);
    }
  }
}

function meterRow(role) {
  const row = document.createElement("div");
  row.className = "meter";
  row.dataset.meter = role;
  const head = document.createElement("p");
  const name = document.createElement("b");
  name.textContent = role + " meter: ";
  const status = document.createElement("span");
  status.className = "state";
  const reading = document.createElement("span");
  reading.className = "reading";
  head.append(name, status, " ", reading);
  const bench = document.createElement("p");
  bench.className = "bench";
  const buttons = document.createElement("div");
  buttons.className = "row";
  buttons.replaceChildren(...view.meterFaults.concat(["none"]).map((fault) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.fault = fault;
    b.textContent = fault === "none" ? "clear" : fault;
    b.addEventListener("click", () => send("meter", {meter: role, fault}, $("meter-reply")));
    return b;
  }));
  row.append(head, bench, buttons);
  return row;
}

function renderSlot(action) {
  const el = $("slot");
  el.replaceChildren();
  if (!action) {
    el.textContent = "empty: no action yet";
    return;
  }
  const state = document.createElement("span");
  state.className = "state";
  state.textContent = action.state;
  el.append(action.command + " " + action.id + ": ", state,
            " at " + clock(action.updatedAt));
}

function clock(t) {
  if (t === null || t === undefined) return "--:--:--";
  const d = new Date(t);
  return isNaN(d) ? "--:--:--" : d.toLocaleTimeString("en-GB", {hour12: false});
}

function syncControls(r) {
  // The controls show what the bench has, not what was last clicked.
  for (const box of document.querySelectorAll("input[data-field]")) {
    const v = r.ev[box.dataset.field];
    if (typeof v === "boolean") box.checked = v;
  }
  $("plug").classList.toggle("on", !!r.ev.connected);
  $("unplug").classList.toggle("on", !r.ev.connected);
  for (const b of $("faults").querySelectorAll("button")) {
    b.classList.toggle("active", b.dataset.fault !== "none" && b.dataset.fault === r.fault);
  }
  $("power-cut").classList.toggle("active", r.power_on === false);
  $("power-on").classList.toggle("on", r.power_on !== false);
}

function sizeCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  return [g, w, h];
}

function drawScope(canvas, r) {
  const [g, w, h] = sizeCanvas(canvas);
  g.fillStyle = "#0c1712";
  g.fillRect(0, 0, w, h);
  const left = 34, top = 8, bottom = h - 18, right = w - 8;
  const volts = 15;
  const y = (v) => top + (bottom - top) * (volts - v) / (2 * volts);
  g.font = "11px system-ui, sans-serif";
  g.lineWidth = 1;
  for (let v = -12; v <= 12; v += 6) {  // 6 V per division
    g.strokeStyle = v === 0 ? "#2f5a45" : "#1c3529";
    g.beginPath(); g.moveTo(left, y(v)); g.lineTo(right, y(v)); g.stroke();
    g.fillStyle = "#6f9c84";
    g.fillText((v > 0 ? "+" : "") + v + " V", 2, y(v) + 4);
  }
  const periods = 3, period = (right - left) / periods;
  for (let i = 0; i <= periods * 4; i++) {  // 0.25 ms per division
    const x = left + i * period / 4;
    g.strokeStyle = i % 4 ? "#14271e" : "#1c3529";
    g.beginPath(); g.moveTo(x, top); g.lineTo(x, bottom); g.stroke();
  }
  g.fillStyle = "#6f9c84";
  g.fillText("1 ms per period", right - 86, h - 4);
  if (!r) return;
  const p = r.pilot;
  g.strokeStyle = "#ffd23f";
  g.lineWidth = 2;
  g.beginPath();
  if (p.dutyPercent <= 0 || p.dutyPercent >= 100 || p.high === p.low) {
    const level = p.dutyPercent <= 0 ? p.low : p.high;  // x1 or F: a steady level
    g.moveTo(left, y(level)); g.lineTo(right, y(level));
  } else {
    const on = period * p.dutyPercent / 100;
    g.moveTo(left, y(p.low));
    for (let i = 0; i < periods; i++) {
      const x = left + i * period;
      g.lineTo(x, y(p.high)); g.lineTo(x + on, y(p.high));
      g.lineTo(x + on, y(p.low)); g.lineTo(x + period, y(p.low));
    }
  }
  g.stroke();
  g.fillStyle = "#ffd23f";
  g.font = "600 12px system-ui, sans-serif";
  g.fillText("state " + p.state + "   " + fmt(p.dutyPercent) + " %", left + 6, top + 14);
  canvas.dataset.duty = p.dutyPercent;
}

function perKw(ch) {
  // A per kW at this installation: the right axis reads the current axis as power.
  const st = (ch.state && ch.state.settings) || {};
  const v = st.supply_voltage && st.supply_voltage.value;
  const n = st.phases && st.phases.value;
  return v && n ? 1000 / (v * n) : null;
}

function niceStep(range, count) {
  const raw = range / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

// The current axis: up to the installation's max current and a margin; a ceiling above it
// (a 50 kW cap) runs along the top edge and the legend says so.
const plotTop = (last) => Math.max(10, ((last && last.maxCurrent) || 32) * 1.15);

function drawPlot(canvas, ch) {
  const last = ch.history[ch.history.length - 1];
  drawTimeline(canvas, ch.history, SERIES, plotTop(last), perKw(ch));
  canvas.dataset.current = last ? last.current : "";
}

// Samples ({t, on, and a number per series key}) as steps over the chosen window, in A with
// the same lines in kW on the right (aPerKw, if known). A series with fill: true is filled
// (a measured current, with the ceilings drawn over it). on: false draws a grey band, named
// offLabel (a charger offline; for a site, its meter silent). The canvas's data-axis says
// where a value lands, so a test can read the drawn lines back.
function drawTimeline(canvas, history, series, maxA, aPerKw, offLabel = "offline") {
  const [g, w, h] = sizeCanvas(canvas);
  g.clearRect(0, 0, w, h);
  const left = 46, right = w - 56, top = 10, bottom = h - 22;
  const end = now(), span = view.windowS * 1000, start = end - span;
  const samples = history.filter((s) => s.t >= start - 5000);
  const x = (t) => left + (right - left) * (t - start) / span;
  const y = (a) => bottom - (bottom - top) * Math.min(a, maxA) / maxA;
  g.font = "11px system-ui, sans-serif";
  g.lineWidth = 1;
  // the charger offline (a power cut, a lost link): a grey band
  for (let i = 0; i < samples.length; i++) {
    if (samples[i].on) continue;
    let j = i;
    while (j + 1 < samples.length && !samples[j + 1].on) j++;
    const x0 = x(Math.max(samples[i].t, start));
    const x1 = x(j + 1 < samples.length ? samples[j + 1].t : end);
    g.fillStyle = "#dfe3ea";
    g.fillRect(x0, top, x1 - x0, bottom - top);
    g.fillStyle = "#687385";
    if (x1 - x0 > 8 + g.measureText(offLabel).width) g.fillText(offLabel, x0 + 4, top + 12);
    i = j;
  }
  const stepA = niceStep(maxA, 5);
  for (let a = 0; a <= maxA; a += stepA) {
    g.strokeStyle = a ? "#edf0f4" : "#b8c1cf";
    g.beginPath(); g.moveTo(left, y(a)); g.lineTo(right, y(a)); g.stroke();
    g.fillStyle = "#687385";
    g.fillText(fmt(a, 1) + " A", 4, y(a) + 4);
  }
  if (aPerKw) {
    const maxKw = maxA / aPerKw, stepKw = niceStep(maxKw, 5);
    for (let kw = stepKw; kw <= maxKw; kw += stepKw) {
      g.fillStyle = "#687385";
      g.fillText(fmt(kw, 2) + " kW", right + 6, y(kw * aPerKw) + 4);
    }
  }
  const tick = {30: 5, 60: 10, 300: 60, 600: 120}[view.windowS];  // seconds between labels
  for (let ago = 0; ago <= view.windowS; ago += tick) {
    const t = end - ago * 1000;
    g.fillStyle = "#687385";
    g.fillText(ago ? "-" + (tick < 60 ? ago + " s" : ago / 60 + " min") : "now",
               x(t) - (ago ? 18 : 20), h - 6);
    g.strokeStyle = "#f3f5f8";
    g.beginPath(); g.moveTo(x(t), top); g.lineTo(x(t), bottom); g.stroke();
  }
  g.save();
  g.beginPath(); g.rect(left, top - 2, right - left, bottom - top + 4); g.clip();
  for (const base of series.filter((s) => s.fill)) {
    g.fillStyle = base.color + "1a";  // 10 % of its colour
    g.beginPath();
    g.moveTo(x(samples.length ? samples[0].t : end), y(0));
    for (let i = 0; i < samples.length; i++) {
      const v = samples[i][base.key] || 0;
      g.lineTo(x(samples[i].t), y(v));
      g.lineTo(x(i + 1 < samples.length ? samples[i + 1].t : end), y(v));
    }
    g.lineTo(x(end), y(0));
    g.fill();
  }
  for (const s of series) {
    g.strokeStyle = s.color;
    g.lineWidth = s.width;
    g.setLineDash(s.dash || []);
    g.beginPath();
    let drawing = false;
    for (let i = 0; i < samples.length; i++) {
      const v = samples[i][s.key];
      if (typeof v !== "number") { drawing = false; continue; }
      const t1 = i + 1 < samples.length ? samples[i + 1].t : end;  // a step: held until the next
      if (!drawing) g.moveTo(x(samples[i].t), y(v)); else g.lineTo(x(samples[i].t), y(v));
      g.lineTo(x(t1), y(v));
      drawing = true;
    }
    g.stroke();
  }
  g.restore();
  g.setLineDash([]);
  canvas.dataset.points = samples.length;
  canvas.dataset.axis = JSON.stringify({left, right, top, bottom, maxA,
                                        ratio: window.devicePixelRatio || 1});
}

function renderLegend(ch) {
  const last = ch.history[ch.history.length - 1] || {};
  const s = (ch.state && ch.state.state) || {};
  const limits = s.limits || {};
  const k = perKw(ch);
  const top = plotTop(last);
  const above = (a) => typeof a === "number" && a > top ? ", above the plot" : "";
  const amps = (a) => typeof a === "number"
    ? fmt(a, 1) + " A" + (k ? " (" + fmt(a / k) + " kW)" : "") + above(a) : "-";
  const text = {
    current: amps(last.current),
    offered: amps(last.offered),
    cap: limits.maxChargeRate ? fmt(limits.maxChargeRate.value) + " kW" +
      (typeof last.cap === "number" ? " (" + fmt(last.cap, 1) + " A" + above(last.cap) + ")" : "") : "-",
    dynamic: limits.dynamic ? fmt(limits.dynamic.value) + " " + (limits.dynamic.unit === "kw" ? "kW" : "A") +
      " from " + limits.dynamic.source + " until " + clock(limits.dynamic.expiresAt) : "none",
    failsafe: limits.failsafe ? amps(last.failsafe) + ", the dynamic limit expired" : "not active",
    site: limits.site ? amps(limits.site.share) + (limits.site.fallback ? ", meter silent: fallback" : "") : "no site",
    maxCurrent: amps(last.maxCurrent),
  };
  fillLegend($("legend"), SERIES, text);
}

// Each series' line as drawn, its label and its present value (text: {key: value}).
function fillLegend(ul, series, text) {
  ul.replaceChildren(...series.map((ser) => {
    const li = document.createElement("li");
    const mark = document.createElement("i");
    mark.style.borderColor = ser.color;
    if (ser.dash) mark.className = "dashed";
    const value = document.createElement("b");
    value.textContent = text[ser.key];
    li.dataset.series = ser.key;
    li.append(mark, ser.label + " ", value);
    return li;
  }));
}

function renderLog(ch) {
  const ol = $("log");
  ol.replaceChildren(...ch.log.slice().reverse().map((e) => {  // the newest first
    const li = document.createElement("li");
    const time = document.createElement("time");
    time.textContent = clock(e.t);
    li.className = e.cls;
    li.append(time, e.text);
    return li;
  }));
  if (!ch.log.length) ol.textContent = "no events yet";
}

// -- several chargers: one tab each, after the site's (a site bench)

function buildTabs() {
  const nav = $("chargers");
  nav.hidden = view.devices.length < 2 && !view.site;
  const tab = (label, show) => {
    const b = document.createElement("button");
    b.type = "button";
    const dot = document.createElement("span");
    dot.className = "dot";
    b.append(dot, label);
    b.addEventListener("click", () => { show(); redraw(); });
    return b;
  };
  const tabs = view.devices.map((id) => {
    const b = tab(id, () => { view.selected = id; view.showSite = false; });
    b.dataset.device = id;
    return b;
  });
  if (view.site) {
    const b = tab("site " + view.site.id, () => { view.showSite = true; });
    b.dataset.site = view.site.id;
    tabs.unshift(b);
  }
  nav.replaceChildren(...tabs);
}

function renderTabs() {
  for (const b of $("chargers").querySelectorAll("button")) {
    const current = b.dataset.site ? view.showSite
      : !view.showSite && b.dataset.device === view.selected;
    b.setAttribute("aria-current", String(current));
    b.firstChild.className = "dot " + (b.dataset.site ? meterState()
      : view.chargers[b.dataset.device].availability || "");
  }
}

// -- controls

// A request to the selected charger, or to its bench; out shows the answer.
const send = (topic, body, out) =>
  post("/api/" + encodeURIComponent(view.selected) + "/" + topic, body, out);

async function post(path, body, out) {
  out.textContent = "sent, waiting for the answer ...";
  out.className = "reply";
  try {
    const r = await fetch(path, {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const answer = await r.json();
    out.textContent = answer.message;
    out.className = "reply " + (answer.ok ? "ok" : "refused");
  } catch (e) {
    out.textContent = "the page's server did not answer: is make sim still running?";
    out.className = "reply refused";
  }
}

const number = (input) => input.value === "" ? null : Number(input.value);

function buildFaults() {
  const box = $("faults");
  box.replaceChildren(...view.faults.map((name) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.fault = name;
    b.textContent = name === "none" ? "clear fault" : name.replace(/_/g, " ");
    b.addEventListener("click", () => send("fault", {fault: name}, $("fault-reply")));
    return b;
  }));
}

function wire() {
  const vehicle = $("vehicle-reply");
  $("plug").addEventListener("click", () =>
    send("ev", {connected: true, request: $("ev-request").checked}, vehicle));
  $("unplug").addEventListener("click", () => send("ev", {connected: false}, vehicle));
  for (const box of document.querySelectorAll("input[data-field]")) {
    box.addEventListener("change", () => send("ev", {[box.dataset.field]: box.checked}, vehicle));
  }
  $("ev-max-form").addEventListener("submit", (e) => {
    e.preventDefault();
    send("ev", {maxCurrent: number($("ev-max"))}, vehicle);
  });
  $("power-cut").addEventListener("click", () => send("power", {on: false}, $("power-reply")));
  $("power-on").addEventListener("click", () => send("power", {on: true}, $("power-reply")));
  $("cap-form").addEventListener("submit", (e) => {
    e.preventDefault();
    send("settings", {settings: {max_charge_rate: {value: number($("cap-value")), unit: "kw"}}},
         $("cap-reply"));
  });
  $("limit-form").addEventListener("submit", (e) => {
    e.preventDefault();
    send("limit", {limit: {value: number($("limit-value")), unit: $("limit-unit").value},
                   ttl: number($("limit-ttl")), source: "bench-page"}, $("limit-reply"));
  });
  $("limit-clear").addEventListener("click", () => send("limit", {limit: null}, $("limit-reply")));
  for (const command of ["charge", "idle"]) {
    $(command).addEventListener("click", () => {
      const body = {action: {command}};
      if ($("replace").checked) body.onConflict = "cancel_and_replace";
      send("commands", body, $("command-reply"));
    });
  }
  wireSite();
  for (const select of [$("window"), $("site-window")]) {  // one window for every plot
    select.addEventListener("change", (e) => {
      view.windowS = Number(e.target.value);
      $("window").value = $("site-window").value = e.target.value;
      redraw();
    });
  }
  window.addEventListener("resize", redraw);
  setInterval(redraw, 1000);  // the plot's time axis moves on between pushes
}

wire();
connect();
