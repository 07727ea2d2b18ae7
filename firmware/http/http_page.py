# The page at / (docs/http.md, "The page"): status, power, the cap and a field to change it,
# charge and idle, asking for the token once (kept in the browser's localStorage). It uses
# only the HTTP front's own endpoints and loads nothing from anywhere else (its
# Content-Security-Policy says so to the browser). Bytes constants: frozen into the image
# they stay in flash and cost no heap. The HTTP front writes HEADERS, then HEAD, the
# charger's id (HTML-escaped), TAIL.
HEADERS = (b"Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n"
           b"Connection: close\r\nX-Content-Type-Options: nosniff\r\n"
           b"Referrer-Policy: no-referrer\r\nContent-Security-Policy: default-src 'none'; "
           b"script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
           b"form-action 'none'; frame-ancestors 'none'; base-uri 'none'\r\n")

HEAD = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>Charger</title>
<style>
body{font:16px system-ui,sans-serif;margin:1.5em auto;max-width:26em;padding:0 1em;color:#222}
h1{font-size:1.3em}dl{display:grid;grid-template-columns:auto 1fr;gap:.3em 1em}
dt{color:#666}dd{margin:0;font-weight:600}button,input{font:inherit;padding:.4em .8em}
input[type=number]{width:6em}form,p{margin:.8em 0}#msg{min-height:1.4em}.hide{display:none}
</style></head>
<body data-id=\""""

TAIL = b"""\">
<h1>Charger <span id="name"></span></h1>
<form id="login" class="hide"><label>Token <input id="token" type="password"
 autocomplete="current-password" required></label> <button>Use it</button></form>
<div id="main" class="hide">
<dl><dt>Status</dt><dd id="status">-</dd><dt>Power</dt><dd id="power">-</dd>
<dt>Offered</dt><dd id="offered">-</dd><dt>Cap</dt><dd id="cap">-</dd>
<dt>Limited by</dt><dd id="limited">-</dd></dl>
<form id="capform"><label>Cap <input id="capkw" type="number" min="0" max="50" step="0.01"
 required> kW</label> <button>Set</button></form>
<p><button id="charge">Charge</button> <button id="idle">Idle</button></p>
</div>
<p id="msg" role="status"></p>
<script>
"use strict";
const ID = document.body.dataset.id, base = "/ev-charger/" + encodeURIComponent(ID);
const $ = (id) => document.getElementById(id), KEY = "evse-token";
let token = localStorage.getItem(KEY);
$("name").textContent = ID;
function say(text) { $("msg").textContent = text; }
function ask(why) {
  localStorage.removeItem(KEY); token = null;
  $("main").classList.add("hide"); $("login").classList.remove("hide"); say(why || "");
}
async function call(path, body) {
  const headers = {"Authorization": "Bearer " + token};
  if (body) headers["Content-Type"] = "application/json";
  const r = await fetch(base + path, {method: body ? "POST" : "GET", headers, cache: "no-store",
                                      body: body ? JSON.stringify(body) : undefined});
  if (r.status === 401) { ask("The charger refused that token."); throw new Error("401"); }
  const j = await r.json();
  if (!j.success) say(j.error.code + ": " + j.error.message);
  return j;
}
function show(d) {
  const s = d.state, cap = d.settings.max_charge_rate.value;
  $("status").textContent = s.status + (s.fault ? " (" + s.fault + ")" : "");
  $("power").textContent = s.currentPower.toFixed(2) + " kW";
  $("offered").textContent = s.offeredCurrent + " A, " + s.powerRateLimit + " kW";
  $("cap").textContent = cap + " kW";
  $("limited").textContent = s.limitedBy || "the vehicle";
  if (document.activeElement !== $("capkw") && !$("capkw").value) $("capkw").value = cap;
}
async function refresh() {
  if (!token) return;
  try { const j = await call(""); if (j.success) show(j.data); }
  catch (e) { if (e.message !== "401") say("The charger does not answer."); }
}
$("login").onsubmit = (e) => {
  e.preventDefault(); token = $("token").value; localStorage.setItem(KEY, token);
  $("login").classList.add("hide"); $("main").classList.remove("hide"); say(""); refresh();
};
$("capform").onsubmit = async (e) => {
  e.preventDefault();
  const cap = {value: Number($("capkw").value), unit: "kw"};
  const j = await call("/settings", {max_charge_rate: cap});
  if (j.success) { say("Cap set to " + $("capkw").value + " kW."); refresh(); }
};
for (const command of ["charge", "idle"]) {
  $(command).onclick = async () => {
    const j = await call("", {action: {command}, onConflict: "cancel_and_replace"});
    if (j.success) { say(command + ": " + j.data.state); refresh(); }
  };
}
if (token) { $("main").classList.remove("hide"); refresh(); } else ask();
setInterval(refresh, 2000);
</script>
</body></html>
"""
