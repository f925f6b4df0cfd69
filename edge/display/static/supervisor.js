// Read-only supervisor view: the lane's state, alarms, device health and recent referral reasons.
"use strict";

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function render(data) {
  const sup = data.supervisor;
  const lane = data.lane;
  document.getElementById("screen").textContent = data.screen.screen;
  let state = "no connection to the daemon";
  if (data.connected && lane) {
    state = lane.state.toUpperCase() + " (" + lane.mode + ")";
    if (lane.alarm) state += " - ALARM: " + lane.alarm;
    if (lane.maintenance) state += " - closed (maintenance)";
  }
  document.getElementById("state").textContent = state;
  const reasons = document.getElementById("reasons");
  reasons.replaceChildren();
  const devices = document.getElementById("devices");
  devices.replaceChildren();
  const referrals = document.getElementById("referrals");
  referrals.replaceChildren();
  if (!sup) return;
  document.getElementById("gate").textContent = sup.gate_id;
  for (const r of sup.out_of_service_reasons) {
    const li = document.createElement("li");
    li.textContent = r;
    reasons.appendChild(li);
  }
  for (const [name, d] of Object.entries(sup.devices)) {
    const tr = document.createElement("tr");
    cell(tr, name);
    cell(tr, d.ok ? "OK" : "FAULT", d.ok ? "ok" : "fault");
    cell(tr, d.detail);
    devices.appendChild(tr);
  }
  for (const r of sup.referrals) {
    const tr = document.createElement("tr");
    cell(tr, new Date(r.at).toLocaleTimeString());
    cell(tr, r.mode);
    cell(tr, r.reasons.join(", "));
    referrals.appendChild(tr);
  }
  document.getElementById("totals").textContent =
    sup.outcomes_total + " recent sessions, " + sup.accepted_total + " accepted";
}

const source = new EventSource("/events");
source.addEventListener("supervisor", (e) => render(JSON.parse(e.data)));
