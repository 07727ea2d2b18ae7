// The bench page's site view (docs/bench.md, "The page"), shown when make sim runs a site:
// the site current per phase against the fuse, and every charger's measured current and
// offer, over the same window as a charger's plot, with the household and the meter a person
// at the bench drives. It draws with page.js's timeline and legend; this file only defines
// (page.js, loaded after it, starts the page), so it can rely on page.js's functions.
"use strict";

// IEC 60446's L1 brown, L2 black, L3 grey: the colours an electrician reads as the phases.
const PHASE_COLORS = ["#8b5a2b", "#1d2430", "#8895a7"];
const FUSE = {key: "fuse", label: "fuse", color: "#c0392b", width: 2};
// One colour per charger (charger-1 in the measured blue of a charger's own plot); its
// measured current solid, its offer dashed in the same colour.
const CHARGER_COLORS = ["#2563eb", "#1f8a4c", "#e67e22", "#8e44ad", "#16a085", "#d35400"];

function siteSeries() {
  const phases = [];
  for (let i = 1; i <= view.site.phases; i++) {
    phases.push({key: "L" + i, label: "L" + i, color: PHASE_COLORS[i - 1], width: 2.5});
  }
  return phases.concat([FUSE]);
}

function chargerSeries() {
  return view.devices.flatMap((id, k) => {
    const color = CHARGER_COLORS[k % CHARGER_COLORS.length];
    return [{key: "current:" + id, label: id + " measured", color, width: 2.5},
            {key: "offered:" + id, label: id + " offered", color, width: 1.5, dash: [6, 3]}];
  });
}

const meterState = () => !view.live || !view.site.readings ? "unknown"
  : view.site.readings.meter ? "online" : "offline";

function renderSite() {
  const site = view.site, r = site.readings;
  $("charger-name").textContent = "site " + site.id;
  const meter = meterState();
  const pill = $("availability");
  pill.textContent = {online: "meter live", offline: "meter silent", unknown: "unknown"}[meter];
  pill.className = "pill " + meter;
  // The scale holds the fuse and any overload above it, so both are always in sight.
  const fuse = (r && r.fuse) || 0;
  let peak = fuse;
  for (const s of site.history) {
    for (let i = 1; i <= site.phases; i++) peak = Math.max(peak, s["L" + i] || 0);
  }
  drawTimeline($("site-plot"), site.history, siteSeries(), Math.max(10, peak * 1.15), null,
               "meter silent");
  drawTimeline($("chargers-plot"), site.history, chargerSeries(), Math.max(10, fuse * 1.15),
               null, "meter silent");
  const amps = (a) => typeof a === "number" ? fmt(a, 1) + " A" : "-";
  const siteText = {fuse: r ? fmt(r.fuse, 1) + " A per phase" : "-"};
  const chargerText = {};
  if (r) {
    r.currents.forEach((a, i) => {
      siteText["L" + (i + 1)] = amps(a) + (a > r.fuse ? ", over the fuse" : "") +
        " (household " + amps(r.household[i]) + ")";
    });
    for (const [id, c] of Object.entries(r.chargers)) {
      const on = c.powerOn === false ? ", power cut" : "";
      chargerText["current:" + id] = amps(c.current) + " on L" + c.phases.join("+L") + on;
      chargerText["offered:" + id] = amps(c.offered);
    }
  }
  fillLegend($("site-legend"), siteSeries(), siteText);
  fillLegend($("chargers-legend"), chargerSeries(), chargerText);
  $("site-plot").classList.toggle("over", !!(r && r.overFuse));
  $("meter-off").classList.toggle("active", meter === "offline");
  $("meter-on").classList.toggle("on", meter === "online");
}

// The household's inputs, one per phase of this site, filled with what the bench has now.
function buildSite() {
  const box = $("household-inputs");
  if (!view.site) return box.replaceChildren();
  const r = view.site.readings;
  const inputs = [];
  for (let i = 0; i < view.site.phases; i++) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "number";
    input.step = "any";
    input.min = "0";
    input.id = "household-L" + (i + 1);
    input.value = r ? r.household[i] : 0;
    label.append("L" + (i + 1) + " ", input, " A");
    inputs.push(label);
  }
  box.replaceChildren(...inputs);
}

function wireSite() {
  const select = $("window").cloneNode(true);  // the same choice as a charger's plot
  select.id = "site-window";
  $("site-window-slot").replaceWith(select);
  const out = $("site-reply");
  $("household-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const currents = [];
    for (let i = 1; i <= view.site.phases; i++) currents.push(number($("household-L" + i)));
    post("/api/site/household", {currents}, out);
  });
  $("meter-off").addEventListener("click", () => post("/api/site/meter", {on: false}, out));
  $("meter-on").addEventListener("click", () => post("/api/site/meter", {on: true}, out));
}
