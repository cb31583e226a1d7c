// The ops page (R21): polls GET /api/v1/agents and redraws the fleet table.
// Text comes from the page (data-labels, from messages.py); values are set with
// textContent only, never as HTML.
"use strict";
(function () {
  const table = document.getElementById("fleet");
  if (!table) return;
  const L = JSON.parse(table.dataset.labels);
  const interval = Number(table.dataset.interval) || 3000;
  const body = table.querySelector("tbody");
  const department = document.getElementById("filter-department");
  const liveness = document.getElementById("filter-liveness");
  const search = document.getElementById("filter-text");
  const status = document.getElementById("fleet-status");
  const count = document.getElementById("fleet-count");
  let agents = [];
  // Decimals as archive_server/numbers.py writes them on the server: "12,5 GB", "−0,3 s".
  const decimal = (value, places) => new Intl.NumberFormat("sv-SE", {
    maximumFractionDigits: places, signDisplay: "negative"}).format(value);

  function cell(row, value, className) {
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "" : String(value);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function work(a) {
    return (a.in_progress || []).filter((c) => c.state !== "queued").map((c) => {
      const files = c.files_total ? ` ${c.files_done}/${c.files_total}` : "";
      return `${c.card_key} ${c.stage || c.state}${files}${c.reason ? " " + c.reason : ""}`;
    }).join("; ");
  }

  function refused(a) {
    const recent = (a.refused || []).slice(0, 3).map((r) => `${r.reason} (${r.files})`).join(", ");
    return a.refused_count ? `${a.refused_count}: ${recent}` : "";
  }

  function matches(a) {
    if (liveness.value && a.liveness !== liveness.value) return false;
    const q = search.value.trim().toLowerCase();
    if (!q) return true;
    return [a.agent_id, a.host, a.version, a.department].some((v) => v && v.toLowerCase().includes(q));
  }

  function draw() {
    const shown = agents.filter(matches);
    const rows = shown.map((a) => {
      const tr = document.createElement("tr");
      tr.className = `agent-row liveness-${a.liveness}`;
      tr.dataset.agent = a.agent_id;
      tr.dataset.liveness = a.liveness;
      const first = cell(tr, "");
      const link = document.createElement("a");
      link.href = `/ops/agents/${encodeURIComponent(a.agent_id)}`;
      link.textContent = a.agent_id;
      first.appendChild(link);
      if (a.host && a.host !== a.agent_id) {
        const host = document.createElement("div");
        host.className = "muted";
        host.textContent = a.host;
        first.appendChild(host);
      }
      cell(tr, a.department);
      cell(tr, L.liveness[a.liveness] || a.liveness, "liveness");
      cell(tr, a.heartbeat_age_s === null ? L.never : L.seconds_ago.replace("{n}", Math.round(a.heartbeat_age_s)));
      cell(tr, a.version);
      cell(tr, a.state);
      cell(tr, work(a));
      cell(tr, a.queue);
      const error = a.last_error ? `${a.last_error.code || ""} ${a.last_error.message || ""}`.trim() : "";
      cell(tr, error).title = error;
      cell(tr, refused(a));
      cell(tr, a.spool_free_bytes === null || a.spool_free_bytes === undefined ? ""
        : `${decimal(a.spool_free_bytes / 1e9, 1)} GB`);
      const days = a.certificate_days_left;
      cell(tr, days === null ? "" : days.toFixed(0), days !== null && days < 30 ? "warn" : "");
      const skew = a.clock_skew_s;
      cell(tr, skew === null ? "" : `${decimal(skew, 1)} s`, skew !== null && Math.abs(skew) > 60 ? "warn" : "");
      return tr;
    });
    body.replaceChildren(...rows);
    count.textContent = shown.length ? L.count.replace("{shown}", shown.length).replace("{total}", agents.length)
      : L.none;
  }

  async function poll() {
    const params = new URLSearchParams();
    if (department.value.trim()) params.set("department", department.value.trim().toUpperCase());
    try {
      const response = await fetch(`/api/v1/agents?${params}`, {headers: {Accept: "application/json"},
                                                                credentials: "same-origin"});
      if (!response.ok) throw new Error(String(response.status));
      agents = (await response.json()).agents;
      draw();
      status.textContent = `${L.updated} ${new Date().toLocaleTimeString("sv-SE")}`;
      status.className = "muted";
    } catch (e) {
      status.textContent = L.stale;
      status.className = "error";
    }
  }

  document.getElementById("fleet-filter").addEventListener("submit", (e) => { e.preventDefault(); poll(); });
  department.addEventListener("change", poll);
  liveness.addEventListener("change", draw);
  search.addEventListener("input", draw);
  poll();
  setInterval(poll, interval);
})();
