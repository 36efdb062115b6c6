/* ltvd dashboard: fetches the JSON routes with the read token and draws them
 * with Chart.js (Debian's libjs-chart.js, served by ltvd at
 * /dashboard/chart.js). No data is in the page itself.
 *
 * Self-check (tests/test_dashboard.py reads it): every chart's canvas carries
 * data-state "loading", "ok" (drawn with data), "empty" (the route answered
 * with nothing to draw) or "error"; every JavaScript error and failed fetch
 * is listed in #errors; <body data-ready="true"> once every chart has left
 * "loading" and the rates chart has its first point (or 30 s have passed). */
"use strict";

const TOKEN_KEY = "ltvd.read_token";
const REFRESH_MS = 10000;   /* the JSON routes */
const RATE_MS = 2000;       /* /metrics samples */
const RATE_POINTS = 90;     /* kept: 3 minutes */
const READY_DEADLINE_MS = 30000;
const COLORS = ["#2f6fdf", "#e07b39", "#3a9d5d", "#c94f7c", "#7b61c9", "#8c8c2a", "#2aa3a3", "#a0522d"];

/* ---- errors, state ------------------------------------------------------ */

const errors = [];

function reportError(msg) {
  const text = String(msg);
  if (errors.includes(text) || errors.length >= 50) return;
  errors.push(text);
  const ul = document.getElementById("errors");
  const li = document.createElement("li");
  li.textContent = text;
  ul.appendChild(li);
  ul.hidden = false;
  document.body.dataset.errors = String(errors.length);
}

window.addEventListener("error", (e) => reportError("JavaScript error: " + (e.message || e.type) +
  (e.filename ? " (" + e.filename + ":" + e.lineno + ")" : "")));
window.addEventListener("unhandledrejection", (e) => reportError("unhandled rejection: " + (e.reason && e.reason.stack || e.reason)));

function setState(name, state, note) {
  const canvas = document.querySelector('canvas[data-chart="' + name + '"]');
  canvas.dataset.state = state;
  const p = canvas.closest(".panel").querySelector(".note");
  if (note !== undefined) p.textContent = note;
  checkReady();
}

let rateSamples = 0;
const started = Date.now();

function checkReady() {
  if (document.body.dataset.ready === "true") return;
  const loading = document.querySelectorAll('canvas[data-state="loading"]').length;
  const chartsMissing = typeof Chart === "undefined";
  if ((loading === 0 && (rateSamples >= 2 || chartsMissing)) || Date.now() - started > READY_DEADLINE_MS)
    document.body.dataset.ready = "true";
}

/* ---- the token and the fetches ------------------------------------------ */

function takeToken() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m) {
    let value = m[1];
    try {
      value = decodeURIComponent(value);
    } catch (e) { /* a malformed escape: the text as given (a token is plain ASCII) */
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    history.replaceState(null, "", location.pathname + location.search); /* out of the address bar and history */
  }
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

let token = "";

class HttpError extends Error {
  constructor(path, status, message) {
    super("GET " + path + ": " + status + (message ? " " + message : ""));
    this.status = status;
  }
}

async function getJson(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  if (!r.ok) {
    let message = "";
    try { message = (await r.json()).error.message; } catch (e) { /* not the error object */ }
    if (r.status === 401) document.getElementById("token-form").hidden = false;
    throw new HttpError(path, r.status, message);
  }
  return r.json();
}

/* ---- charts ----------------------------------------------------------------- */

const charts = {};

function fmt(x, digits) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  const a = Math.abs(x);
  if (a >= 1e6) return (x / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (x / 1e3).toFixed(0) + "k";
  return x.toFixed(digits === undefined ? (a >= 100 ? 0 : a >= 1 ? 2 : 3) : digits);
}

/* Draws (or updates in place: no destroy, which would restore the canvas's
 * style attribute under the CSP) chart `name`. */
function draw(name, config) {
  const canvas = document.getElementById("c-" + name);
  config.options = Object.assign({
    animation: false, responsive: true, maintainAspectRatio: false,
    plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
  }, config.options || {});
  if (charts[name] && charts[name].config.type === config.type) {
    charts[name].data = config.data;
    charts[name].options = config.options;
    charts[name].update("none");
  } else {
    charts[name] = new Chart(canvas, config);
  }
}

function dataset(label, data, i, extra) {
  return Object.assign({ label, data, backgroundColor: COLORS[i % COLORS.length] + "cc",
    borderColor: COLORS[i % COLORS.length], borderWidth: 1.5, pointRadius: 3 }, extra || {});
}

function hasData(datasets) {
  return datasets.some((d) => d.data.some((v) => v !== null && v !== undefined && (typeof v !== "object" || v.y !== null)));
}

/* Runs fill(answer) for each path's answer; a failure marks the named charts "error". */
async function panel(names, paths, fill) {
  try {
    const answers = await Promise.all(paths.map(getJson));
    fill(...answers);
  } catch (e) {
    const busy = e instanceof HttpError && e.status === 503; /* recovering, or not computed yet: the next refresh */
    for (const n of names) setState(n, busy ? "empty" : "error", e.message + (busy ? " (trying again)" : ""));
    if (!(e instanceof HttpError && (e.status === 401 || busy))) reportError(e.message);
  }
}

/* ---- model history ---------------------------------------------------------- */

/* Points by version: each valid model file (its network's validation
 * figures), and each training run that was not swapped in. The fallback's
 * figures on the same validation split come from the run that made the
 * version (retrain.runs, kept in memory since start): a file made before
 * this start shows the network alone. */
function fillHistory(models, model) {
  const runs = model.retrain.runs;
  const runOf = (f) => f.validation && runs.find((r) => r.swapped && r.version <= f.version &&
    r.examples === f.validation.examples && Math.abs(r.val_loss - f.validation.loss) < 1e-9);
  const points = models.models.filter((f) => f.valid).map((f) => {
    const r = runOf(f);
    return { version: f.version, label: "v" + f.version + (f.trained_at ? " " + f.trained_at.slice(0, 10) : ""),
             loss: f.validation ? f.validation.loss : null, gini: f.validation ? f.validation.gini : null,
             fbLoss: r ? r.val_loss_fallback : null, fbGini: r ? r.val_gini_fallback : null };
  });
  for (const r of runs.filter((x) => !x.swapped))
    points.push({ version: r.version - 0.5, label: "run " + r.at.slice(0, 10) + " (kept out)", loss: r.val_loss,
                  gini: r.val_gini, fbLoss: r.val_loss_fallback, fbGini: r.val_gini_fallback });
  points.sort((a, b) => a.version - b.version);
  const labels = points.map((p) => p.label);
  const serving = "serving v" + models.serving_version + " (" + model.status + ")";
  const fbSeen = points.some((p) => p.fbLoss !== null);
  for (const [name, net, fb, what] of [
    ["history-loss", "loss", "fbLoss", "validation loss (ZILN, lower is better)"],
    ["history-gini", "gini", "fbGini", "normalised Gini (higher is better)"]]) {
    const datasets = [dataset("network", points.map((p) => p[net]), 0, { spanGaps: true }),
                      dataset("fallback BG/NBD, same validation split", points.map((p) => p[fb]), 1,
                              { borderDash: [6, 4], spanGaps: true })];
    draw(name, { type: "line", data: { labels, datasets } });
    setState(name, hasData([datasets[0]]) ? "ok" : "empty",
      hasData([datasets[0]]) ? what + "; " + serving + ", " + models.models.length + " model file(s)" +
                               (fbSeen ? "" : "; the fallback's figures are known for trainings since this start")
                             : "no trained network yet (POST /v1/model/retrain); " + serving);
  }
  document.getElementById("summary").textContent = serving + " · horizon " + model.horizon_days + " days";
}

/* ---- calibration ------------------------------------------------------------- */

function fillCalibration(cal) {
  const bt = cal.backtest, live = cal.live;
  const n = Math.max(bt ? bt.deciles.length : 0, live ? live.deciles.length : 0);
  const labels = Array.from({ length: n }, (_, k) => "D" + (k + 1));
  const col = (src, key) => labels.map((_, k) => (src && src.deciles[k] ? src.deciles[k][key] : null));
  const datasets = [];
  if (bt && bt.pairs) {
    datasets.push(dataset("backtest predicted", col(bt, "predicted"), 0));
    datasets.push(dataset("backtest realised", col(bt, "realised"), 1));
  }
  if (live && live.pairs) {
    datasets.push(dataset("served predicted", col(live, "predicted"), 2));
    datasets.push(dataset("served realised", col(live, "realised"), 3));
  }
  draw("calibration", { type: "bar", data: { labels, datasets },
    options: { scales: { y: { title: { display: true, text: "mean spend per shopper over " + cal.horizon_days + " days" } } } } });
  const parts = [];
  if (bt && bt.pairs) parts.push("backtest of v" + bt.model_version + ": " + bt.pairs + " cuts, total " +
    fmt(bt.predicted_total) + " predicted vs " + fmt(bt.realised_total) + " realised");
  parts.push(live ? (live.pairs ? "prediction log: " + live.pairs + " matured" : "prediction log: nothing matured yet")
                  : "no prediction log (adjuster.enabled is false)");
  setState("calibration", hasData(datasets) ? "ok" : "empty",
    (hasData(datasets) ? "" : "no backtest yet (after a retrain). ") + parts.join("; "));
}

/* ---- segments and distributions (GET /v1/segments) ------------------------- */

function histogram(name, dist, label, digits, note) {
  const labels = dist.counts.map((_, k) => fmt(dist.edges[k], digits) + "–" + fmt(dist.edges[k + 1], digits));
  const datasets = [dataset(label, dist.counts, name === "ltv" ? 0 : 2, { barPercentage: 1, categoryPercentage: 1 })];
  draw(name, { type: "bar", data: { labels, datasets }, options: { plugins: { legend: { display: false } } } });
  setState(name, dist.counts.some((c) => c > 0) ? "ok" : "empty", note);
}

function fillSegments(seg) {
  const note = seg.shoppers + " shoppers, model v" + seg.model_version + ", computed " + fmt(seg.age_s, 0) + " s ago";
  histogram("ltv", seg.distributions.ltv, "shoppers", undefined, "predicted spend over " + seg.horizon_days + " days; " + note);
  histogram("pactive", seg.distributions.p_active, "shoppers", 2, "probability of being active; " + note);
  const tiers = seg.tiers.map((t) => t.name);
  const activities = [...new Set(seg.segments.map((s) => s.activity))];
  const find = (t, a) => seg.segments.find((s) => s.tier === t && s.activity === a);
  const sizes = activities.map((a, i) => dataset(a, tiers.map((t) => (find(t, a) ? find(t, a).count : 0)), i));
  draw("segment-sizes", { type: "bar", data: { labels: tiers, datasets: sizes },
    options: { scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "shoppers" } } } } });
  setState("segment-sizes", seg.segments.some((s) => s.count > 0) ? "ok" : "empty",
    "value tier × activity state; tiers from " + seg.tiers.map((t) => t.name + " ≥ " + fmt(t.min_ltv)).join(", "));
  const nonEmpty = seg.segments.filter((s) => s.count > 0);
  const labels = nonEmpty.map((s) => s.tier + " · " + s.activity);
  const values = [dataset("predicted value, next " + seg.horizon_days + " days", nonEmpty.map((s) => s.predicted_value), 0),
                  dataset("realised spend so far", nonEmpty.map((s) => s.realised_spend), 1)];
  draw("segment-values", { type: "bar", data: { labels, datasets: values } });
  setState("segment-values", nonEmpty.length ? "ok" : "empty", "totals per segment (tier · activity)");
}

/* ---- the adjuster's table -------------------------------------------------- */

const ADJ_CHART_MIN_PAIRS = 20;  /* fewer: too noisy to read, and the adjuster never corrects them */
const ADJ_CHART_MAX = 3;
const BUCKETS = { recency: ["≤30 d", "≤90 d", "≤180 d", ">180 d"], tenure: ["≤90 d", "≤180 d", "≤365 d", ">365 d"] };

function fillAdjuster(model) {
  const adj = model.adjuster;
  const table = document.getElementById("adjuster-table");
  table.textContent = "";
  if (!adj.enabled || !adj.active) {
    draw("adjuster", { type: "bar", data: { labels: [], datasets: [] } });
    setState("adjuster", "empty", adj.enabled ? "enabled; no table learned yet (it learns after a retrain)"
                                              : "adjuster.enabled is false: predictions are served uncorrected");
    return;
  }
  const segs = adj.segments;
  const charted = segs.filter((g) => g.pairs >= ADJ_CHART_MIN_PAIRS);
  const labels = charted.map((g) => "D" + g.value_decile + " r" + g.recency_bucket + " t" + g.tenure_bucket);
  const datasets = [dataset("realised / predicted", charted.map((g) => g.ratio), 0),
                    dataset("multiplier served", charted.map((g) => g.action), 1, { type: "line", showLine: false, pointRadius: 4 })];
  draw("adjuster", { type: "bar", data: { labels, datasets },
    options: { scales: { y: { min: 0, max: ADJ_CHART_MAX, title: { display: true, text: "ratio, multiplier" } } } } });
  setState("adjuster", charted.length ? "ok" : "empty",
    adj.runs + " run(s), " + adj.live_pairs + " logged + " + adj.backtest_pairs + " backtest pairs, " +
    segs.filter((g) => g.action !== 1).length + " segment(s) corrected. Charted: the " + charted.length +
    " segments with ≥ " + ADJ_CHART_MIN_PAIRS + " pairs (ratios above " + ADJ_CHART_MAX + " cut off); every segment in the table. " +
    "D = decile of the prediction, r/t = recency/tenure bucket");
  const head = table.createTHead().insertRow();
  for (const h of ["segment", "value decile", "recency", "tenure", "pairs", "realised / predicted", "multiplier"]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.appendChild(th);
  }
  const body = table.createTBody();
  for (const g of segs) {
    const row = body.insertRow();
    for (const v of [g.segment, g.value_decile, BUCKETS.recency[g.recency_bucket], BUCKETS.tenure[g.tenure_bucket],
                     g.pairs, fmt(g.ratio, 3), "×" + g.action])
      row.insertCell().textContent = v;
  }
}

/* ---- rates from /metrics (open, Prometheus text) -------------------------- */

function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const sp = line.lastIndexOf(" ");
    out[line.slice(0, sp)] = Number(line.slice(sp + 1));
  }
  return out;
}

function sumMatching(m, re) {
  let s = 0;
  for (const k in m) if (re.test(k)) s += m[k];
  return s;
}

const PREDICTION_ROUTES = /^ltvd_http_requests_total\{route="(\/v1\/users\/\{user_id\}\/ltv|\/v1\/ltv\/batch)"/;
let lastSample = null;
const rates = { labels: [], events: [], predictions: [], requests: [] };

async function sampleRates() {
  try {
    /* the time the counters were read: the request's, not when this busy
     * page got round to the answer (a late parse would shrink dt, not the counts) */
    const now = performance.now();
    const r = await fetch("/metrics", { cache: "no-store" });
    if (!r.ok) throw new Error("GET /metrics: " + r.status);
    const m = parseMetrics(await r.text());
    const cur = { t: now, events: m.ltvd_events_applied_total || 0, predictions: m.ltvd_predictions_total || 0,
                  requests: sumMatching(m, PREDICTION_ROUTES) };
    rateSamples++;
    if (lastSample && now > lastSample.t) {
      const dt = (now - lastSample.t) / 1000;
      rates.labels.push(new Date().toLocaleTimeString());
      for (const k of ["events", "predictions", "requests"]) rates[k].push(Math.max(0, cur[k] - lastSample[k]) / dt);
      if (rates.labels.length > RATE_POINTS) for (const k in rates) rates[k].shift();
      const datasets = [dataset("events applied / s", rates.events, 0),
                        dataset("predictions served / s", rates.predictions, 1),
                        dataset("prediction requests / s (GET /ltv, POST /ltv/batch)", rates.requests, 2)];
      draw("rates", { type: "line", data: { labels: rates.labels, datasets } });
      setState("rates", "ok", "from /metrics every " + RATE_MS / 1000 + " s; totals: " + fmt(cur.events) +
        " events, " + fmt(cur.predictions) + " predictions");
    } else {
      setState("rates", "loading", "waiting for a second sample of /metrics");
    }
    lastSample = cur;
  } catch (e) {
    setState("rates", "error", e.message);
    reportError(e.message);
  }
}

/* ---- main --------------------------------------------------------------- */

async function refresh() {
  await Promise.all([
    panel(["history-loss", "history-gini"], ["/v1/models", "/v1/model"], fillHistory),
    panel(["calibration"], ["/v1/calibration"], fillCalibration),
    panel(["ltv", "pactive", "segment-sizes", "segment-values"], ["/v1/segments"], fillSegments),
    panel(["adjuster"], ["/v1/model"], fillAdjuster),
  ]);
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

async function chartjsMissing() {
  const banner = document.getElementById("banner");
  let why = "";
  try {
    const r = await fetch("/dashboard/chart.js", { cache: "no-store" });
    why = r.ok ? "it loaded but defines no Chart" : (await r.json()).error.message;
  } catch (e) {
    why = e.message;
  }
  banner.textContent = "Chart.js did not load from /dashboard/chart.js, so no chart can be drawn: " + why + ".";
  banner.hidden = false;
  document.body.dataset.chartjs = "missing";
  for (const c of document.querySelectorAll("canvas[data-chart]")) setState(c.dataset.chart, "error", "Chart.js is missing");
  reportError("Chart.js missing: " + why);
}

function start() {
  token = takeToken();
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = document.getElementById("token-input").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    document.getElementById("token-form").hidden = true;
    refresh();
  });
  if (typeof Chart === "undefined") {
    chartjsMissing();
    return;
  }
  Chart.defaults.font.size = 11;
  refresh();
  sampleRates();
  setInterval(refresh, REFRESH_MS);
  setInterval(sampleRates, RATE_MS);
  setInterval(checkReady, 1000);
}

start();
