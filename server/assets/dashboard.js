// twinflow's dashboard: polls the REST API and draws with plain DOM and SVG
// (no external assets). Every value from the server is inserted as text.
"use strict";

const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
// Errors seen by the page (failed requests, script errors), for people and for tests.
window.twinflowErrors = [];
window.addEventListener("error", (e) => window.twinflowErrors.push(String(e.message)));

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

async function api(path, options) {
  const response = await fetch(path, options);
  // The session ended (or the server restarted): the page itself asks for the key again.
  if (response.status === 401) location.reload();
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = body && body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${response.status}`;
    throw new Error(error);
  }
  return body;
}

const fmt = new Intl.NumberFormat("en");
function number(x, digits = 0) {
  return Number.isFinite(x) ? fmt.format(Number(x.toFixed(digits))) : "–";
}

function duration(seconds) {
  if (seconds < 120) return `${seconds.toFixed(0)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(0)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// A plot of series [{points: [[x, y]], kind: "line"|"bars"|"threshold"}] into an SVG of its viewBox size.
function plot(svg, series, { yLabel = "", xLabel = "" } = {}) {
  const [, , width, height] = svg.getAttribute("viewBox").split(" ").map(Number);
  const margin = { left: 44, right: 8, top: 8, bottom: 18 };
  svg.replaceChildren();
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) {
    const empty = svgEl("text", { x: width / 2, y: height / 2, "text-anchor": "middle" });
    empty.textContent = "no data yet";
    svg.append(empty);
    return;
  }
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const y1 = Math.max(...ys, 1e-9) * 1.1;
  const y0 = Math.min(0, ...ys) * 1.1; // below zero only for values that are (a gain can be negative)
  const sx = (x) => margin.left + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (width - margin.left - margin.right);
  const sy = (y) => height - margin.bottom - ((y - y0) / (y1 - y0)) * (height - margin.top - margin.bottom);
  svg.append(svgEl("line", { class: "axis", x1: margin.left, x2: width - margin.right, y1: sy(0), y2: sy(0) }));
  svg.append(svgEl("line", { class: "axis", x1: margin.left, x2: margin.left, y1: margin.top, y2: sy(0) }));
  const ticks = [[y1 / 1.1, sy(y1 / 1.1)], [0, sy(0)]];
  if (y0 < 0) ticks.push([y0 / 1.1, sy(y0 / 1.1)]);
  for (const [value, y] of ticks) {
    const label = svgEl("text", { x: margin.left - 4, y: y + 3, "text-anchor": "end" });
    label.textContent = number(value, Math.abs(value) < 10 ? 2 : 0);
    svg.append(label);
  }
  const caption = svgEl("text", { x: width - margin.right, y: height - 4, "text-anchor": "end" });
  caption.textContent = xLabel;
  svg.append(caption);
  if (yLabel) svg.setAttribute("aria-label", yLabel);
  const barWidth = Math.max(1, (width - margin.left - margin.right) / Math.max(8, xs.length) - 1);
  for (const s of series) {
    if (s.kind === "bars") {
      for (const [x, y] of s.points) {
        svg.append(svgEl("rect", { class: "bar", x: sx(x) - barWidth / 2, y: sy(y), width: barWidth, height: sy(0) - sy(y) }));
      }
    } else {
      const d = s.points.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
      svg.append(svgEl("path", { class: s.kind === "threshold" || s.kind === "bound" ? s.kind : "series", d }));
      // Few points: each one visible (a single point has no line).
      if (s.kind === "line" && s.points.length < 60) {
        for (const [x, y] of s.points) svg.append(svgEl("circle", { class: "point", cx: sx(x), cy: sy(y), r: 2 }));
      }
      for (const [x, y] of s.marks || []) svg.append(svgEl("circle", { class: "trigger", cx: sx(x), cy: sy(y), r: 3 }));
    }
  }
}

function renderCards(status) {
  const errors = status.sources && status.sources.ingest_errors ? status.sources.ingest_errors.total : 0;
  const cards = [
    ["committed epoch", number(status.committed_epoch)],
    ["pending changes", number(status.pending_changes)],
    ["input lag", `${number(status.input_lag_ms)} ms`],
    ["texts embedded", number(status.texts_embedded)],
    ["waiting for the model", number(status.texts_waiting)],
    ["ingest errors", number(errors), errors > 0],
  ];
  document.getElementById("cards").replaceChildren(
    ...cards.map(([label, value, bad]) =>
      el("div", { class: bad ? "card bad" : "card", "data-label": label }, el("div", { class: "value" }, value), el("div", { class: "label" }, label))),
  );
  document.getElementById("headline").textContent =
    `${status.embedder} · ${status.workers} workers · up ${duration(status.uptime_s)} · ${status.data_dir}`;
}

function renderTimeline(points) {
  const now = Date.now();
  const bucketMs = 5000;
  const buckets = new Map();
  for (const p of points) {
    const bucket = Math.floor(p.committed_at_ms / bucketMs);
    buckets.set(bucket, (buckets.get(bucket) || 0) + p.changes);
  }
  const last = Math.floor(now / bucketMs);
  const bars = [];
  for (let b = last - 59; b <= last; b++) bars.push([(b * bucketMs - now) / 1000, (buckets.get(b) || 0) / (bucketMs / 1000)]);
  plot(document.getElementById("throughput"), points.length ? [{ kind: "bars", points: bars }] : [], {
    yLabel: "changes per second", xLabel: "last 5 minutes (s)",
  });
  const recent = points.slice(-200);
  plot(document.getElementById("freshness"), recent.length ? [{ kind: "line", points: recent.map((p) => [p.epoch, p.freshness_ms]) }] : [], {
    yLabel: "freshness in ms", xLabel: "epoch",
  });
}

function renderTables(tables) {
  document.querySelector("#tables tbody").replaceChildren(
    ...Object.entries(tables).map(([name, rows]) =>
      el("tr", { "data-table": name }, el("td", {}, name), el("td", { class: "num" }, number(rows)))),
  );
}

function renderDrift(drift) {
  const container = document.getElementById("drift");
  const state = document.getElementById("drift-state");
  if (!drift || drift.enabled === false) {
    state.textContent = "drift monitoring is off ([drift] enabled = false)";
    container.replaceChildren();
    return;
  }
  const st = drift.state || {};
  const reference = typeof st.reference === "string" ? st.reference : (st.reference && st.reference.name) || "";
  state.textContent = reference
    ? `reference: ${reference} · window ${number(st.window_size)} chunks · ${number(st.triggers)} triggers`
    : "waiting for a reference window";
  const byMetric = new Map();
  for (const row of drift.recent || []) {
    if (!byMetric.has(row.metric)) byMetric.set(row.metric, []);
    byMetric.get(row.metric).push(row);
  }
  const plots = [];
  for (const [metric, rows] of byMetric) {
    rows.sort((a, b) => a.epoch - b.epoch);
    const svg = svgEl("svg", { class: "plot small", viewBox: "0 0 480 110", "data-metric": metric });
    plot(svg, [
      { kind: "line", points: rows.map((r) => [r.epoch, r.value]), marks: rows.filter((r) => r.triggered).map((r) => [r.epoch, r.value]) },
      { kind: "threshold", points: rows.filter((r) => r.threshold > 0).map((r) => [r.epoch, r.threshold]) },
    ], { yLabel: metric, xLabel: `${metric} by epoch` });
    plots.push(el("div", {}, el("div", { class: "muted" }, metric), svg));
  }
  container.replaceChildren(...(plots.length ? plots : [el("div", { class: "muted" }, "no drift windows yet")]));
}

// The figures worth following over runs: search quality, answer quality, and the
// training runs' gains over the active model (the evidence promotion needs).
const EVAL_METRICS = {
  retrieval: ["ndcg@10"],
  rag: ["context_recall", "cites_relevant", "groundedness"],
  "adapter-run": ["gain"],
  "twin-run": ["gain"],
  twin: ["nll", "preference_accuracy"],
};

function renderEvals(evals) {
  const container = document.getElementById("evals");
  const series = new Map();
  for (const row of (evals && evals.evaluations) || []) {
    if (!(EVAL_METRICS[row.kind] || []).includes(row.metric)) continue;
    // Training runs are judged on a new dataset version each time: one series per kind.
    const training = row.kind.endsWith("-run");
    const key = training ? `${row.kind} · ${row.metric}` : `${row.kind} · ${row.question_set} · ${row.setting} · ${row.model} · ${row.metric}`;
    if (!series.has(key)) series.set(key, []);
    series.get(key).push(row);
  }
  // The training runs' gains always; of the rest, the 6 series measured most recently.
  const newest = (rows) => rows[rows.length - 1].at_ms;
  const all = [...series];
  const training = all.filter(([, rows]) => rows[0].kind.endsWith("-run"));
  const others = all.filter(([, rows]) => !rows[0].kind.endsWith("-run"))
    .sort((a, b) => newest(a[1]) - newest(b[1])).slice(-6);
  const plots = [];
  for (const [key, rows] of [...others, ...training]) {
    const runs = rows.map((r, i) => [i + 1, r]);
    const svg = svgEl("svg", { class: "plot small", viewBox: "0 0 480 110", "data-series": key });
    plot(svg, [
      { kind: "line", points: runs.map(([i, r]) => [i, r.value]) },
      { kind: "bound", points: runs.map(([i, r]) => [i, r.low]) },
      { kind: "bound", points: runs.map(([i, r]) => [i, r.high]) },
    ], { yLabel: key, xLabel: "run" });
    const last = rows[rows.length - 1];
    const interval = last.low !== last.high ? ` [${number(last.low, 3)}, ${number(last.high, 3)}]` : "";
    plots.push(el("div", {},
      el("div", { class: "muted" }, `${key}: ${number(last.value, 3)}${interval} · ${last.model} · ${number(last.queries)} questions`),
      svg));
  }
  container.replaceChildren(...(plots.length
    ? plots
    : [el("div", { class: "muted" }, "no evaluations yet: twinflow eval retrieval | rag DIR, or a training run")]));
}

function modelLines(title, registry, active) {
  const lines = [el("div", { class: "model" }, el("strong", {}, title), " · active: ", active || "base")];
  for (const card of (registry.versions || []).slice(-5).reverse()) {
    const isActive = active && active.endsWith(`v${card.version}`);
    lines.push(el("div", { class: "model" },
      el("span", { class: isActive ? "tag active" : "tag" }, `v${card.version}`), " ",
      card.decision || "", card.dataset ? ` · dataset v${card.dataset.version}` : ""));
  }
  const training = registry.training || {};
  if (training.state && training.state !== "idle") {
    lines.push(el("div", { class: "model" }, `training: ${training.phase || training.state} ${training.step || 0}/${training.steps || 0}`));
  } else if (training.runs) {
    lines.push(el("div", { class: "model muted" }, `${training.runs} training runs`));
  }
  return lines;
}

function renderModels(models, twin) {
  document.getElementById("models").replaceChildren(
    ...modelLines("embedding adapter", models, models.active),
    ...modelLines("twin (LoRA)", twin, twin.active),
  );
}

function renderErrors(errors) {
  document.getElementById("error-total").textContent = errors ? `${number(errors.total)} in total` : "";
  const rows = (errors && errors.recent) || [];
  document.querySelector("#errors tbody").replaceChildren(
    ...(rows.length
      ? rows.map((e) => el("tr", {}, el("td", {}, e.source), el("td", {}, e.location), el("td", { class: "reason" }, e.reason)))
      : [el("tr", {}, el("td", { colspan: 3, class: "muted" }, "none"))]),
  );
}

async function refresh() {
  const parts = await Promise.allSettled([
    api("/v1/status"), api("/v1/timeline"), api("/v1/drift"), api("/v1/models"), api("/v1/twin"), api("/v1/evals?limit=2000"),
  ]);
  const [status, timeline, drift, models, twin, evals] = parts.map((p) => (p.status === "fulfilled" ? p.value : null));
  for (const p of parts) if (p.status === "rejected") window.twinflowErrors.push(String(p.reason));
  if (status) {
    renderCards(status);
    renderTables(status.tables);
    renderErrors(status.sources && status.sources.ingest_errors);
  }
  if (timeline) renderTimeline(timeline.points);
  if (drift) renderDrift(drift);
  if (models && twin) renderModels(models, twin);
  if (evals) renderEvals(evals);
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  if (status) document.body.dataset.ready = "true";
}

function showResults(hits) {
  const list = document.getElementById("results");
  list.replaceChildren(...hits.map((hit) => {
    const source = hit.sources[0] || {};
    // Only web links become links (never `javascript:` and the like).
    const safe = /^https?:\/\//i.test(source.url || "");
    const title = safe ? el("a", { href: source.url, class: "title", rel: "noopener noreferrer" }, source.title || source.doc_id) : el("span", { class: "title" }, source.title || source.doc_id);
    return el("li", { class: "result", "data-doc": source.doc_id || "" },
      title,
      el("div", { class: "meta" }, `${source.doc_id} · ${source.author} · score ${hit.score.toFixed(4)}`),
      el("p", { class: "snippet" }, hit.text.length > 280 ? `${hit.text.slice(0, 280)}…` : hit.text));
  }));
  if (hits.length === 0) list.replaceChildren(el("li", { class: "muted" }, "no results"));
}

async function onSubmit(event) {
  event.preventDefault();
  const q = document.getElementById("q").value.trim();
  if (!q) return;
  const ask = event.submitter && event.submitter.value === "ask";
  const answer = document.getElementById("answer");
  const buttons = document.querySelectorAll("#ask-form button");
  buttons.forEach((b) => { b.disabled = true; });
  answer.hidden = true;
  try {
    if (ask) {
      const response = await api("/v1/rag", {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ query: q }),
      });
      answer.hidden = false;
      answer.replaceChildren(response.answer.trim(), el("div", { class: "meta muted" }, `as of epoch ${response.as_of} · ${response.model}`));
      showResults(response.citations.map((c) => ({
        score: c.score, text: c.cited ? `[${c.marker}] cited` : `[${c.marker}]`,
        sources: [{ doc_id: c.doc_id, title: c.title, url: c.url, author: c.author }],
      })));
    } else {
      const response = await api(`/v1/search?k=8&q=${encodeURIComponent(q)}`);
      showResults(response.results);
      answer.hidden = false;
      answer.replaceChildren(el("span", { class: "muted" }, `${response.results.length} results as of epoch ${response.as_of} in ${response.took_ms.toFixed(1)} ms`));
    }
  } catch (e) {
    answer.hidden = false;
    answer.replaceChildren(el("span", { class: "error" }, String(e.message)));
    window.twinflowErrors.push(String(e.message));
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

document.getElementById("ask-form").addEventListener("submit", onSubmit);
refresh();
setInterval(refresh, REFRESH_MS);
