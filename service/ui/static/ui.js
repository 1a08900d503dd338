// The dashboard's behaviour: plots (uPlot), typeset formulas (KaTeX), copy buttons and the live pages
// (server-sent events). Each page says which it is in <body data-page>; its data sits in
// <script type="application/json"> blocks, so no inline script runs (the pages' CSP forbids it).
"use strict";

function readJson(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// A uPlot chart. series: [{label, stroke}], data: [xs, ys1, ...]; scatter draws points only.
function chart(target, {title, series, data, logY, scatter, width, height, xLabel, yLabel, hover}) {
  const opts = {
    title, width: width || 560, height: height || 300,
    // a log axis spans at least a decade around its data (one point alone has no range of its own)
    scales: {x: {time: false}, y: logY ? {distr: 3, range: (u, lo, hi) => lo == null ? [0.1, 1] : [lo / 3, hi * 3]} : {}},
    axes: [{label: xLabel}, logY ? {label: yLabel, size: 70, values: (u, vals) => vals.map(tick)}
                                 : {label: yLabel}],
    series: [{label: xLabel || "x"}].concat(series.map((s) => Object.assign({
      width: 1.5, spanGaps: true,
    }, scatter ? {paths: () => null, points: {show: true, space: 0, size: 5, fill: s.stroke}} : {}, s))),
    legend: {show: series.length > 1},
    hooks: hover ? {setCursor: [(u) => hover(u.cursor.idx)]} : {},
  };
  return new uPlot(opts, data, target);
}

// a log axis' tick: 1e-7 rather than 0.0000001
function tick(v) {
  if (v == null) return "";
  return Math.abs(v) < 1e-3 || Math.abs(v) >= 1e4 ? v.toExponential(0) : String(+v.toPrecision(2));
}

// x, y pairs sorted by x (uPlot's x values ascend); rows with a missing value are left out
function sortedPairs(xs, ys) {
  const pairs = xs.map((x, i) => [x, ys[i]]).filter(([x, y]) => x !== null && y !== null);
  pairs.sort((a, b) => a[0] - b[0]);
  return [pairs.map((p) => p[0]), pairs.map((p) => p[1])];
}

function typeset() {
  document.querySelectorAll(".tex[data-tex]").forEach((node) => {
    katex.render(node.dataset.tex, node, {throwOnError: false, displayMode: true});
    node.dataset.rendered = "1";
  });
}

function copyButtons() {
  document.querySelectorAll("button.copy").forEach((button) => {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(source.value);
      } catch (e) {  // no clipboard permission (e.g. a plain-http address other than localhost)
        source.select();
        document.execCommand("copy");
      }
      button.dataset.copied = "1";
      button.textContent = "Copied";
    });
  });
}

function setStatus(value) {
  const node = document.querySelector("#status .status");
  if (!node) return;
  node.textContent = value;
  node.className = "status status-" + value;
  document.body.dataset.status = value;
}

const pages = {};

pages.dataset = () => {
  const data = readJson("scatter-data");
  const box = document.getElementById("scatters");
  data.features.forEach((name, j) => {
    const holder = el("div", {"class": "scatter", "data-feature": name});
    box.appendChild(holder);
    chart(holder, {title: `${data.target} against ${name}`, width: 380, height: 260, scatter: true,
                   xLabel: name, yLabel: data.target, series: [{label: data.target, stroke: "#2457c5"}],
                   data: sortedPairs(data.inputs.map((row) => row[j]), data.targets)});
  });
};

pages.discovery = () => {
  const state = readJson("front-data");
  const hoverBox = document.getElementById("front-hover");
  let points = state.front.map((p) => ({complexity: p.complexity, test_rmse: p.test_rmse, formula: p.formula}));
  let shown = [];
  const holder = document.getElementById("front-plot");
  let plot = null;
  const draw = () => {
    shown = points.filter((p) => p.test_rmse > 0 && isFinite(p.test_rmse)).sort((a, b) => a.complexity - b.complexity);
    const data = [shown.map((p) => p.complexity), shown.map((p) => p.test_rmse)];
    holder.dataset.points = String(shown.length);
    if (plot) { plot.setData(data); return; }
    plot = chart(holder, {series: [{label: "test RMSE", stroke: "#b42318"}], data, scatter: state.live,
                          logY: true, xLabel: "complexity", yLabel: "test RMSE",
                          hover: (i) => { if (i !== null && i !== undefined && shown[i]) hoverBox.textContent = shown[i].formula; }});
  };
  draw();
  const row = (jobId) => document.getElementById("cand-" + jobId);
  const source = new EventSource(state.events);
  source.addEventListener("progress", (e) => {
    const d = JSON.parse(e.data);
    setStatus(d.status);
    const p = d.progress || {};
    const bar = document.getElementById("progress");
    bar.max = p.candidates_total || 1;
    bar.value = p.candidates_done || 0;
    document.getElementById("progress-text").textContent =
      `${p.candidates_done || 0} / ${p.candidates_total || "?"} candidates done`;
  });
  const fill = (d) => {
    const tr = row(d.job_id);
    if (!tr) return;
    tr.dataset.status = d.status;
    tr.querySelector(".st").innerHTML = "";
    tr.querySelector(".st").appendChild(el("span", {"class": "status status-" + d.status}, d.status));
    tr.querySelector(".label").textContent = d.label || d.candidate_id || "";
    const r = d.result || {};
    if (r.formula) tr.querySelector(".formula-cell").appendChild(el("code", {}, r.formula));
    if (r.complexity !== undefined && r.complexity !== null) tr.querySelector(".cx").textContent = r.complexity;
    if (r.test_rmse !== undefined && r.test_rmse !== null) tr.querySelector(".rmse").textContent = Number(r.test_rmse).toPrecision(4);
    if (state.live && r.formula && r.test_rmse !== null && r.complexity !== null) {
      points.push({complexity: r.complexity, test_rmse: r.test_rmse, formula: r.formula});
      draw();
    }
  };
  source.addEventListener("candidate_started", (e) => fill(JSON.parse(e.data)));
  source.addEventListener("candidate_finished", (e) => fill(JSON.parse(e.data)));
  source.addEventListener("best", (e) => {
    const d = JSON.parse(e.data);
    const best = document.getElementById("best");
    best.innerHTML = "";
    best.appendChild(el("code", {}, d.formula));
    best.appendChild(document.createTextNode(` (test RMSE ${Number(d.test_rmse).toPrecision(4)})`));
  });
  source.addEventListener("end", (e) => {
    source.close();
    const d = JSON.parse(e.data);
    setStatus(d.status);
    if (state.live) window.location.reload();  // the final front, the chosen formula and its exports
  });
};

pages.job = () => {
  const state = readJson("history-data");
  const holder = document.getElementById("loss-plot");
  const xs = [], train = [], test = [];
  let offset = 0, lastStage = null, lastStep = -1;
  const add = (p) => {
    if (p.stage_index !== lastStage) { offset = xs.length ? xs[xs.length - 1] + 1 : 0; lastStage = p.stage_index; lastStep = -1; }
    if (p.step <= lastStep) return;  // a progress event repeating the last point
    lastStep = p.step;
    xs.push(offset + p.step);
    train.push(p.train_rmse ?? null);
    test.push(p.test_rmse ?? null);
  };
  state.points.forEach(add);
  const plot = chart(holder, {series: [{label: "train RMSE", stroke: "#2457c5"}, {label: "test RMSE", stroke: "#b42318"}],
                              data: [xs, train, test], logY: true, width: 760, xLabel: "step (all stages)", yLabel: "RMSE"});
  holder.dataset.points = String(xs.length);
  if (!state.live) return;
  const source = new EventSource(state.events);
  source.addEventListener("progress", (e) => {
    const d = JSON.parse(e.data);
    setStatus(d.status);
    const p = d.progress;
    if (!p) return;
    document.getElementById("stage").textContent = `${p.stage_index + 1} / ${p.stages} ${p.stage || ""}`;
    document.getElementById("step").textContent = `${p.step} / ${p.steps}`;
    const bar = document.getElementById("stage-progress");
    bar.max = p.steps || 1;
    bar.value = p.step;
    if (p.train_rmse !== null || p.test_rmse !== null) {
      add(p);
      plot.setData([xs, train, test]);
      holder.dataset.points = String(xs.length);
    }
  });
  source.addEventListener("end", (e) => {
    source.close();
    const d = JSON.parse(e.data);
    setStatus(d.status);
    if (d.error) {
      const failure = document.getElementById("failure");
      failure.textContent = `${d.error.type}: ${d.error.detail}`;
      failure.hidden = false;
    }
    if (d.model_id) {
      const link = document.getElementById("model-link");
      link.textContent = "model ";
      link.appendChild(el("a", {href: `${document.body.dataset.prefix || "/ui"}/models/${d.model_id}`}, d.model_id));
    }
    const cancel = document.getElementById("cancel-form");
    if (cancel) cancel.remove();
  });
};

pages.model = () => {
  const box = document.getElementById("edges");
  readJson("edges-data").forEach((edge) => {
    const holder = el("div", {"class": "edge"});
    box.appendChild(holder);
    const title = edge.kind === "symbolic" ? `${edge.label}: ${edge.function}` : `${edge.label} (spline)`;
    chart(holder, {title, width: 260, height: 170, series: [{label: "φ(x)", stroke: edge.kind === "symbolic" ? "#b42318" : "#2457c5"}],
                   data: [edge.x, edge.y]});
  });
};

document.addEventListener("DOMContentLoaded", () => {
  typeset();
  copyButtons();
  const init = pages[document.body.dataset.page];
  if (init) init();
  document.body.dataset.ready = "1";
});
