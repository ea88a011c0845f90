// fastmesh admin dashboard: polls dashboard.json every second and draws, per router and
// per client, requests/s, success rate and p50/p95/p99 latency on plain canvases.
//
// dashboard.json holds cumulative counters and latency-bucket counts (kept in C by the
// proxy); every number shown for "now" is the difference of the last two polls divided
// by the server-side time between them. The latest values are also written to data-*
// attributes (data-rps, data-success-rate, data-p50-ms, ...) so tests and scripts can
// read what the charts show.
"use strict";

(function () {
  const POLL_MS = 1000;
  const KEEP = 120;                       // points per chart (2 minutes at 1/s)
  const COLORS = { rps: "#3366cc", sr: "#2a9d5c", p50: "#2a9d5c", p95: "#e0a000", p99: "#d64545" };

  const params = new URLSearchParams(window.location.search);
  let selected = params.get("router");
  let prev = null;                        // the previous poll's document
  let polls = 0;
  const seriesById = new Map();           // scope id -> [{rps, sr, p50, p95, p99}]
  const views = new Map();                // router label -> its DOM pieces

  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children || []) e.appendChild(c);
    return e;
  }

  // ---- numbers ---------------------------------------------------------------------

  function sumScopes(list) {
    const out = { requests: 0, success: 0, failures: 0, pending: 0, connections: 0, buckets: null };
    for (const s of list) {
      for (const k of ["requests", "success", "failures", "pending", "connections"]) out[k] += s[k];
      if (!out.buckets) out.buckets = s.buckets.slice();
      else s.buckets.forEach((n, i) => { out.buckets[i] += n; });
    }
    if (!out.buckets) out.buckets = [];
    return out;
  }

  // Estimated q-quantile (ms) of bucket counts; the same rule as the server's
  // metrics (interpolate inside the bucket that holds the rank).
  function quantile(counts, bounds, q) {
    let total = 0;
    counts.forEach((n) => { total += n; });
    if (total <= 0) return null;
    const rank = q * total;
    let seen = 0;
    for (let i = 0; i < counts.length; i++) {
      const n = counts[i];
      if (n <= 0) continue;
      if (seen + n >= rank) {
        const lo = i > 0 ? bounds[i - 1] : 0;
        const hi = bounds[i] === null ? lo : bounds[i];
        return lo + (hi - lo) * Math.max(0, rank - seen) / n;
      }
      seen += n;
    }
    return null;
  }

  function rates(cur, old, dt, bounds) {
    const d = (k) => Math.max(0, cur[k] - (old ? old[k] : 0));
    const requests = d("requests");
    const done = d("success") + d("failures");
    const counts = cur.buckets.map((n, i) => Math.max(0, n - (old && old.buckets.length ? old.buckets[i] : 0)));
    return {
      rps: requests / dt,
      sr: done > 0 ? d("success") / done : null,
      p50: quantile(counts, bounds, 0.5),
      p95: quantile(counts, bounds, 0.95),
      p99: quantile(counts, bounds, 0.99),
      connections: cur.connections,
      pending: cur.pending,
      total: cur.requests,
    };
  }

  function remember(id, point) {
    let h = seriesById.get(id);
    if (!h) { h = []; seriesById.set(id, h); }
    h.push(point);
    if (h.length > KEEP) h.shift();
    return h;
  }

  const fmt = {
    rps: (v) => (v === null || v === undefined ? "–" : v >= 100 ? v.toFixed(0) : v.toFixed(1)),
    pct: (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(v >= 0.9995 ? 0 : 2) + "%"),
    ms: (v) => (v === null || v === undefined ? "–" : v >= 100 ? v.toFixed(0) + " ms" : v >= 1 ? v.toFixed(1) + " ms" : (v * 1000).toFixed(0) + " µs"),
    int: (v) => String(Math.round(v)),
  };

  // data-* attributes: plain numbers ("" when there is nothing to say yet)
  function setData(node, r) {
    const n = (v, digits) => (v === null || v === undefined ? "" : Number(v).toFixed(digits));
    node.dataset.rps = n(r.rps, 3);
    node.dataset.successRate = n(r.sr, 4);
    node.dataset.p50Ms = n(r.p50, 3);
    node.dataset.p95Ms = n(r.p95, 3);
    node.dataset.p99Ms = n(r.p99, 3);
    node.dataset.connections = n(r.connections, 0);
    node.dataset.pending = n(r.pending, 0);
    node.dataset.requests = n(r.total, 0);
  }

  // ---- charts ----------------------------------------------------------------------

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // series: [{values: [number|null], color}]; opts: {max, label: v => text, axis}
  function draw(canvas, series, opts) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 300, h = canvas.clientHeight || 100;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    let max = opts.max;
    if (max === undefined) {
      let m = 0;
      for (const s of series) for (const v of s.values) if (v !== null && v > m) m = v;
      max = niceMax(m);
    }
    const top = opts.axis ? 12 : 2, bottom = h - 2;
    const y = (v) => bottom - (bottom - top) * Math.min(1, v / max);
    if (opts.axis) {
      ctx.strokeStyle = "#eef0f4";
      ctx.lineWidth = 1;
      for (let i = 0; i <= 2; i++) {
        const gy = Math.round(top + (bottom - top) * i / 2) + 0.5;
        ctx.beginPath(); ctx.moveTo(0, gy); ctx.lineTo(w, gy); ctx.stroke();
      }
      ctx.fillStyle = "#6b7385";
      ctx.font = "10px system-ui, sans-serif";
      ctx.fillText(opts.label ? opts.label(max) : String(max), 2, 10);
    }
    const step = w / (KEEP - 1);
    for (const s of series) {
      const n = s.values.length;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < n; i++) {
        const v = s.values[i];
        const x = w - (n - 1 - i) * step;
        if (v === null || v === undefined) { pen = false; continue; }
        if (pen) ctx.lineTo(x, y(v)); else ctx.moveTo(x, y(v));
        pen = true;
      }
      ctx.stroke();
    }
  }

  const pick = (h, k) => h.map((p) => p[k]);

  // ---- DOM -------------------------------------------------------------------------

  function num(label) {
    const b = el("b", { text: "–" });
    return { node: el("div", { class: "num" }, [b, el("span", { text: label })]), b };
  }

  function chartBox(title, legend) {
    const canvas = el("canvas");
    const head = el("h3", { text: title });
    for (const [name, color] of legend || []) {
      const i = el("i"); i.style.background = color;
      const span = el("span", { class: "legend" }, [i, document.createTextNode(name)]);
      head.appendChild(span);
    }
    return { node: el("div", { class: "chart" }, [head, canvas]), canvas };
  }

  function routerView(label) {
    const nums = { rps: num("requests/s"), sr: num("success rate"), p50: num("p50"), p95: num("p95"),
                   p99: num("p99"), conns: num("open connections"), pending: num("pending"),
                   total: num("requests") };
    const charts = { rps: chartBox("requests/s"), sr: chartBox("success rate"),
                     lat: chartBox("latency", [["p50", COLORS.p50], ["p95", COLORS.p95], ["p99", COLORS.p99]]) };
    const tbody = el("tbody");
    const table = el("table", {}, [
      el("thead", {}, [el("tr", {}, ["client", "requests/s", "", "success", "p50", "p95", "p99",
        "connections", "pending", "requests"].map((t) => el("th", { text: t })))]),
      tbody]);
    const section = el("section", { class: "router panel", "data-router": label }, [
      el("h2", { text: "router " + label }),
      el("div", { class: "numbers" }, Object.values(nums).map((n) => n.node)),
      el("div", { class: "charts" }, Object.values(charts).map((c) => c.node)),
      el("div", { class: "clients" }, [el("h3", { text: "clients" }), table]),
    ]);
    return { section, nums, charts, tbody, rows: new Map() };
  }

  function clientRow(view, name) {
    const cells = {};
    const spark = el("canvas");
    const tds = [el("td", { class: "name", text: name })];
    for (const k of ["rps", "spark", "sr", "p50", "p95", "p99", "conns", "pending", "total"]) {
      const td = k === "spark" ? el("td", {}, [spark]) : el("td", { text: "–" });
      cells[k] = td;
      tds.push(td);
    }
    const tr = el("tr", { class: "client", "data-client": name }, tds);
    view.tbody.appendChild(tr);
    const row = { tr, cells, spark };
    view.rows.set(name, row);
    return row;
  }

  function renderNav(labels) {
    const nav = $("routers");
    const want = ["", ...labels].join("\n");
    if (nav.dataset.labels === want) return;
    nav.dataset.labels = want;
    nav.textContent = "";
    const link = (text, value) => {
      const a = el("a", { href: value ? "?router=" + encodeURIComponent(value) : "?", text });
      if ((selected || "") === value) a.classList.add("active");
      a.addEventListener("click", (ev) => {
        ev.preventDefault();
        selected = value || null;
        window.history.replaceState(null, "", a.getAttribute("href"));
        for (const x of nav.querySelectorAll("a")) x.classList.toggle("active", x === a);
        applySelection();
      });
      nav.appendChild(a);
    };
    link("all routers", "");
    for (const l of labels) link(l, l);
  }

  function applySelection() {
    const known = [...views.keys()];
    const show = selected && known.includes(selected) ? selected : null;
    for (const [label, v] of views) v.section.hidden = show !== null && label !== show;
    const dlgRouter = show || known[0] || "";
    $("dlg-router").textContent = dlgRouter;
    const r = (prev && prev.routers.find((x) => x.label === dlgRouter)) || null;
    $("dlg-dtab").textContent = r ? r.dtab.split(";").filter((s) => s.trim()).join(";\n") + ";" : "";
  }

  function showNumbers(nums, r) {
    nums.rps.b.textContent = fmt.rps(r.rps);
    nums.sr.b.textContent = fmt.pct(r.sr);
    nums.sr.b.className = r.sr === null ? "" : r.sr < 0.99 ? "bad" : "good";
    nums.p50.b.textContent = fmt.ms(r.p50);
    nums.p95.b.textContent = fmt.ms(r.p95);
    nums.p99.b.textContent = fmt.ms(r.p99);
    nums.conns.b.textContent = fmt.int(r.connections);
    nums.pending.b.textContent = fmt.int(r.pending);
    nums.total.b.textContent = fmt.int(r.total);
  }

  // ---- one poll ----------------------------------------------------------------------

  function update(data) {
    const main = $("main");
    renderNav(data.routers.map((r) => r.label));
    const dt = prev ? data.time - prev.time : 0;
    for (const router of data.routers) {
      let view = views.get(router.label);
      if (!view) {
        view = routerView(router.label);
        views.set(router.label, view);
        main.appendChild(view.section);
      }
      const before = prev && prev.routers.find((x) => x.label === router.label);
      const cur = sumScopes(router.servers);
      const r = dt > 0 ? rates(cur, before ? sumScopes(before.servers) : null, dt, data.bounds_ms)
        : { rps: null, sr: null, p50: null, p95: null, p99: null,
            connections: cur.connections, pending: cur.pending, total: cur.requests };
      showNumbers(view.nums, r);
      if (dt > 0) {
        setData(view.section, r);
        const h = remember("router:" + router.label, r);
        draw(view.charts.rps.canvas, [{ values: pick(h, "rps"), color: COLORS.rps }],
             { axis: true, label: (m) => fmt.rps(m) + "/s" });
        draw(view.charts.sr.canvas, [{ values: pick(h, "sr"), color: COLORS.sr }],
             { axis: true, max: 1, label: () => "100%" });
        draw(view.charts.lat.canvas, ["p50", "p95", "p99"].map((k) => ({ values: pick(h, k), color: COLORS[k] })),
             { axis: true, label: (m) => fmt.ms(m) });
      }
      for (const client of router.clients) {
        const row = view.rows.get(client.name) || clientRow(view, client.name);
        const old = before && before.clients.find((c) => c.name === client.name);
        if (client.endpoints) row.tr.title = "endpoints: " + (client.endpoints.join(", ") || "none");
        if (!(dt > 0)) {
          row.cells.total.textContent = fmt.int(client.requests);
          continue;
        }
        const cr = rates(client, old || null, dt, data.bounds_ms);
        setData(row.tr, cr);
        const h = remember("client:" + router.label + ":" + client.name, cr);
        row.cells.rps.textContent = fmt.rps(cr.rps);
        row.cells.sr.textContent = fmt.pct(cr.sr);
        row.cells.sr.className = cr.sr === null ? "" : cr.sr < 0.99 ? "bad" : "good";
        row.cells.p50.textContent = fmt.ms(cr.p50);
        row.cells.p95.textContent = fmt.ms(cr.p95);
        row.cells.p99.textContent = fmt.ms(cr.p99);
        row.cells.conns.textContent = fmt.int(cr.connections);
        row.cells.pending.textContent = fmt.int(cr.pending);
        row.cells.total.textContent = fmt.int(cr.total);
        draw(row.spark, [{ values: pick(h, "rps"), color: COLORS.rps }], {});
      }
    }
    const firstPoll = prev === null;
    prev = data;
    if (firstPoll) applySelection();
    polls += 1;
    document.body.dataset.polls = String(polls);
    const status = $("status");
    status.className = "status";
    status.textContent = "live · up " + Math.round(data.uptime_ms / 1000) + " s";
  }

  function poll() {
    fetch("dashboard.json", { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error("dashboard.json: HTTP " + r.status))))
      .then(update)
      .catch((err) => {
        // The proxy may be restarting; say so and keep polling.
        const status = $("status");
        status.className = "status error";
        status.textContent = "no data: " + err.message;
        document.body.dataset.lastError = String(err.message);
      })
      .finally(() => window.setTimeout(poll, POLL_MS));
  }

  // ---- delegator panel -------------------------------------------------------------

  function treeNode(node) {
    const li = el("li");
    const head = el("span", { class: node.type, text: node.type + (node.path ? " " + node.path : "") });
    li.appendChild(head);
    if (node.dentry) li.appendChild(el("span", { class: "dentry", text: "   (" + node.dentry.prefix + " => " + node.dentry.dst + ")" }));
    if (node.type === "leaf" && node.bound) {
      const a = node.bound.addr || {};
      const addrs = a.type === "bound" ? (a.addrs || []).map((x) => x.ip + ":" + x.port).join(", ") : a.type;
      li.appendChild(el("div", { class: "leaf", text: "  → " + node.bound.id + "  [" + addrs + "]" }));
    }
    if (node.message) li.appendChild(el("div", { class: "fail", text: "  " + node.message }));
    const kids = [];
    if (node.delegate) kids.push(node.delegate);
    if (node.alt) kids.push(...node.alt);
    if (node.union) kids.push(...node.union.map((u) => u.tree));
    if (node.tree) kids.push(node.tree);
    if (kids.length) li.appendChild(el("ul", {}, kids.map(treeNode)));
    return li;
  }

  $("dlg-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const label = $("dlg-router").textContent;
    const r = prev && prev.routers.find((x) => x.label === label);
    const out = $("dlg-out");
    fetch("delegator.json", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ namespace: label, dtab: r ? r.dtab : "", path: $("dlg-path").value }),
    }).then((resp) => resp.text().then((text) => {
      out.textContent = "";
      if (!resp.ok) { out.appendChild(el("div", { class: "fail", text: resp.status + " " + text })); return; }
      out.appendChild(el("ul", {}, [treeNode(JSON.parse(text))]));
    })).catch((err) => { out.textContent = "delegation failed: " + err.message; });
  });

  poll();
})();
