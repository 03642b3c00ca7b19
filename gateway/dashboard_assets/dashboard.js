// The Backworks dashboard: polls the gateway's report API and stages' view, renders them with textContent only
// (a request path is client data: it must never become markup). Every URL is relative to the page (/_backworks/),
// so the page also works behind a proxy that mounts the gateway under a prefix.
"use strict";

const REFRESH_MS = 2000;
const STALE_AFTER_MS = 3 * REFRESH_MS;
const FETCH_TIMEOUT_MS = 5000;
const REPORT_URL = "report"; // the gateway's /_backworks/report (the analytics service's aggregates)
const STAGES_URL = "dashboard/stages"; // the gateway's /_backworks/dashboard/stages (replicas, breakers, pending)
const WINDOW = "15m"; // routes' counts, errors and latency
const RATE_WINDOW = "1m"; // routes' request rate: the last whole minute and the current one
const SHOWN_REQUESTS = 20;
const STATUS_CLASSES = ["2xx", "4xx", "5xx"];

let lastSuccess = 0;
let refreshes = 0;

const byId = (id) => document.getElementById(id);

function element(tag, text, attributes) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
  return node;
}

function fixed(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

// A table cell whose data-value holds the raw number (what tests and scripts read), its text the rounded one.
function cell(field, value, text) {
  return element("td", text === undefined ? (value === null || value === undefined ? "–" : value) : text, {
    "data-field": field,
    "data-value": value === null || value === undefined ? "" : value,
  });
}

async function getJson(url) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
  try {
    const response = await fetch(url, { cache: "no-store", signal: abort.signal });
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    return { ok: response.ok, status: response.status, body: body || {} };
  } finally {
    clearTimeout(timer);
  }
}

function setStatus(state, text) {
  const status = byId("status");
  status.dataset.state = state;
  status.textContent = text;
  document.body.dataset.stale = String(state === "stale" || state === "unreachable");
}

function renderRoutes(report, rates) {
  const body = byId("routes").tBodies[0];
  const rows = Object.entries(report.endpoints || {});
  const span = Math.max(rates.generated_at - rates.window_start || 0, 1); // whole minutes: 60-120 s
  body.replaceChildren(
    ...rows.map(([name, route]) => {
      const statuses = route.statuses || {};
      const recent = (rates.endpoints || {})[name];
      const rate = recent ? Math.round((100 * recent.count) / span) / 100 : 0;
      const row = element("tr", null, { "data-route": name });
      row.append(
        element("td", name),
        cell("rate", rate, fixed(rate, 2)),
        cell("count", route.count),
        ...STATUS_CLASSES.map((kind) => cell(kind, statuses[kind] || 0)),
        cell("error_rate", route.error_rate, fixed(100 * route.error_rate, 1)),
        cell("p50_ms", route.p50_ms, fixed(route.p50_ms, 2)),
        cell("p95_ms", route.p95_ms, fixed(route.p95_ms, 2)),
        cell("p99_ms", route.p99_ms, fixed(route.p99_ms, 2)),
      );
      return row;
    }),
  );
  byId("routes-window").textContent = `(last ${WINDOW}; req/s over the last ${Math.round(span)} s)`;
  showEmpty("routes-empty", rows.length === 0, "No request answered in this window yet.");
}

function renderStages(view) {
  byId("blueprint").textContent = view.blueprint || "";
  const body = byId("stages").tBodies[0];
  body.replaceChildren(
    ...(view.stages || []).map((stage) => {
      const row = element("tr", null, { "data-stage": stage.stage });
      const live = cell("live_replicas", stage.live_replicas);
      live.dataset.zero = String(stage.live_replicas === 0);
      const breaker = cell("breaker", stage.breaker);
      breaker.dataset.breaker = stage.breaker;
      const health = cell("status", stage.status);
      health.dataset.health = stage.status;
      row.append(
        element("td", stage.stage),
        element("td", stage.plugin + (stage.critical ? " (critical)" : "")),
        live,
        cell("pending", stage.pending),
        cell("ack_pending", stage.ack_pending),
        breaker,
        health,
      );
      return row;
    }),
  );
  const events = view.events || {};
  const notice = byId("notice");
  notice.hidden = events.enabled !== false;
  notice.textContent = events.enabled === false
    ? "Per-request events are off (events.enabled: false in the blueprint, or BACKWORKS_EVENTS=off): " +
      "routes and last requests stay empty."
    : "";
}

function timeline(request) {
  const bar = element("div", null, { class: "timeline", title: `${request.total_ms} ms in all` });
  const total = Math.max(Number(request.total_ms) || 0, 0.001);
  let staged = 0;
  (request.stages || []).forEach((stage, index) => {
    const ms = Number(stage.ms) || 0;
    staged += ms;
    const segment = element("span", null, {
      class: `segment stage-${index % 8}`,
      "data-stage": stage.stage,
      "data-ms": stage.ms,
      title: `${stage.stage}: ${fixed(ms, 2)} ms`,
    });
    segment.style.width = `${Math.min(100, (100 * ms) / total)}%`; // CSSOM: allowed by the page's CSP
    bar.append(segment);
  });
  const rest = Math.max(total - staged, 0);
  const transport = element("span", null, {
    class: "segment transport",
    title: `gateway and broker hops: ${fixed(rest, 2)} ms`,
  });
  transport.style.width = `${(100 * rest) / total}%`;
  bar.append(transport);
  return bar;
}

function renderRecent(report) {
  const requests = (report.recent || []).slice(0, SHOWN_REQUESTS);
  byId("recent").replaceChildren(
    ...requests.map((request) => {
      const item = element("li", null, { "data-request-id": request.request_id || "" });
      const time = new Date(request.at * 1000).toLocaleTimeString();
      const status = element("strong", request.status, {
        "data-field": "status",
        class: `status-${String(request.status).charAt(0)}`,
      });
      const stages = (request.stages || []).map((s) => `${s.stage} ${fixed(s.ms, 2)} ms`).join(" · ");
      const failed = request.failed_stage ? ` — failed at ${request.failed_stage}` : "";
      const degraded = (request.degraded || []).length ? ` — skipped ${request.degraded.join(", ")}` : "";
      item.append(
        element("span", `${time} `),
        status,
        element("span", ` ${request.method} ${request.path} (${request.route}) ${fixed(request.total_ms, 2)} ms`, {
          "data-field": "summary",
        }),
        element("span", failed + degraded, { class: "detail" }),
        timeline(request),
        element("div", stages || "no stage ran", { class: "detail" }),
      );
      return item;
    }),
  );
  showEmpty("recent-empty", requests.length === 0, "No request answered in this window yet.");
}

function showEmpty(id, empty, text) {
  const note = byId(id);
  note.hidden = !empty;
  note.textContent = empty ? text : "";
}

function clearAnalytics(text) {
  byId("routes-window").textContent = "";
  byId("routes").tBodies[0].replaceChildren();
  byId("recent").replaceChildren();
  showEmpty("routes-empty", true, text);
  showEmpty("recent-empty", true, text);
}

async function refresh() {
  try {
    const [view, report, rates] = await Promise.all([
      getJson(STAGES_URL),
      getJson(`${REPORT_URL}?since=${WINDOW}`),
      getJson(`${REPORT_URL}?since=${RATE_WINDOW}`),
    ]);
    if (!view.ok) throw new Error(`the gateway answered ${view.status}`);
    renderStages(view.body);
    if (report.ok && rates.ok) {
      renderRoutes(report.body, rates.body);
      renderRecent(report.body);
      setStatus("live", `Live · updated ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`);
    } else {
      const problem = (report.ok ? rates : report).body;
      const detail = problem.detail || `the report answered ${(report.ok ? rates : report).status}`;
      clearAnalytics("No analytics data: the analytics service is not running.");
      setStatus("no-analytics", `Analytics service not running: ${detail}`);
    }
    lastSuccess = Date.now();
    refreshes += 1;
    document.body.dataset.refreshes = String(refreshes);
  } catch (error) {
    const since = lastSuccess ? `showing data from ${new Date(lastSuccess).toLocaleTimeString()}` : "no data yet";
    setStatus("unreachable", `Gateway unreachable (${error.message || error}); ${since}; retrying.`);
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

// Between refreshes: a page whose last success is older than a few periods says so, whatever went wrong.
setInterval(() => {
  const status = byId("status");
  if (lastSuccess && Date.now() - lastSuccess > STALE_AFTER_MS && status.dataset.state !== "unreachable") {
    const ago = Math.round((Date.now() - lastSuccess) / 1000);
    setStatus("stale", `Stale: last update ${ago} s ago; retrying.`);
  }
}, 1000);

refresh();
