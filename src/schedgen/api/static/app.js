// schedgen web page: upload a PDF, follow its job, show its events, make a calendar feed
// link, and a queue view with a chart of the last hour. Plain JavaScript module, no
// framework, no build step. All text goes through textContent (never innerHTML), and the
// page's Content-Security-Policy allows scripts from this origin only.

const API = "/api/v1";
const KEY_STORE = "schedgen.apiKey";
const FINISHED = ["Succeeded", "Failed", "Cancelled"];
const QUEUE_EVERY_S = 15;
const HISTORY_MS = 60 * 60 * 1000;
const LONG_POLL_S = 25;
const SVG = "http://www.w3.org/2000/svg";

// Columns per schedule kind; the CLI's tables use the same (schedgen.client.render).
const EVENT_COLUMNS = {
  lecture: [["Module", "module"], ["Offered", "offered"], ["Group", "group"], ["Activity", "activity"],
            ["Day", "day"], ["Time", "time"], ["Venues", "venues"], ["Campus", "campus"], ["Lang", "language"]],
  test: [["Module", "module"], ["Test", "activity"], ["Date", "date"], ["Time", "time"], ["Venues", "venues"],
         ["Campus", "campus"]],
  exam: [["Module", "module"], ["Paper", "paper"], ["Activity", "activity"], ["Date", "date"],
         ["Start", "startTime"], ["Venues", "venues"], ["Exam campus", "examCampus"], ["Status", "status"]],
};

const $ = (id) => document.getElementById(id);
let apiKey = sessionStorage.getItem(KEY_STORE) || "";
let queueTimer = null;

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Both error shapes: {"error": {"code", "message"}} and RFC 9457 problem details.
async function errorOf(response) {
  let code = `HTTP${response.status}`;
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && typeof body.error === "object" && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    } else if (body && (body.title || body.detail || body.code)) {
      code = body.code || body.title || code;
      message = body.detail || body.title || message;
    }
  } catch (_) { /* not JSON */ }
  return new ApiError(response.status, code, message);
}

async function call(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Accept", "application/json");
  if (apiKey) headers.set("Authorization", `Bearer ${apiKey}`);
  const response = await fetch(API + path, { ...options, headers, credentials: "omit", cache: "no-store" });
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

function show(id, visible = true) { $(id).hidden = !visible; }

function alertUser(message) {
  const el = $("alert");
  el.textContent = message || "";
  el.hidden = !message;
}

function cell(value) {
  return value === null || value === undefined || value === "" ? "-" : String(value);
}

function eventCell(event, key) {
  if (key === "venues") return (event.venues || []).join(", ") || "-";
  if (key === "time") {
    return event.startTime && event.endTime ? `${event.startTime}-${event.endTime}` : cell(event.startTime);
  }
  return cell(event[key]);
}

function newIdempotencyKey() {
  if (crypto.randomUUID) return `web-${crypto.randomUUID()}`;
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// --- the key -------------------------------------------------------------------------------

async function start() {
  $("queue-interval").textContent = String(QUEUE_EVERY_S);
  $("key-form").addEventListener("submit", onKey);
  $("forget-key").addEventListener("click", forgetKey);
  $("upload-form").addEventListener("submit", onUpload);
  $("feed-create").addEventListener("click", onFeed);
  $("feed-copy").addEventListener("click", onCopy);
  await probe();
}

// Whether the stored key (or no key, when anonymous access is allowed) is accepted.
async function probe() {
  try {
    const summary = await call("/queue");
    show("key-section", false);
    show("upload-section");
    show("session-section");
    $("session-text").textContent = apiKey ? "Using the API key of this tab." : "Anonymous access (no key needed).";
    show("forget-key", Boolean(apiKey));
    alertUser("");
    renderQueue(summary);
    if (!queueTimer) queueTimer = setInterval(refreshQueue, QUEUE_EVERY_S * 1000);
  } catch (err) {
    if (err.status === 401) {
      if (apiKey) alertUser(`The API key was refused (${err.code}). Enter another one.`);
      apiKey = "";
      sessionStorage.removeItem(KEY_STORE);
      show("key-section");
      show("upload-section", false);
      show("session-section", false);
      $("api-key").focus();
    } else {
      alertUser(`The API is not available: ${err.message}`);
    }
  }
}

async function onKey(event) {
  event.preventDefault();
  apiKey = $("api-key").value.trim();
  $("api-key").value = "";
  if (apiKey) sessionStorage.setItem(KEY_STORE, apiKey);
  await probe();
  if (!$("upload-section").hidden) $("pdf").focus();
}

function forgetKey() {
  apiKey = "";
  sessionStorage.removeItem(KEY_STORE);
  clearInterval(queueTimer);
  queueTimer = null;
  probe();
}

// --- upload and progress -------------------------------------------------------------------

async function onUpload(event) {
  event.preventDefault();
  const file = $("pdf").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("scheduleType", $("schedule-type").value);
  form.append("file", file, file.name);
  $("upload-button").disabled = true;
  alertUser("");
  show("events-section", false);
  show("feed-section", false);
  try {
    const job = await call("/uploads", { method: "POST", body: form,
                                         headers: { "Idempotency-Key": newIdempotencyKey() } });
    show("job-section");
    renderJob(job);
    await follow(job.id);
  } catch (err) {
    alertUser(`Upload failed: ${err.code}: ${err.message}`);
  } finally {
    $("upload-button").disabled = false;
  }
}

async function follow(id) {
  for (;;) {
    const started = Date.now();
    const status = await call(`/jobs/${encodeURIComponent(id)}?wait=${LONG_POLL_S}`);
    renderJob(status);
    if (FINISHED.includes(status.phase)) {
      refreshQueue();
      if (status.phase === "Succeeded") await loadEvents(id);
      return;
    }
    // a server without long polling answers at once: do not spin
    if (Date.now() - started < 1000) await new Promise((r) => setTimeout(r, 2000));
  }
}

function renderJob(status) {
  const steps = { Queued: 1, Running: 2 };
  const parts = [`Job ${status.id}: ${status.phase}`];
  if (status.queuePosition !== null && status.queuePosition !== undefined) {
    parts.push(`queue position ${status.queuePosition}`);
  }
  const result = status.result || {};
  if (result.events !== null && result.events !== undefined) parts.push(`${result.events} ${result.kind} events`);
  const error = status.error || {};
  if (error.code || error.reason) parts.push(`${error.code || error.reason}: ${error.message || ""}`);
  $("job-progress").textContent = parts.join(", ");
  $("job-bar").value = steps[status.phase] || 3;
  $("job-id").textContent = status.id;
  $("job-phase").textContent = status.phase;
  $("job-phase").className = `phase-${status.phase}`;
  $("job-queue").textContent = cell(status.queuePosition);
  const pages = result.pages === 1 ? "1 page" : `${result.pages} pages`;
  $("job-result").textContent = result.kind ? `${result.events} ${result.kind} events, ${pages}`
    : cell(error.message);
  $("feed-section").dataset.job = status.id;
}

async function loadEvents(id) {
  const body = await call(`/jobs/${encodeURIComponent(id)}/events`);
  const columns = EVENT_COLUMNS[body.kind] || EVENT_COLUMNS.lecture;
  const head = $("events-table").tHead.rows[0];
  head.replaceChildren(...columns.map(([label]) => {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = label;
    return th;
  }));
  const tbody = $("events-table").tBodies[0];
  tbody.replaceChildren(...body.events.map((ev) => {
    const tr = document.createElement("tr");
    for (const [, key] of columns) {
      const td = document.createElement("td");
      td.textContent = eventCell(ev, key);
      tr.append(td);
    }
    return tr;
  }));
  $("events-caption").textContent = `${body.events.length} ${body.kind} events of job ${id}`;
  show("events-section");
  show("feed-section");
  $("feed-result").hidden = true;
  $("feed-status").textContent = "";
}

// --- calendar feed -------------------------------------------------------------------------

async function onFeed() {
  const id = $("feed-section").dataset.job;
  $("feed-create").disabled = true;
  try {
    const feed = await call(`/jobs/${encodeURIComponent(id)}/feed`, { method: "POST" });
    $("feed-url").value = feed.url;
    $("feed-webcal").href = feed.webcal || feed.url;
    $("feed-result").hidden = false;
    $("feed-status").textContent = "Feed link ready. Copy it into your calendar app.";
    $("feed-url").focus();
    $("feed-url").select();
  } catch (err) {
    $("feed-status").textContent = err.status === 404 && err.code !== "JobNotFound"
      || err.status === 405 ? "Calendar feeds are not available on this server."
      : `No feed link: ${err.code}: ${err.message}`;
  } finally {
    $("feed-create").disabled = false;
  }
}

async function onCopy() {
  const url = $("feed-url").value;
  try {
    await navigator.clipboard.writeText(url);
    $("feed-status").textContent = "Feed URL copied.";
  } catch (_) {
    $("feed-url").select();
    $("feed-status").textContent = "Copy was blocked: the URL is selected, press Ctrl+C (or Cmd+C).";
  }
}

// --- queue ---------------------------------------------------------------------------------

async function refreshQueue() {
  try {
    const [summary, history] = await Promise.all([call("/queue"), call("/queue/history?minutes=60&step=60")]);
    renderQueue(summary, history);
  } catch (err) {
    if (err.status === 401) probe();
  }
}

function renderQueue(summary, history) {
  show("queue-section");
  const cols = ["waiting", "running", "succeeded", "failed", "cancelled", "oldestWaitingSeconds"];
  const rows = Object.entries(summary.tenants || {});
  rows.push(["Total", summary.total || {}]);
  $("queue-table").tBodies[0].replaceChildren(...rows.map(([name, counts]) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name;
    tr.append(th);
    for (const c of cols) {
      const td = document.createElement("td");
      td.className = "num";
      td.textContent = cell(counts[c]);
      tr.append(td);
    }
    return tr;
  }));
  // the last hour from the server's records (GET /api/v1/queue/history), one point a minute
  const samples = ((history && history.points) || []).map((p) => [Date.parse(p.at), p.waiting, p.running]);
  if (samples.length) drawChart(samples);
}

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// Waiting (solid) and running (dashed) over the last hour; x is time, y the count.
function drawChart(samples) {
  const W = 600, H = 180, L = 36, R = 10, T = 20, B = 24;
  const now = Date.now();
  const top = Math.max(1, ...samples.map((s) => Math.max(s[1], s[2])));
  const x = (t) => L + (W - L - R) * (1 - (now - t) / HISTORY_MS);
  const y = (v) => H - B - (H - T - B) * (v / top);
  const line = (i) => samples.map((s) => `${x(s[0]).toFixed(1)},${y(s[i]).toFixed(1)}`).join(" ");
  const chart = $("queue-chart");
  const last = samples[samples.length - 1];
  chart.replaceChildren(
    svg("title", {}, `Queue, last hour: ${last[1]} waiting and ${last[2]} running now; at most ${top}.`),
    svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    svg("text", { x: L - 4, y: T + 4, "text-anchor": "end" }, String(top)),
    svg("text", { x: L - 4, y: H - B, "text-anchor": "end" }, "0"),
    svg("text", { x: L, y: H - 6 }, "60 min ago"),
    svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, "now"),
    svg("polyline", { class: "waiting", points: line(1) }),
    svg("polyline", { class: "running", points: line(2) }),
    svg("circle", { class: "waiting", cx: x(last[0]), cy: y(last[1]), r: 3 }),
    svg("circle", { class: "running", cx: x(last[0]), cy: y(last[2]), r: 3 }),
    svg("text", { x: L + 8, y: 14 }, "— waiting"),
    svg("text", { x: L + 90, y: 14 }, "- - running"),
  );
}

start();
