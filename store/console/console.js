// The analyst console: a page of plain JavaScript over the store's /v1 API, no build step and
// no external resources. The token stays in this tab's sessionStorage; every request carries it,
// and the store's roles decide what it may do (a reader sees, an analyst labels, an operator
// promotes). Text from the store is always set as text, never as HTML.
"use strict";

const TOKEN_KEY = "sfe-console-token";
const state = { me: null, queue: null, sel: 0 };

// ---- small helpers -------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function status(text, error) {
  const s = document.getElementById("status");
  s.textContent = text || "";
  s.className = error ? "error" : "";
}

function fmt(x, digits) {
  if (x === null || x === undefined) return "–";
  return Number(x).toFixed(digits === undefined ? 3 : digits);
}

function money(x) {
  if (x === null || x === undefined) return "–";
  return Number(x).toLocaleString("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "–";
}

function entityText(entities) {
  return Object.entries(entities || {}).map(([k, v]) => k.replace(/_id$/, "") + " " + v).join(" · ");
}

function labelTag(label, by) {
  if (label === null || label === undefined) return el("span", { class: "muted" }, "unlabelled");
  return el("span", { class: "tag " + (label ? "fraud" : "notfraud") },
    (label ? "fraud" : "not fraud") + (by ? " · " + by : ""));
}

class StoreError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const opts = Object.assign({ headers: {} }, options || {});
  opts.headers = Object.assign({ authorization: "Bearer " + token }, opts.headers);
  let response;
  try {
    response = await fetch(path, opts);
  } catch (e) {
    throw new StoreError(0, "the store did not answer (" + e.message + "); is it running?");
  }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.me = null;
    throw new StoreError(401, "the store does not know this token: sign in again");
  }
  let body = null;
  const text = await response.text();
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!response.ok) {
    const why = body && body.error ? body.error : response.status + " " + response.statusText;
    throw new StoreError(response.status, why);
  }
  return body;
}

function may(what) {
  const role = state.me && state.me.role;
  if (what === "label") return role === "analyst" || role === "admin";
  if (what === "promote") return role === "operator" || role === "admin";
  return !!role;
}

// ---- sign in -------------------------------------------------------------------------------

function signIn(main, reason) {
  document.getElementById("who").textContent = "";
  document.getElementById("signout").hidden = true;
  const input = el("input", { type: "password", id: "token", size: 48, autocomplete: "off",
    placeholder: "the store token you were given" });
  const form = el("form", { class: "panel", id: "signin" },
    el("h1", {}, "Sign in"),
    el("p", { class: "muted" }, "Paste your store token. It stays in this browser tab only; " +
      "the store records your token's name with every label you make."),
    input, " ", el("button", { class: "primary", type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      await whoami();
      route();
    } catch (e) {
      status(e.message, true);
    }
  });
  main.replaceChildren(form);
  if (reason) status(reason, true);
  input.focus();
}

async function whoami() {
  state.me = await api("/v1/whoami");
  document.getElementById("who").textContent = state.me.name + " (" + state.me.role + ")";
  document.getElementById("signout").hidden = false;
}

// ---- review queue --------------------------------------------------------------------------

function queueParams() {
  const hash = location.hash.split("?")[1] || "";
  const p = new URLSearchParams(hash);
  if (!p.has("decision")) p.set("decision", "review");
  if (!p.has("labelled")) p.set("labelled", "no");
  if (!p.has("order")) p.set("order", "newest");
  return p;
}

async function showQueue(main) {
  const p = queueParams();
  const field = (name, control) => el("label", {}, name, control);
  const select = (name, options) => {
    const s = el("select", { name },
      options.map(([v, t]) => el("option", { value: v, selected: p.get(name) === v }, t)));
    return s;
  };
  const text = (name, placeholder, type) =>
    el("input", { name, value: p.get(name) || "", placeholder, type: type || "text", size: 14 });
  const form = el("form", { class: "panel filters", id: "filters" },
    field("Decision", select("decision", [["review", "review"], ["block", "block"],
      ["review,block", "review and block"]])),
    field("Labelled", select("labelled", [["no", "not yet"], ["yes", "labelled"], ["any", "any"]])),
    field("Order", select("order", [["newest", "newest first"], ["riskiest", "riskiest first"]])),
    field("Since (UTC)", text("since", "2026-12-01T00:00:00Z")),
    field("Until (UTC)", text("until", "")),
    field("Model version", text("model_version", "any")),
    field("Rule", text("rule", "any")),
    el("button", { type: "submit" }, "Apply"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim()) q.set(k, String(v).trim());
    location.hash = "#/queue?" + q.toString();
  });
  const keys = el("p", { class: "keys" },
    el("kbd", {}, "j"), " / ", el("kbd", {}, "k"), " move · ",
    el("kbd", {}, "f"), " fraud · ", el("kbd", {}, "n"), " not fraud · ",
    el("kbd", {}, "o"), " or ", el("kbd", {}, "Enter"), " open",
    may("label") ? "" : " — your role may look but not label");
  const holder = el("div", { id: "queue" }, el("p", { class: "muted" }, "Loading…"));
  main.replaceChildren(el("h1", {}, "Review queue"), form, keys, holder);
  state.queue = { params: p, rows: [], next: null };
  state.sel = 0;
  await loadMore();
}

async function loadMore() {
  const q = state.queue;
  const p = new URLSearchParams(q.params);
  p.set("per_page", "50");
  if (q.next) p.set("cursor", q.next);
  const started = performance.now();
  try {
    const page = await api("/v1/review?" + p.toString());
    q.rows = q.rows.concat(page.transactions);
    q.next = page.next_cursor;
    renderQueue();
    status(q.rows.length + " shown" + (q.next ? ", more below" : "") + " · " +
      Math.round(performance.now() - started) + " ms");
  } catch (e) {
    failed(e, document.getElementById("queue"));
  }
}

function renderQueue() {
  const q = state.queue;
  const holder = document.getElementById("queue");
  if (!holder) return;
  if (q.rows.length === 0) {
    holder.replaceChildren(el("div", { class: "empty", id: "queue-empty" },
      "Nothing to review with these filters. Transactions the edges send to review appear " +
      "here within seconds of being scored."));
    return;
  }
  const head = el("tr", {}, ["Scored (UTC)", "Amount", "Transaction", "Risk", "P(fraud)",
    "Decision", "Why", "Rules", "Label"].map((h, i) =>
      el("th", { class: i === 1 || i === 3 || i === 4 ? "num" : "" }, h)));
  const body = el("tbody", {}, q.rows.map((r, i) => el("tr", {
    "data-id": r.id, class: i === state.sel ? "sel" : "",
    onclick: () => { state.sel = i; renderQueue(); },
    ondblclick: () => { location.hash = "#/tx/" + r.id; },
  },
  el("td", {}, when(r.scored_at)),
  el("td", { class: "num" }, money(r.amount)),
  el("td", {}, el("a", { href: "#/tx/" + r.id }, r.legacy_id !== null ? String(r.legacy_id) : r.id.slice(-12)),
    el("div", { class: "muted" }, entityText(r.entities) || r.model_version)),
  el("td", { class: "num" }, fmt(r.risk_score)),
  el("td", { class: "num" }, fmt(r.fraud_probability)),
  el("td", {}, el("span", { class: "tag " + (r.decision || "") }, r.decision || "–")),
  el("td", {}, r.decision_reason || ""),
  el("td", {}, r.rules_matched.map((x) => el("span", { class: "tag" }, x))),
  el("td", { class: "label" }, labelTag(r.label, r.labelled_by)))));
  const table = el("table", { id: "queue-table" }, el("thead", {}, head), body);
  const more = q.next ? el("button", { id: "more", onclick: loadMore }, "Load more") : null;
  holder.replaceChildren(table, more);
  const selected = body.children[state.sel];
  if (selected) selected.scrollIntoView({ block: "nearest" });
}

async function labelSelected(fraud) {
  const q = state.queue;
  const row = q && q.rows[state.sel];
  if (!row) return;
  if (!may("label")) {
    status("labelling needs the analyst role; you are signed in as " + state.me.role, true);
    return;
  }
  // Move on at once, so that keys pressed quickly label consecutive rows; the row shows its
  // label when the store has stored it.
  if (state.sel < q.rows.length - 1) state.sel += 1;
  renderQueue();
  try {
    const saved = await api("/v1/labels", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ transaction_id: row.id, label: fraud }),
    });
    row.label = saved.label;
    row.labelled_by = saved.labelled_by;
    renderQueue();
    status("labelled " + row.id.slice(0, 8) + " " + (fraud ? "fraud" : "not fraud"));
  } catch (e) {
    status("the label of " + row.id.slice(0, 8) + " was not saved: " + e.message, true);
  }
}

// ---- one transaction -----------------------------------------------------------------------

function contributionChart(t) {
  // The words of the answer when the edge sent them, else the forest's TreeSHAP values
  // (negative = towards anomalous, so the sign is flipped to read "towards risk").
  let bars;
  if (t.risk_factors.length > 0) {
    bars = t.risk_factors.map((f) => ({ name: f.description || f.feature, v: -f.contribution,
      raw: f.contribution }));
    if (t.fraud_probability !== null) bars.forEach((b) => { b.v = b.raw; });
  } else {
    bars = Object.entries(t.explanation).map(([k, v]) => ({ name: k, v: -v, raw: v }));
  }
  bars.sort((a, b) => Math.abs(b.v) - Math.abs(a.v));
  bars = bars.slice(0, 12);
  if (bars.length === 0) {
    return el("p", { class: "muted" }, "This prediction was not explained (the caller asked " +
      "for explain=false), so there are no contributions to draw.");
  }
  const width = 760, row = 26, left = 300, mid = left + (width - left) / 2;
  const max = Math.max(...bars.map((b) => Math.abs(b.v)), 1e-9);
  const scale = (width - left - 120) / 2 / max;
  const chart = svg("svg", { width, height: bars.length * row + 24, role: "img",
    "aria-label": "contribution of each feature", id: "explain-chart" });
  chart.append(svg("line", { x1: mid, x2: mid, y1: 0, y2: bars.length * row, stroke: "#999" }));
  bars.forEach((b, i) => {
    const y = i * row + 4, w = Math.abs(b.v) * scale;
    chart.append(svg("text", { x: left - 8, y: y + 14, "text-anchor": "end" }, b.name));
    chart.append(svg("rect", { x: b.v >= 0 ? mid : mid - w, y, width: Math.max(w, 1), height: row - 8,
      fill: b.v >= 0 ? "#c0352b" : "#2e7d4f" }));
    chart.append(svg("text", { x: b.v >= 0 ? mid + w + 4 : mid - w - 4, y: y + 14,
      "text-anchor": b.v >= 0 ? "start" : "end" }, fmt(Math.abs(b.v), 3)));
  });
  chart.append(svg("text", { x: mid + 6, y: bars.length * row + 18 }, "towards fraud →"));
  chart.append(svg("text", { x: mid - 6, y: bars.length * row + 18, "text-anchor": "end" }, "← towards normal"));
  return chart;
}

async function showTransaction(main, id) {
  main.replaceChildren(el("p", { class: "muted" }, "Loading…"));
  let t;
  try {
    t = await api("/v1/transactions/" + encodeURIComponent(id));
  } catch (e) {
    failed(e, main);
    return;
  }
  const facts = (pairs) => el("dl", { class: "facts" },
    pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const features = Object.entries(t.features).sort(([a], [b]) => a.localeCompare(b));
  const comment = el("textarea", { id: "comment", rows: 2, cols: 50,
    placeholder: "comment (optional)" }, t.label_state && t.label_state.comment || "");
  const labelNow = async (fraud) => {
    try {
      const saved = await api("/v1/labels", { method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ transaction_id: t.id, label: fraud, comment: comment.value }) });
      status("labelled " + (saved.label ? "fraud" : "not fraud") + " by " + saved.labelled_by);
      showTransaction(main, id);
    } catch (e) {
      status("the label was not saved: " + e.message, true);
    }
  };
  const ls = t.label_state;
  main.replaceChildren(
    el("p", {}, el("a", { href: "#/queue" }, "← queue")),
    el("h1", {}, "Transaction " + (t.legacy_id !== null ? t.legacy_id : t.id)),
    el("div", { class: "grid" },
      el("div", { class: "panel" }, facts([
        ["Id", t.id], ["Scored", when(t.scored_at)], ["Amount", money(t.amount)],
        ["Whose", entityText(t.entities) || "the payload named no card, customer or merchant"],
        ["Decision", el("span", { class: "tag " + (t.decision || "") }, t.decision || "–")],
        ["Why", t.decision_reason || "–"],
        ["Rules", t.rules_matched.length ? t.rules_matched.join(", ") : "none"],
        ["Probability of fraud", fmt(t.fraud_probability)],
        ["Risk score", fmt(t.risk_score)], ["Anomaly score", fmt(t.anomaly_score, 4)],
        ["Model", t.model_version], ["Edge", (t.edge_instance || "–") + (t.region ? " · " + t.region : "")],
        ["Shadow", t.shadow ? t.shadow.model_version + ": " + fmt(t.shadow.anomaly_score, 4) +
          (t.shadow.decision ? " · " + t.shadow.decision : "") : "none"],
      ])),
      el("div", { class: "panel", id: "labelling" },
        el("h2", {}, "Label"),
        el("p", {}, "Now: ", labelTag(ls && ls.label, ls && ls.labelled_by),
          ls ? el("span", { class: "muted" }, " · " + when(ls.labelled_at)) : ""),
        may("label") ? [comment, el("p", {},
          el("button", { class: "fraud", id: "label-fraud", onclick: () => labelNow(true) }, "Fraud"), " ",
          el("button", { class: "ok", id: "label-ok", onclick: () => labelNow(false) }, "Not fraud"))]
          : el("p", { class: "muted" }, "Labelling needs the analyst role."))),
    el("div", { class: "panel" }, el("h2", {}, "Why the model scored it so"), contributionChart(t)),
    t.card_recent.length ? el("div", { class: "panel" },
      el("h2", {}, "This card's recent transactions"),
      el("table", { id: "card-recent" }, el("thead", {}, el("tr", {}, ["Scored (UTC)", "Amount", "Risk",
        "P(fraud)", "Decision", "Label"].map((h) => el("th", {}, h)))),
      el("tbody", {}, t.card_recent.map((r) => el("tr", { class: r.id === t.id ? "sel" : "" },
        el("td", {}, el("a", { href: "#/tx/" + r.id }, when(r.scored_at))),
        el("td", { class: "num" }, money(r.amount)), el("td", { class: "num" }, fmt(r.risk_score)),
        el("td", { class: "num" }, fmt(r.fraud_probability)),
        el("td", {}, r.decision || "–"), el("td", {}, labelTag(r.label, r.labelled_by))))))) : null,
    el("div", { class: "panel" }, el("h2", {}, "Features the model read"),
      el("p", { class: "muted" }, "Velocity features (counts and sums per card, merchant…) are " +
        "the entity's recent activity as the edge saw it."),
      el("table", {}, el("tbody", {}, features.map(([k, v]) =>
        el("tr", {}, el("td", {}, k), el("td", { class: "num" }, fmt(v, 4))))))));
}

// ---- models --------------------------------------------------------------------------------

function histogramChart(h, live, shadow) {
  const width = 640, height = 220, pad = 36, n = h.live.length;
  const max = Math.max(...h.live, ...h.shadow, 1);
  const bw = (width - 2 * pad) / n;
  const chart = svg("svg", { width, height, role: "img", id: "score-histogram",
    "aria-label": "score distributions of the live and shadow models" });
  for (let i = 0; i < n; i++) {
    const x = pad + i * bw;
    for (const [side, color, off] of [[h.live, "#2759c7", 0], [h.shadow, "#e08a1e", bw / 2]]) {
      const bh = (height - 2 * pad) * side[i] / max;
      chart.append(svg("rect", { x: x + off, y: height - pad - bh, width: Math.max(bw / 2 - 1, 1),
        height: bh, fill: color }));
    }
  }
  chart.append(svg("text", { x: pad, y: height - 10 }, fmt(h.edges[0], 2)));
  chart.append(svg("text", { x: width - pad, y: height - 10, "text-anchor": "end" }, fmt(h.edges[n], 2)));
  chart.append(svg("text", { x: width / 2, y: height - 10, "text-anchor": "middle" },
    "anomaly score (below 0 = anomalous)"));
  chart.append(svg("rect", { x: pad, y: 8, width: 10, height: 10, fill: "#2759c7" }));
  chart.append(svg("text", { x: pad + 14, y: 17 }, "live " + live));
  chart.append(svg("rect", { x: pad + 220, y: 8, width: 10, height: 10, fill: "#e08a1e" }));
  chart.append(svg("text", { x: pad + 234, y: 17 }, "shadow " + shadow));
  return chart;
}

function driftChart(drift) {
  const hours = drift.hours.slice().reverse();
  if (hours.length === 0) return el("p", { class: "muted" }, "No transactions in the window.");
  const width = 640, height = 200, pad = 36;
  const psiMax = Math.max(0.25, ...hours.map((h) => h.psi || 0));
  const step = (width - 2 * pad) / Math.max(hours.length - 1, 1);
  const chart = svg("svg", { width, height, role: "img", id: "drift-chart",
    "aria-label": "PSI and alert rate per hour" });
  const y = (v, max) => height - pad - (height - 2 * pad) * v / max;
  // 0.1 and 0.25: the usual "watch" and "act" lines of the population stability index.
  for (const [v, label] of [[0.1, "PSI 0.1"], [0.25, "PSI 0.25"]]) {
    chart.append(svg("line", { x1: pad, x2: width - pad, y1: y(v, psiMax), y2: y(v, psiMax),
      stroke: "#ddd", "stroke-dasharray": "4 3" }));
    chart.append(svg("text", { x: width - pad + 2, y: y(v, psiMax) + 4 }, label));
  }
  const line = (values, max, color) => svg("polyline", { fill: "none", stroke: color, "stroke-width": 2,
    points: values.map((v, i) => (pad + i * step) + "," + y(v || 0, max)).join(" ") });
  chart.append(line(hours.map((h) => h.psi), psiMax, "#c0352b"));
  chart.append(line(hours.map((h) => h.alert_rate), 1, "#2759c7"));
  chart.append(svg("text", { x: pad, y: 14, fill: "#c0352b" }, "PSI per hour (red), alert rate per hour (blue, 0–100 %)"));
  chart.append(svg("text", { x: pad, y: height - 10 }, when(hours[0].hour)));
  chart.append(svg("text", { x: width - pad, y: height - 10, "text-anchor": "end" },
    when(hours[hours.length - 1].hour)));
  return chart;
}

async function showModels(main) {
  main.replaceChildren(el("h1", {}, "Models"), el("p", { class: "muted" }, "Loading…"));
  let channels, history;
  try {
    [channels, history] = await Promise.all([api("/v1/models/channels"),
      api("/v1/models/channels/history")]);
  } catch (e) {
    failed(e, main);
    return;
  }
  const live = channels.live && channels.live.version;
  const shadow = channels.shadow && channels.shadow.version;
  const parts = [el("h1", {}, "Models"),
    el("div", { class: "panel", id: "channels" }, el("dl", { class: "facts" },
      el("dt", {}, "Live"), el("dd", { id: "live-version" }, live || "the edges' embedded model"),
      el("dt", {}, "Shadow"), el("dd", { id: "shadow-version" }, shadow || "none")),
    may("promote") ? el("p", {},
      shadow ? el("button", { class: "primary", id: "promote", onclick: () => promote(shadow) },
        "Promote " + shadow + " to live") : null, " ",
      el("button", { id: "rollback", onclick: rollback }, "Roll back live")) : null)];
  if (live && shadow) {
    try {
      const c = await api("/v1/models/compare?live=" + encodeURIComponent(live) +
        "&shadow=" + encodeURIComponent(shadow));
      parts.push(el("div", { class: "panel", id: "comparison" }, el("h2", {}, "Live against shadow"),
        el("p", {}, c.transactions + " transactions scored by both · alert rate live " +
          fmt(c.live_alert_rate * 100, 1) + " % / shadow " + fmt(c.shadow_alert_rate * 100, 1) +
          " % · agreement " + fmt(c.agreement * 100, 1) + " % · rank correlation " +
          fmt(c.rank_correlation, 3)),
        c.decisions ? el("p", {}, "Review rate live " + fmt(c.decisions.live.review * 100, 1) +
          " % / shadow " + fmt(c.decisions.shadow.review * 100, 1) + " %; block " +
          fmt(c.decisions.live.block * 100, 1) + " % / " + fmt(c.decisions.shadow.block * 100, 1) + " %") : null,
        c.score_histogram ? histogramChart(c.score_histogram, live, shadow)
          : el("p", { class: "muted" }, "No transactions scored by both yet."),
        el("h2", {}, "Where they disagree most"),
        el("table", {}, el("thead", {}, el("tr", {}, ["Transaction", "Scored", "Live", "Shadow", "Rank gap"]
          .map((h) => el("th", {}, h)))),
        el("tbody", {}, c.disagreements.map((d) => el("tr", {},
          el("td", {}, el("a", { href: "#/tx/" + d.transaction_id }, "…" + d.transaction_id.slice(-12))),
          el("td", {}, when(d.scored_at)),
          el("td", {}, fmt(d.live_score, 4) + (d.live_decision ? " · " + d.live_decision : "")),
          el("td", {}, fmt(d.shadow_score, 4) + (d.shadow_decision ? " · " + d.shadow_decision : "")),
          el("td", { class: "num" }, fmt(d.rank_gap, 3))))))));
    } catch (e) {
      parts.push(el("p", { class: "muted" }, "No comparison: " + e.message));
    }
  }
  if (live) {
    try {
      const d = await api("/v1/models/" + encodeURIComponent(live) + "/drift?hours=48");
      parts.push(el("div", { class: "panel", id: "drift" }, el("h2", {}, "Drift of the live model, last 48 hours"),
        el("p", {}, "overall PSI " + fmt(d.overall.psi, 3) + " · alert rate " +
          fmt(d.overall.alert_rate * 100, 1) + " % over " + d.overall.transactions + " transactions"),
        driftChart(d)));
    } catch (e) {
      parts.push(el("p", { class: "muted" }, "No drift: " + e.message));
    }
  }
  parts.push(el("div", { class: "panel" }, el("h2", {}, "Channel history"),
    history.changes.length === 0 ? el("p", { class: "muted" }, "No channel was ever changed.") :
      el("table", { id: "history" }, el("thead", {}, el("tr", {}, ["When", "Channel", "From", "To", "By", "Action"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, history.changes.map((c) => el("tr", {}, el("td", {}, when(c.changed_at)),
        el("td", {}, c.channel), el("td", {}, c.from || "embedded"), el("td", {}, c.to || "none"),
        el("td", {}, c.changed_by + (c.note ? " (" + c.note + ")" : "")), el("td", {}, c.action)))))));
  main.replaceChildren(...parts);
}

async function promote(version) {
  if (!confirm("Make " + version + " the live model on every edge?")) return;
  try {
    await api("/v1/models/channels/live", { method: "PUT",
      headers: { "content-type": "application/json" }, body: JSON.stringify({ version }) });
    status(version + " is live");
    route();
  } catch (e) {
    status("not promoted: " + e.message, true);
  }
}

async function rollback() {
  if (!confirm("Put the previous live model back?")) return;
  try {
    await api("/v1/models/channels/live/rollback", { method: "POST" });
    status("rolled back");
    route();
  } catch (e) {
    status("not rolled back: " + e.message, true);
  }
}

// ---- routing -------------------------------------------------------------------------------

function failed(e, where) {
  if (e.status === 401) {
    signIn(document.getElementById("main"), e.message);
    return;
  }
  const hint = e.status === 503 ? " The store cannot reach its database right now; try again in a moment."
    : e.status === 403 ? " Ask for a token with the role this needs." : "";
  where.replaceChildren(el("div", { class: "empty", id: "failure" }, e.message + "." + hint));
  status(e.message, true);
}

async function route() {
  const main = document.getElementById("main");
  status("");
  if (!sessionStorage.getItem(TOKEN_KEY)) return signIn(main);
  if (!state.me) {
    try {
      await whoami();
    } catch (e) {
      if (e.status === 401 || e.status === 0) return signIn(main, e.message);
      return failed(e, main);
    }
  }
  const hash = location.hash || "#/queue";
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", hash.startsWith(a.getAttribute("href")) ||
      (hash.startsWith("#/tx/") && a.id === "nav-queue"));
  }
  if (hash.startsWith("#/tx/")) return showTransaction(main, decodeURIComponent(hash.slice(5)));
  if (hash.startsWith("#/models")) return showModels(main);
  return showQueue(main);
}

document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (/^(INPUT|TEXTAREA|SELECT)$/.test(ev.target.tagName)) return;
  const q = state.queue;
  if (!q || !document.getElementById("queue-table")) return;
  if (ev.key === "j") { state.sel = Math.min(state.sel + 1, q.rows.length - 1); renderQueue(); }
  else if (ev.key === "k") { state.sel = Math.max(state.sel - 1, 0); renderQueue(); }
  else if (ev.key === "f") labelSelected(true);
  else if (ev.key === "n") labelSelected(false);
  else if (ev.key === "o" || ev.key === "Enter") {
    const row = q.rows[state.sel];
    if (row) location.hash = "#/tx/" + row.id;
  } else return;
  ev.preventDefault();
});

document.getElementById("signout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.me = null;
  route();
});
window.addEventListener("hashchange", route);
route();
