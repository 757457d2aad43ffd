// The KisFlow inspector: polls GET /api/flows every second and draws each
// flow as source -> steps -> sink with its live figures. A bearer token,
// when the server wants one, is given once as #token=... in the address;
// it is kept in this tab's sessionStorage and sent as a header.
"use strict";
(function () {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) { sessionStorage.setItem("kisflowToken", decodeURIComponent(m[1])); history.replaceState(null, "", location.pathname); }
  const token = sessionStorage.getItem("kisflowToken");

  async function api(method, path) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const r = await fetch(path, { method, headers, cache: "no-store" });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
    return body;
  }

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  }

  function num(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(2) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
    return Math.round(v).toString();
  }

  function age(t) {
    if (!t || t.startsWith("0001")) return "–";
    const s = (Date.now() - Date.parse(t)) / 1000;
    return s < 60 ? s.toFixed(0) + "s" : s < 3600 ? (s / 60).toFixed(0) + "m" : (s / 3600).toFixed(1) + "h";
  }

  function secs(s) {
    return s < 60 ? s.toFixed(1) + "s" : s < 3600 ? (s / 60).toFixed(0) + "m" : (s / 3600).toFixed(1) + "h";
  }

  const stat = (label, value, key) => el("span", { "data-stat": key }, label + " ", el("b", {}, value));

  function node(cls, title, lines) {
    return el("div", { class: "node " + cls }, el("b", {}, title), ...lines.map((l) => l instanceof Node ? l : el("div", {}, l)));
  }

  // A figure of a graph node, findable by its data-stat.
  const fig = (label, value, key) => el("div", { "data-stat": key }, label + " ", el("b", {}, value));

  // stepNode draws one step with its live figures; a step whose workers
  // were busy most of the last second is the one holding the flow back.
  function stepNode(st, g) {
    const busy = Math.min(100, Math.round(100 * st.busy_ratio / Math.max(g.workers, 1)));
    const lines = [
      fig("rows/s", num(st.rows_per_sec), "step-rate"),
      fig("in", num(st.in) + " → out " + num(st.out), "step-rows"),
      fig("errors", num(st.errors), "step-errors"),
      fig("retries", num(st.retries), "step-retries"),
      fig("dead", num(st.dead), "step-dead"),
      fig("in step", st.busy + "/" + g.workers + " batches · busy " + busy + "%", "step-busy"),
    ];
    if (st.windows) lines.push(fig("open windows", num(st.windows), "step-windows"));
    const n = node("step" + (busy >= 80 ? " hot" : ""), st.func, lines);
    n.dataset.step = st.func;
    return n;
  }

  // Each flow's section is made once and updated in place, so that a
  // click is not lost to a redraw.
  const sections = new Map();

  function section(f) {
    let sec = sections.get(f.name);
    if (sec) return sec;
    const badge = el("span", { class: "badge", "data-status": "" });
    const btn = el("button", { "data-action": "stop" }, "stop");
    btn.addEventListener("click", () => act(f.name, btn.dataset.action));
    sec = {
      root: el("section", { class: "flow", "data-flow": f.name }),
      badge, btn, graph: el("div", { class: "graph" }), stats: el("div", { class: "stats" }), error: el("div", { class: "error" }),
    };
    sec.root.append(el("h2", {}, f.name, badge, btn, el("button", { onclick: () => letters(f.name) }, "dead letters")), sec.graph, sec.stats, sec.error);
    sections.set(f.name, sec);
    document.getElementById("flows").append(sec.root);
    return sec;
  }

  function draw(f) {
    const s = f.stats, g = f.graph, sec = section(f);
    const nodes = [node("src", "source " + g.source, [
      fig("read", num(s.Read), "src-read"),
      fig("lag", f.lag == null ? "n/a" : num(f.lag), "src-lag"),
      fig("errors", num(s.SourceErrors), "src-errors"),
      fig("in flight", num(s.InFlight) + " (max " + num(s.MaxInFlight) + ")", "src-inflight"),
      "× " + g.workers + " workers, batches of " + (g.batch_size || "default")])];
    const steps = f.steps || [];
    g.steps.forEach((name, i) => {
      const st = steps[i] || { func: name, rows_per_sec: 0, in: 0, out: 0, errors: 0, retries: 0, dead: 0, busy: 0, busy_ratio: 0 };
      nodes.push(el("span", { class: "arrow" }, "→"), stepNode(st, g));
    });
    if (g.sink) {
      nodes.push(el("span", { class: "arrow" }, "→"), node("sink", "sink " + g.sink, [fig("out", num(s.Out), "sink-out"), fig("errors", num(s.SinkErrors), "sink-errors")]));
    }
    nodes.push(el("span", { class: "arrow" }, "⇢"), node("dlq", "dead letters", [fig("written", num(s.DeadLettered), "dlq-written"), g.dead_letter ? "connector " + g.dead_letter : "file"]));
    sec.graph.replaceChildren(...nodes);
    sec.badge.className = "badge " + f.status;
    sec.badge.textContent = f.status;
    const action = f.status === "running" || f.status === "waiting" ? "stop" : "start";
    if (sec.btn.dataset.action !== action) { sec.btn.dataset.action = action; sec.btn.textContent = action; }
    sec.btn.disabled = !["running", "waiting", "stopped", "finished", "failed"].includes(f.status);
    sec.stats.replaceChildren(
      stat("rows/s", num(f.rows_per_sec), "rate"),
      stat("committed", num(s.Committed), "committed"),
      stat("batches", num(s.Batches), "batches"),
      stat("in flight", num(s.InFlight) + " (max " + num(s.MaxInFlight) + ")", "inflight"),
      stat("retries", num(s.Retries), "retries"),
      stat("dead-lettered", num(s.DeadLettered), "dead"),
      stat("open windows", f.windows.open + (f.windows.kept ? " (kept)" : ""), "windows"),
      stat("state entries", num(f.state_entries), "state"),
      stat("checkpoint age", f.checkpoint_age_seconds == null ? "none yet" : secs(f.checkpoint_age_seconds), "checkpoint"),
      stat("started from", f.start.position || "–", "position"),
      stat("status for", age(f.since), "since"),
      stat("starts", f.starts, "starts"));
    sec.error.textContent = f.error || "";
  }

  async function act(name, what) {
    try { await api("POST", "/api/flows/" + encodeURIComponent(name) + "/" + what); }
    catch (e) { alert(what + " " + name + ": " + e.message); }
    poll();
  }

  async function letters(name) {
    const sec = document.getElementById("letters");
    document.getElementById("letters-flow").textContent = name;
    const rows = document.getElementById("letters-rows");
    rows.replaceChildren();
    sec.hidden = false;
    try {
      const r = await api("GET", "/api/flows/" + encodeURIComponent(name) + "/dead-letters?limit=200");
      document.getElementById("letters-where").textContent = r.total + " in " + r.file;
      for (const l of r.letters) {
        rows.append(el("tr", {}, el("td", {}, l.time || ""), el("td", {}, l.func || ""), el("td", {}, l.error || ""),
          el("td", {}, l.attempts ?? ""), el("td", { class: "payload" }, JSON.stringify(l.payload))));
      }
    } catch (e) {
      document.getElementById("letters-where").textContent = e.message;
    }
  }
  document.getElementById("letters-replay").addEventListener("click", async () => {
    const name = document.getElementById("letters-flow").textContent;
    try {
      const r = await api("POST", "/api/flows/" + encodeURIComponent(name) + "/dead-letters/replay");
      alert(r.replayed + " letters replayed, " + r.dead_lettered + " failed again");
    } catch (e) { alert("replay " + name + ": " + e.message); }
    letters(name);
  });
  document.getElementById("letters-close").addEventListener("click", () => { document.getElementById("letters").hidden = true; });

  let busy = false;
  async function poll() {
    if (busy) return;
    busy = true;
    try {
      const r = await api("GET", "/api/flows");
      r.flows.forEach(draw);
      // A flow no longer run (removed by run --watch) leaves the page.
      const names = new Set(r.flows.map((f) => f.name));
      for (const [name, sec] of sections) {
        if (!names.has(name)) { sec.root.remove(); sections.delete(name); }
      }
      document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString() + " · up " + Math.round(r.uptime_seconds) + "s";
    } catch (e) {
      document.getElementById("status").textContent = "cannot reach the API: " + e.message;
    } finally {
      busy = false;
    }
  }
  poll();
  setInterval(poll, 1000);
})();
