// The dagml dashboard: reads /api/state, redraws on every server-sent event
// (/api/events). Hand-written, no dependencies, no build step.
"use strict";
(function () {
  const TOKEN_COOKIE = "dagml_token";
  const SVGNS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  // The token arrives once in the address (/?token=...): keep it in a cookie
  // and take it out of the address bar (and so out of the history).
  const here = new URL(window.location.href);
  const given = here.searchParams.get("token");
  if (given !== null) {
    setToken(given);
    here.searchParams.delete("token");
    window.history.replaceState(null, "", here.pathname + here.search + here.hash);
  }

  function setToken(t) {
    document.cookie = TOKEN_COOKIE + "=" + encodeURIComponent(t) + "; path=/; SameSite=Strict";
  }

  function esc(s) {
    return String(s === undefined || s === null ? "" : s).replace(/[&<>"']/g, (c) => (
      { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  function bytes(b) {
    const u = ["B", "KB", "MB", "GB", "TB"];
    let x = b, i = 0;
    while (x >= 1000 && i < u.length - 1) { x /= 1000; i++; }
    return (i === 0 ? x : x.toFixed(1)) + " " + u[i];
  }

  function secs(ms) {
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
  }

  class Unauthorized extends Error {}

  async function api(path) {
    const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
    if (r.status === 401) throw new Unauthorized(path);
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r;
  }

  let state = null;
  let planOf = null;
  let planBusy = false;
  let queued = false;
  let source = null;

  function showLogin(message) {
    $("main").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    setConn("token needed", "down");
    if (source) { source.close(); source = null; }
  }

  function setConn(text, cls) {
    const c = $("conn");
    c.textContent = text;
    c.className = "conn " + (cls || "");
  }

  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setToken($("token-input").value);
    $("login").hidden = true;
    $("main").hidden = false;
    start();
  });

  async function refresh() {
    try {
      const r = await api("/api/state");
      state = await r.json();
      render();
    } catch (e) {
      if (e instanceof Unauthorized) showLogin(given !== null || document.cookie.includes(TOKEN_COOKIE) ? "that token was refused" : "");
      else setConn("cannot reach the scheduler", "down");
    }
  }

  // Events come in bursts: redraw at most every 150 ms.
  function schedule() {
    if (queued) return;
    queued = true;
    setTimeout(() => { queued = false; refresh(); }, 150);
  }

  function connect() {
    if (source) source.close();
    source = new EventSource("/api/events");
    source.onopen = () => { setConn("live", "live"); schedule(); };
    source.onmessage = () => schedule();
    source.onerror = () => { setConn("reconnecting…", "down"); schedule(); };
  }

  // The run to show: the newest running one, else the newest.
  function currentRun() {
    if (!state || !state.runs.length) return null;
    return state.runs.find((r) => r.state === "running") || state.runs[0];
  }

  function render() {
    const run = currentRun();
    renderWorkers();
    renderHeader(run);
    renderPlan(run);
    renderStream(run);
    renderProgress(run);
    renderFailures();
    renderResults();
    renderServing();
  }

  function renderHeader(run) {
    if (!run) { $("run-title").textContent = "no run yet"; $("elapsed").textContent = ""; return; }
    $("run-title").textContent = run.id + " · " + run.file + " · " + run.state;
    $("elapsed").textContent = "elapsed " + secs(run.elapsed_ms);
  }

  function memoryBar(s) {
    const w = 180, h = 14;
    const limit = s.memory_limit;
    const scale = limit > 0 ? limit : Math.max(s.memory_used, 1);
    const x = (v) => Math.min(w, Math.round((v / scale) * w));
    let svg = '<svg width="' + w + '" height="' + h + '" class="mem"><rect width="' + w + '" height="' + h + '" fill="#eee"/>' +
      '<rect class="mem-used" width="' + x(s.memory_used) + '" height="' + h + '" fill="' + (s.paused ? "#e05252" : "#4a7fb5") + '"/>';
    if (s.spill_threshold > 0) svg += '<line class="spill" x1="' + x(s.spill_threshold) + '" x2="' + x(s.spill_threshold) + '" y1="0" y2="' + h + '" stroke="#d4a82a" stroke-width="2" stroke-dasharray="2,2"/>';
    if (s.pause_threshold > 0) svg += '<line class="pause" x1="' + x(s.pause_threshold) + '" x2="' + x(s.pause_threshold) + '" y1="0" y2="' + h + '" stroke="#e05252" stroke-width="2"/>';
    svg += "</svg>";
    const text = bytes(s.memory_used) + (limit > 0 ? " / " + bytes(limit) : " (no limit)");
    return svg + " " + esc(text);
  }

  function renderWorkers() {
    const rows = state.workers.map((w) => {
      const s = w.stats;
      const st = !w.alive ? "lost: " + w.lost_cause : s.draining ? "draining" : s.paused ? "paused" : "alive";
      return '<tr class="' + (w.alive ? "alive" : "lost") + '" data-worker="' + esc(w.name) + '">' +
        "<td>" + esc(w.name) + "</td><td>" + esc(w.address) + '</td><td class="state">' + esc(st) + "</td>" +
        '<td class="threads">' + s.busy_threads + "/" + s.threads + "</td><td>" + memoryBar(s) + "</td>" +
        "<td>" + bytes(s.spilled_bytes) + "</td><td>" + s.partitions + "</td>" +
        "<td>" + (w.alive ? secs(w.last_heartbeat_ms_ago) + " ago" : "—") + "</td></tr>";
    });
    $("workers").tBodies[0].innerHTML = rows.join("") || '<tr><td colspan="8" class="muted">no worker has registered</td></tr>';
  }

  function stepState(s) {
    if (s.failed > 0 && s.running === 0 && s.done < s.tasks) return "failed";
    if (s.done === s.tasks) return "done";
    if (s.running > 0 || s.done > 0) return "running";
    return "waiting";
  }

  const FILL = { waiting: "#d9d9d9", running: "#f6c343", done: "#6abf69", failed: "#e05252" };

  async function renderPlan(run) {
    $("plan-run").textContent = run ? run.id : "";
    if (!run || run.tasks.length === 0) return;
    if (planOf !== run.id) {
      if (planBusy) return;
      planBusy = true;
      try {
        const r = await api("/api/runs/" + encodeURIComponent(run.id) + "/plan.svg");
        $("plan").innerHTML = await r.text();
        planOf = run.id;
      } catch (e) {
        $("plan").innerHTML = '<p class="error">' + esc(e.message) + "</p>";
        return;
      } finally {
        planBusy = false;
      }
    }
    const svg = $("plan").querySelector("svg");
    if (!svg) return;
    const byStep = {};
    run.steps.forEach((s) => { byStep[s.step] = s; });
    svg.querySelectorAll("[data-node]").forEach((g) => {
      const s = byStep[g.getAttribute("data-node")];
      if (!s) return;
      const st = stepState(s);
      g.setAttribute("data-state", st);
      g.setAttribute("data-done", s.done);
      g.setAttribute("data-tasks", s.tasks);
      const shape = g.querySelector("rect, polygon, path, ellipse");
      if (shape) shape.style.fill = FILL[st];
      if (s.tasks > 1) {
        let t = g.querySelector("text.count");
        if (!t && shape) {
          const b = shape.getBBox();
          t = document.createElementNS(SVGNS, "text");
          t.setAttribute("class", "count");
          t.setAttribute("x", b.x + b.width - 4);
          t.setAttribute("y", b.y + 13);
          t.setAttribute("text-anchor", "end");
          g.appendChild(t);
        }
        if (t) t.textContent = s.done + "/" + s.tasks;
      }
    });
  }

  function renderStream(run) {
    const svg = $("stream");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const kinds = ["source", "transform", "split", "fit", "evaluate", "sink"];
    $("kinds").innerHTML = kinds.map((k) => '<span class="sw k-' + k + '"></span>' + k).join(" ");
    if (!run) return;
    // One row per worker thread: the workers' threads, and any slot an
    // attempt used (a worker lost since).
    const rows = [];
    const seen = {};
    const add = (wid, name, slot) => {
      const key = wid + "/" + slot;
      if (seen[key] === undefined) { seen[key] = rows.length; rows.push({ name: name, slot: slot, key: key }); }
    };
    state.workers.forEach((w) => { if (w.alive) for (let i = 0; i < w.stats.threads; i++) add(w.id, w.name, i); });
    run.attempts.forEach((a) => add(a.worker_id, a.worker, a.slot));
    const width = Math.max(svg.clientWidth || 1200, 400);
    const label = 150, rowH = 18, top = 4;
    const end = Math.max(run.elapsed_ms, 1);
    const xs = (ms) => label + ((width - label - 10) * ms) / end;
    svg.setAttribute("height", top + rows.length * rowH + 20);
    rows.forEach((r, i) => {
      const t = document.createElementNS(SVGNS, "text");
      t.setAttribute("x", 2);
      t.setAttribute("y", top + i * rowH + 13);
      t.textContent = r.name + " · thread " + r.slot;
      svg.appendChild(t);
    });
    run.attempts.forEach((a) => {
      const task = run.tasks[a.task];
      const i = seen[a.worker_id + "/" + a.slot];
      const x0 = xs(a.start_ms), x1 = xs(a.end_ms === null ? run.elapsed_ms : a.end_ms);
      const rect = document.createElementNS(SVGNS, "rect");
      rect.setAttribute("class", "bar k-" + task.step_kind);
      rect.setAttribute("x", x0);
      rect.setAttribute("y", top + i * rowH + 2);
      rect.setAttribute("width", Math.max(x1 - x0, 2));
      rect.setAttribute("height", rowH - 4);
      rect.setAttribute("data-task", task.name);
      rect.setAttribute("data-state", a.state);
      const title = document.createElementNS(SVGNS, "title");
      const took = a.end_ms === null ? "running" : secs(a.end_ms - a.start_ms);
      title.textContent = task.name + " on " + a.worker + " thread " + a.slot + " (" + took + ", " + a.state + ")";
      rect.appendChild(title);
      svg.appendChild(rect);
    });
    const axis = document.createElementNS(SVGNS, "text");
    axis.setAttribute("x", width - 10);
    axis.setAttribute("y", top + rows.length * rowH + 14);
    axis.setAttribute("text-anchor", "end");
    axis.textContent = secs(end);
    svg.appendChild(axis);
  }

  function renderProgress(run) {
    const body = $("progress").tBodies[0];
    if (!run) { body.innerHTML = ""; return; }
    body.innerHTML = run.steps.map((s) => {
      const pct = s.tasks ? Math.round((100 * s.done) / s.tasks) : 0;
      return '<tr data-step="' + esc(s.step) + '" data-state="' + stepState(s) + '"><td>' + esc(s.step) + "</td><td>" + esc(s.kind) + "</td>" +
        "<td>" + s.done + "/" + s.tasks + '</td><td><span class="bar-bg"><span class="bar-fg" style="width:' + pct + '%"></span></span></td>' +
        "<td>" + s.running + "</td><td>" + s.failed + "</td><td>" + (s.trees ? s.trees_done + "/" + s.trees : "") + "</td></tr>";
    }).join("");
  }

  function renderFailures() {
    const rows = [];
    state.runs.forEach((r) => {
      r.failures.forEach((f) => rows.push([r.id, f]));
      if (r.error) rows.push([r.id, r.error]);
    });
    $("failures").tBodies[0].innerHTML = rows.map(([id, f]) =>
      '<tr data-kind="' + esc(f.kind) + '"><td>' + esc(id) + "</td><td>" + esc(f.task || "(the run)") + "</td><td>" + esc(f.worker || "") +
      "</td><td>" + f.attempt + "</td><td>" + esc(f.kind) + "</td><td>" + esc(f.cause) + "</td><td>" +
      (f.retried ? "retried" : "gave up") + "</td><td>" + secs(f.at_ms) + "</td></tr>").join("") ||
      '<tr><td colspan="8" class="muted">none</td></tr>';
  }

  function scalarScores(scores) {
    const out = [];
    Object.keys(scores).forEach((k) => {
      const v = scores[k];
      if (typeof v === "number") out.push([k, v]);
      else if (v && typeof v === "object" && !Array.isArray(v) && (k === "macro_avg" || k === "weighted_avg")) {
        Object.keys(v).forEach((kk) => { if (typeof v[kk] === "number") out.push([k + "." + kk, v[kk]]); });
      }
    });
    return out;
  }

  function fmt(v) { return Number.isInteger(v) ? String(v) : v.toFixed(4); }

  function renderResults() {
    const done = state.runs.filter((r) => r.state !== "running");
    if (!done.length) { $("results").innerHTML = '<p class="muted">none yet</p>'; return; }
    $("results").innerHTML = done.map((r) => {
      let h = '<div class="run ' + r.state + '" data-run="' + esc(r.id) + '"><h3>' + esc(r.id) + " · " + esc(r.file) + " · " + esc(r.state) +
        " in " + secs(r.elapsed_ms) + "</h3>";
      r.evaluations.forEach((e) => {
        e.results.forEach((x) => {
          const sc = scalarScores(x.scores);
          h += '<table class="metrics" data-evaluation="' + esc(e.evaluation) + '"><caption>' + esc(e.evaluation) + ": " + esc(x.model) + " on " + esc(x.data) + "</caption>" +
            sc.map(([k, v]) => '<tr><th>' + esc(k) + '</th><td class="metric" data-metric="' + esc(k) + '">' + fmt(v) + "</td></tr>").join("") + "</table>";
        });
      });
      if (r.outputs.length) {
        h += "<p>outputs: " + r.outputs.map((o) => esc(o.output) + " → " + o.paths.map((p) => {
          const full = (p.startsWith("/") || !r.base_dir) ? p : r.base_dir.replace(/\/$/, "") + "/" + p;
          return '<a class="output" href="file://' + encodeURI(full) + '">' + esc(full) + "</a>";
        }).join(", ") + (o.rows !== null ? " (" + o.rows + " rows)" : "")).join("; ") + "</p>";
      }
      if (r.error) h += '<p class="error">' + esc(r.error.kind) + ": " + esc(r.error.cause) + "</p>";
      return h + "</div>";
    }).join("");
  }

  function lat(v) { return v === null || v === undefined ? "—" : v < 10 ? v.toFixed(2) + " ms" : secs(Math.round(v)); }

  // One row per shard model per worker holding it (the newest version of a
  // shard among live workers is the one front doors ask first: `current`).
  function renderServing() {
    const rows = [];
    (state.serving || []).forEach((m) => {
      m.shards.forEach((h, i) => {
        const cls = (h.alive ? "" : "lost ") + (h.current ? "current" : "older");
        rows.push('<tr class="' + cls + '" data-model="' + esc(m.model) + '" data-shard="' + esc(h.shard) + '" data-holder="' + esc(h.worker) +
          '" data-version="' + h.version + '" data-requests="' + h.requests + '">' +
          "<td>" + (i === 0 ? esc(m.model) : "") + "</td><td>" + esc(h.shard) + "</td><td>" + h.version + (h.current ? "" : " (older)") + "</td>" +
          '<td class="state">' + esc(h.worker) + (h.alive ? "" : " (lost)") + "</td><td>" + h.versions + "</td>" +
          "<td>" + h.requests + "</td><td>" + h.requests_per_s.toFixed(1) + "</td><td>" + lat(h.p50_ms) + "</td><td>" + lat(h.p99_ms) +
          "</td><td>" + lat(h.mean_ms) + '</td><td class="' + (h.errors ? "error" : "") + '">' + h.errors + "</td></tr>");
      });
    });
    $("serving").tBodies[0].innerHTML = rows.join("") ||
      '<tr><td colspan="11" class="muted">no shard model is served (dagml serve PIPELINE --scheduler trains and serves one)</td></tr>';
  }

  // `?events=off`: poll /api/state every second instead of holding an event
  // stream open (for tools that wait for the network to go idle, such as a
  // headless browser's --virtual-time-budget).
  const polling = here.searchParams.get("events") === "off";

  function start() {
    refresh();
    if (polling) setConn("polling", "live");
    else connect();
  }

  // Elapsed time and heartbeat ages move without events too.
  setInterval(schedule, 1000);
  start();
})();
