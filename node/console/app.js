// The tidings console: five views over the node's own HTTP API (docs/api.md), nothing else.
// With --token, every request carries `Authorization: Bearer`; the token lives in this tab's
// sessionStorage only. Subscriptions use fetch() streams rather than EventSource, which
// cannot send that header.
import { drawDag } from "./dag.js";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("tidings-token") || "";
let stopView = () => {};

class Unauthorized extends Error {}

async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(path, { ...opts, headers });
  if (resp.status === 401) {
    askToken(token ? "That token was refused." : "");
    throw new Unauthorized("token needed");
  }
  return resp;
}

async function json(path, opts) {
  const resp = await api(path, opts);
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  return body;
}

function askToken(msg) {
  stopView();
  document.querySelectorAll("main > section").forEach((s) => (s.hidden = true));
  $("token-form").hidden = false;
  $("token-error").textContent = msg;
  $("peer").textContent = "";
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value;
  sessionStorage.setItem("tidings-token", token);
  $("token-form").hidden = true;
  route();
});

const short = (s) => (s && s.length > 16 ? `${s.slice(0, 8)}…${s.slice(-6)}` : String(s));
const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 23) : "");
const bytes = (n) => (n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);

function row(cells, tbody) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.append(c); else td.textContent = c;
    tr.append(td);
  }
  tbody.append(tr);
  return tr;
}

function fail(e, where) {
  if (e instanceof Unauthorized) return;
  where.textContent = `error: ${e.message}`;
  where.classList.add("error");
}

// ---- Node ----------------------------------------------------------------------------------

const IN = ["tidings_published_events_total", "tidings_replicas_stored_total"];
const OUT = ["tidings_deliveries_total"];

function sum(text, names) {
  let total = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (m && names.includes(m[1])) total += Number(m[3]);
  }
  return total;
}

async function showNode() {
  const facts = $("node-facts");
  const s = await json("/v1/status");
  $("peer").textContent = s.peer_id;
  facts.replaceChildren();
  const put = (k, v) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    const td = document.createElement("td");
    th.textContent = k;
    td.textContent = v;
    td.className = "mono";
    tr.append(th, td);
    facts.append(tr);
  };
  put("peer id", s.peer_id);
  put("role", s.role);
  put("version", s.version);
  put("API", s.api);
  put("listen", s.listen.join("\n") || "none");
  put("peers", `${s.peers} connected, ${s.brokers} brokers`);
  put("rendezvous for", s.rendezvous.join(" ") || "no roots yet");
  put("subscriptions", `${s.subscriptions} local, ${s.leases} leases`);
  put("store", `${s.store.blocks} blocks, ${bytes(s.store.bytes)}`);
  const samples = [];
  let last = null;
  const tick = async () => {
    try {
      const text = await (await api("/metrics")).text();
      const now = { t: performance.now(), in: sum(text, IN), out: sum(text, OUT) };
      if (last) {
        const dt = (now.t - last.t) / 1000;
        samples.push({ in: (now.in - last.in) / dt, out: (now.out - last.out) / dt });
        if (samples.length > 60) samples.shift();
        drawRates(samples);
      }
      last = now;
    } catch (e) {
      fail(e, $("rates-now"));
    }
  };
  await tick();
  const timer = setInterval(tick, 1000);
  return () => clearInterval(timer);
}

function drawRates(samples) {
  const svg = $("rates");
  const max = Math.max(1, ...samples.map((s) => Math.max(s.in, s.out)));
  const line = (k) => samples.map((s, i) => `${i * 10},${118 - (s[k] / max) * 110}`).join(" ");
  svg.replaceChildren();
  for (const k of ["in", "out"]) {
    const p = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    p.setAttribute("class", k);
    p.setAttribute("points", line(k));
    svg.append(p);
  }
  const s = samples[samples.length - 1];
  $("rates-now").textContent = `now: ${s.in.toFixed(1)} in, ${s.out.toFixed(1)} out (scale ${max.toFixed(0)}/s)`;
}

// ---- Streams -------------------------------------------------------------------------------

async function showStreams(topic) {
  const tbody = $("topics").querySelector("tbody");
  tbody.replaceChildren();
  const more = $("topics-more");
  const page = async (after) => {
    const q = new URLSearchParams({ limit: "100" });
    if (after) q.set("after", after);
    const r = await json(`/v1/topics?${q}`);
    for (const t of r.topics) {
      const tr = row([t.topic, t.events, t.authors, t.heads.length, when(t.last_time)], tbody);
      tr.dataset.topic = t.topic;
      tr.addEventListener("click", () => (location.hash = `#streams/${encodeURIComponent(t.topic)}`));
    }
    more.hidden = !r.next;
    more.onclick = () => page(r.next).catch((e) => fail(e, $("stream-summary")));
  };
  await page(null);
  $("stream").hidden = !topic;
  if (topic) await showStream(topic);
  return () => {};
}

async function showStream(topic) {
  $("stream-title").textContent = topic;
  const s = await json(`/v1/stream?${new URLSearchParams({ topic, limit: "500" })}`);
  const detail = $("event-detail");
  const stats = drawDag($("dag-box"), s, (e) => {
    detail.replaceChildren();
    const pre = document.createElement("pre");
    pre.id = "event-json";
    pre.textContent = JSON.stringify(
      { cid: e.cid, author: e.author, seq: e.seq, time: when(e.time), verified: e.verified, prev: e.prev, body: e.body },
      null, 2);
    detail.append(pre);
  });
  $("stream-summary").textContent =
    `${stats.nodes} events, ${stats.edges} links, ${stats.heads} heads, ${stats.authors} authors, ` +
    `${stats.merges} merges, ${stats.forks} forks` + (s.more ? " (older events not shown)" : "") +
    (s.missing.length ? `, ${s.missing.length} links to blocks this node does not hold` : "");
}

// ---- Live ----------------------------------------------------------------------------------

const live = { ctrl: null, paused: false, held: [], count: 0, times: [] };

function bytePosToChar(src, pos) {
  const enc = new TextEncoder();
  let i = 0;
  for (const ch of src) {
    if (enc.encode(src.slice(0, i)).length >= pos) break;
    i += ch.length;
  }
  return i;
}

function showFilterError(src, message) {
  const box = $("filter-error");
  const m = / at (\d+)\n/.exec(message);
  const first = message.split("\n")[0];
  if (m) {
    const at = bytePosToChar(src, Number(m[1]));
    box.textContent = `${first}\n${src}\n${" ".repeat([...src.slice(0, at)].length)}^`;
    box.dataset.position = at;
    $("filter").focus();
    $("filter").setSelectionRange(at, Math.min(at + 1, src.length));
  } else {
    box.textContent = message;
    delete box.dataset.position;
  }
  box.hidden = false;
}

function addLive(ev) {
  const tbody = $("live-events").querySelector("tbody");
  const tr = document.createElement("tr");
  const cells = [when(ev.time), ev.topic, short(ev.author), ev.seq, JSON.stringify(ev.body)];
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = c;
    tr.append(td);
  }
  tr.dataset.cid = ev.cid;
  tr.dataset.shown = Date.now(); // when it reached the screen, for the latency the tests measure
  tbody.prepend(tr);
  while (tbody.rows.length > 500) tbody.deleteRow(-1);
}

function liveStats() {
  const now = performance.now();
  live.times = live.times.filter((t) => now - t < 5000);
  $("live-count").textContent = live.count;
  $("live-rate").textContent = (live.times.length / 5).toFixed(1);
  $("live-held").textContent = live.held.length;
}

async function subscribe(src) {
  live.ctrl?.abort();
  const ctrl = new AbortController();
  live.ctrl = ctrl;
  live.count = 0;
  live.held = [];
  live.paused = false;
  $("live-events").querySelector("tbody").replaceChildren();
  $("filter-error").hidden = true;
  $("live-pause").textContent = "Pause";
  const resp = await api(`/v1/subscribe?${new URLSearchParams({ filter: src })}`, {
    headers: { Accept: "text/event-stream" },
    signal: ctrl.signal,
  });
  if (!resp.ok) {
    const body = await resp.json().catch(() => ({}));
    $("live-state").textContent = "not subscribed";
    showFilterError(src, body.error || `HTTP ${resp.status}`);
    return;
  }
  $("live-state").textContent = "subscribed";
  $("live-pause").disabled = false;
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (!data) continue; // keep-alive comment
        const ev = JSON.parse(data);
        live.count += 1;
        live.times.push(performance.now());
        if (live.paused) live.held.push(ev); else addLive(ev);
        liveStats();
      }
    }
    $("live-state").textContent = "closed by the node";
  } catch (e) {
    if (e.name !== "AbortError") $("live-state").textContent = `closed: ${e.message}`;
  }
}

$("live-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  subscribe($("filter").value).catch((e) => fail(e, $("live-state")));
});
$("live-pause").addEventListener("click", () => {
  live.paused = !live.paused;
  $("live-pause").textContent = live.paused ? "Resume" : "Pause";
  $("live-state").textContent = live.paused ? "paused (events are held)" : "subscribed";
  if (!live.paused) {
    for (const ev of live.held.splice(0)) addLive(ev);
  }
  liveStats();
});

async function showLive() {
  const timer = setInterval(liveStats, 1000);
  return () => clearInterval(timer); // the subscription itself runs on across views
}

// ---- Publish and fetch ---------------------------------------------------------------------

$("publish-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("publish-result");
  out.classList.remove("error");
  const text = $("pub-body").value;
  let body;
  try { body = JSON.parse(text); } catch { body = text; }
  try {
    const r = await json("/v1/publish", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ topic: $("pub-topic").value, body }),
    });
    out.textContent = `published seq ${r.seq} (${r.copies} copies)\ncid ${r.cid}`;
    out.dataset.cid = r.cid;
  } catch (e) {
    fail(e, out);
  }
});

$("fetch-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("fetch-result");
  const bar = $("fetch-progress");
  out.classList.remove("error");
  out.textContent = "fetching…";
  out.dataset.updates = 0;
  delete out.dataset.done;
  bar.removeAttribute("value"); // indeterminate until an estimate arrives
  try {
    const resp = await api("/v1/fetch", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ cid: $("fetch-cid").value.trim() }),
    });
    if (!resp.ok) throw new Error((await resp.json()).error);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\n")) >= 0) {
        const line = JSON.parse(buf.slice(0, cut));
        buf = buf.slice(cut + 1);
        if (line.progress) {
          const p = line.progress;
          if (p.estimate) { bar.max = p.estimate; bar.value = Math.min(p.blocks, p.estimate); }
          out.dataset.updates = Number(out.dataset.updates || 0) + 1;
          out.textContent = `${p.blocks} blocks, ${bytes(p.bytes)}` + (p.estimate ? ` of about ${p.estimate}` : "");
        } else if (line.done) {
          bar.max = 1; bar.value = 1;
          out.textContent = `done: ${JSON.stringify(line.done, null, 2)}`;
          out.dataset.done = "true";
        } else if (line.error) {
          throw new Error(line.error);
        }
      }
    }
  } catch (e) {
    bar.value = 0;
    fail(e, out);
  }
});

// ---- Views ---------------------------------------------------------------------------------

const VIEWS = { node: showNode, streams: showStreams, live: showLive, publish: async () => () => {}, fetch: async () => () => {} };

async function route() {
  stopView();
  stopView = () => {};
  const [name, arg] = location.hash.slice(1).split("/");
  const view = VIEWS[name] ? name : "node";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  document.querySelectorAll("main > section").forEach((s) => (s.hidden = s.id !== `view-${view}`));
  $("token-form").hidden = true;
  try {
    if (view !== "node" && !$("peer").textContent) {
      $("peer").textContent = (await json("/v1/status")).peer_id;
    }
    stopView = await VIEWS[view](arg && decodeURIComponent(arg));
    document.body.dataset.ready = view;
  } catch (e) {
    fail(e, $(`view-${view}`).querySelector("h2"));
  }
}

window.addEventListener("hashchange", route);
route();
