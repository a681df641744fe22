// The Watus dashboard: one SSE stream from the agent (/v1/dashboard/events), the camera through the agent,
// and two POSTs (a typed message, stop talking). No libraries: the robot is offline.
"use strict";

// Opened as /?key=<key>: the agent answered with the cookie that stands for the key, so the key leaves the
// address bar (and the history, and any bookmark made from it).
if (new URLSearchParams(location.search).has("key")) history.replaceState(null, "", location.pathname);

const STAGES = ["asr_done", "scene_fetched", "llm_first_token", "first_sentence", "tts_first_audio",
  "playback_start", "playback_end"];
// The same stages and colours as the benchmark's waterfall (docs/e2e_waterfall.png).
const COLOURS = {
  vad_tail: "#b0b0b0", asr_done: "#4c72b0", scene_fetched: "#8172b2", llm_first_token: "#dd8452",
  first_sentence: "#c44e52", tts_first_audio: "#55a868", playback_start: "#937860", playback_end: "#ccb974",
};
const LABELS = {
  vad_tail: "VAD tail", asr_done: "ASR", scene_fetched: "scene", llm_first_token: "LLM to first token",
  first_sentence: "first token → first sentence", tts_first_audio: "TTS first chunk",
  playback_start: "to playback start", playback_end: "speaking",
};
const WATERFALL_ROWS = 10;
const $ = (id) => document.getElementById(id);
const turns = [];          // turn records, oldest first
const bubbles = new Map(); // turn_id -> {user, robot}
let visionOk = false;
let cameraBusy = false;

// --- small helpers -----------------------------------------------------------------------------------

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function percentile(values, p) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const i = (s.length - 1) * p;
  const lo = Math.floor(i), hi = Math.ceil(i);
  return s[lo] + (s[hi] - s[lo]) * (i - lo);
}

const fmt = (v, unit = "") => (v === null || v === undefined ? "–" : `${Math.round(v)}${unit}`);

function setState(text) { $("state").textContent = text; }

function setService(name, ok, title) {
  const pill = $(`svc-${name}`);
  pill.dataset.ok = String(ok);
  pill.title = title || "";
}

// --- conversation --------------------------------------------------------------------------------------

function bubble(turnId) {
  if (!bubbles.has(turnId)) bubbles.set(turnId, {});
  return bubbles.get(turnId);
}

function addMessage(kind, text, meta) {
  const box = $("conversation");
  const msg = el("div", { class: `msg ${kind}` });
  msg.append(document.createTextNode(text));
  if (meta) msg.append(el("span", { class: "meta" }, meta));
  box.append(msg);
  box.scrollTop = box.scrollHeight;
  return msg;
}

function onTurnStarted(d) {
  const b = bubble(d.turn_id);
  const meta = { text: "typed", preemptive: "heard (at the first pause)" }[d.source] || "heard";
  if (b.user) {  // a preemptive reply thrown away, started again from the final words
    b.user.firstChild.textContent = d.transcript;
    b.user.querySelector(".meta").textContent = meta;
    if (b.robot) { b.robot.remove(); b.robot = undefined; }
    return;
  }
  b.user = addMessage("user", d.transcript, meta);
  b.user.dataset.turnId = d.turn_id;
}

function onReplyDelta(d) {
  const b = bubble(d.turn_id);
  if (!b.robot) {
    b.robot = addMessage("robot", "");
    b.robot.dataset.turnId = d.turn_id;
  }
  b.robot.firstChild.textContent += d.text;
}

function onTurn(rec) {
  const b = bubble(rec.turn_id);
  if (!b.user) onTurnStarted({ turn_id: rec.turn_id, transcript: rec.transcript, source: rec.source });
  if (!b.robot) {
    b.robot = addMessage("robot", "");
    b.robot.dataset.turnId = rec.turn_id;
  }
  b.robot.firstChild.textContent = rec.reply || "";
  const bits = [];
  if (rec.e2e_ms !== null && rec.e2e_ms !== undefined) bits.push(`e2e ${fmt(rec.e2e_ms)} ms`);
  if (rec.perceived_ms !== null && rec.perceived_ms !== undefined) bits.push(`perceived ${fmt(rec.perceived_ms)} ms`);
  if (rec.interrupted) bits.push(`interrupted (${rec.interrupt_reason || "barge-in"})`);
  if (rec.error) bits.push(rec.error);
  let meta = b.robot.querySelector(".meta");
  if (!meta) { meta = el("span", { class: "meta" }); b.robot.append(meta); }
  meta.textContent = bits.join(" · ");
  b.robot.classList.toggle("interrupted", Boolean(rec.interrupted));
  b.robot.dataset.done = "true";
  if (!turns.some((t) => t.turn_id === rec.turn_id)) turns.push(rec);
  if (turns.length > 500) turns.shift();
  drawWaterfall();
  drawStages();
}

function onBargeIn(d) {
  const b = bubble(d.turn_id);
  if (b.robot) b.robot.classList.add("interrupted");
}

// --- latency ---------------------------------------------------------------------------------------------

function segments(rec) {
  const ms = rec.stages_ms || {};
  const out = [];
  const tail = (rec.audio_ms || {}).end_silence;
  if (tail) out.push({ stage: "vad_tail", from: -tail, to: 0 });
  let previous = 0;
  for (const stage of STAGES) {
    const at = ms[`${stage}_ms`];
    if (at === undefined || at === null) continue;
    out.push({ stage, from: previous, to: at });
    previous = at;
  }
  return out;
}

function drawWaterfall() {
  const root = $("waterfall");
  root.replaceChildren();
  const rows = turns.slice(-WATERFALL_ROWS);
  const rowH = 20, left = 70, right = 70;
  const width = root.clientWidth || 600;
  root.setAttribute("height", String(Math.max(40, rows.length * rowH + 24)));
  let min = 0, max = 1;
  for (const rec of rows) for (const s of segments(rec)) { min = Math.min(min, s.from); max = Math.max(max, s.to); }
  const x = (v) => left + ((v - min) / (max - min)) * (width - left - right);
  root.append(svg("line", { x1: x(0), x2: x(0), y1: 0, y2: rows.length * rowH + 4, stroke: "#000" }));
  rows.forEach((rec, i) => {
    const g = svg("g", { class: "turn-row", "data-turn-id": rec.turn_id, "data-e2e": rec.e2e_ms ?? "" });
    const y = i * rowH + 2;
    const label = svg("text", { x: 2, y: y + 13 });
    label.textContent = rec.turn_id.slice(-8);
    g.append(label);
    for (const s of segments(rec)) {
      const rect = svg("rect", { x: x(s.from), y, width: Math.max(1, x(s.to) - x(s.from)), height: rowH - 4,
        fill: COLOURS[s.stage], "fill-opacity": s.stage === "playback_end" ? 0.35 : 1, "data-stage": s.stage });
      const tip = svg("title");
      tip.textContent = `${LABELS[s.stage]}: ${fmt(s.to - s.from)} ms (at ${fmt(s.to)} ms)`;
      rect.append(tip);
      g.append(rect);
    }
    const total = svg("text", { x: width - right + 4, y: y + 13, class: "e2e" });
    total.textContent = rec.e2e_ms === null || rec.e2e_ms === undefined ? "no audio" : `${fmt(rec.e2e_ms)} ms`;
    g.append(total);
    root.append(g);
  });
  const axis = svg("text", { x: x(0) + 2, y: rows.length * rowH + 18 });
  axis.textContent = "0 = end of speech (t0)";
  root.append(axis);
}

function drawStages() {
  const body = $("stages").querySelector("tbody");
  body.replaceChildren();
  const rows = STAGES.map((stage) => [LABELS[stage], turns.map((t) => (t.stages_ms || {})[`${stage}_step_ms`])]);
  rows.push(["e2e", turns.map((t) => t.e2e_ms)], ["perceived", turns.map((t) => t.perceived_ms)]);
  for (const [name, raw] of rows) {
    const values = raw.filter((v) => typeof v === "number");
    const tr = el("tr");
    tr.append(el("td", {}, name), el("td", {}, fmt(percentile(values, 0.5))), el("td", {}, fmt(percentile(values, 0.95))),
      el("td", {}, String(values.length)));
    body.append(tr);
  }
}

function drawLegend() {
  const legend = $("legend");
  for (const [stage, colour] of Object.entries(COLOURS)) {
    const item = el("span", {}, LABELS[stage]);
    item.style.setProperty("--c", colour);
    legend.append(item);
  }
}

// --- camera, scene, health ------------------------------------------------------------------------------

function refreshCamera() {
  if (!visionOk || cameraBusy) return;
  cameraBusy = true;
  const img = $("camera");
  img.onload = img.onerror = () => { cameraBusy = false; };
  img.src = `/v1/dashboard/frame.jpg?t=${Date.now()}`;
}

function onScene(d) {
  visionOk = Boolean(d.ok);
  $("camera").hidden = !d.ok;
  $("camera-error").textContent = d.ok ? (d.stale ? `stale: ${fmt(d.age_ms)} ms old` : "") : `camera unavailable: ${d.error}`;
  $("fps").textContent = d.ok ? `${d.fps} FPS · ${d.stage_ms} ms/frame` : "";
  const body = $("people").querySelector("tbody");
  body.replaceChildren();
  for (const p of d.people || []) {
    const tr = el("tr");
    const label = (v) => (v ? `${v[0]} (${Math.round(v[1] * 100)}%)` : "–");
    tr.append(el("td", {}, p.track_id === null ? "–" : String(p.track_id)), el("td", {}, p.age === null ? "–" : `~${p.age}`),
      el("td", {}, label(p.gender)), el("td", {}, label(p.emotion)));
    body.append(tr);
  }
  const objects = Object.entries(d.objects || {}).map(([k, n]) => `${n} ${k}`).join(", ");
  $("objects").textContent = objects ? `objects: ${objects}` : "";
}

function health(entries) {
  const dl = $("health");
  dl.replaceChildren();
  for (const [k, v] of entries) dl.append(el("dt", {}, k), el("dd", {}, v));
}

const last = { services: null, llm: null, machine: null };

function drawHealth() {
  const s = last.services || {}, llm = last.llm || {}, m = last.machine || {};
  const audio = (s.audio && s.audio.health) || {};
  const mic = audio.mic || {}, speaker = audio.speaker || {};
  const vision = (s.vision && s.vision.health) || {};
  const mb = (used, total) => (used === null || used === undefined ? "–" : `${fmt(used)} / ${fmt(total)} MB`);
  const entries = [
    ["LLM", s.llm ? s.llm.status : "–"],
    ["LLM TTFT", fmt(llm.ttft_ms, " ms")],
    ["LLM decode", llm.decode_tps === null || llm.decode_tps === undefined ? "–" : `${llm.decode_tps} tok/s`],
    ["vision", s.vision ? s.vision.status : "–"],
    ["vision FPS", vision.fps === null || vision.fps === undefined ? "–" : String(vision.fps)],
    ["audio", s.audio ? s.audio.status : "–"],
    ["microphone", `${mic.state || "–"}${mic.level_dbfs !== undefined && mic.level_dbfs !== null ? ` · ${mic.level_dbfs} dBFS` : ""}`],
    ["VAD", mic.in_speech ? "speech" : "silence"],
    ["speaker", speaker.talking ? "talking" : "idle"],
    ["CPU", fmt(m.cpu_percent, " %")],
    ["RAM", mb(m.ram_used_mb, m.ram_total_mb)],
    ["swap", mb(m.swap_used_mb, m.swap_total_mb)],
  ];
  if (m.gpu_percent !== null && m.gpu_percent !== undefined) entries.push(["GPU", fmt(m.gpu_percent, " %")]);
  if (m.power_mw !== null && m.power_mw !== undefined) entries.push(["power", `${(m.power_mw / 1000).toFixed(1)} W`]);
  for (const [name, t] of Object.entries(m.temps_c || {})) if (t !== null) entries.push([`temp ${name}`, `${t} °C`]);
  health(entries);
  const level = mic.level_dbfs === undefined || mic.level_dbfs === null ? -120 : mic.level_dbfs;
  $("mic-level").style.width = `${Math.max(0, Math.min(100, (level + 80) * 1.25))}%`;
}

function onServices(d) {
  last.services = d;
  for (const name of ["llm", "vision", "audio"]) if (d[name]) setService(name, d[name].ok, d[name].status);
  visionOk = Boolean(d.vision && d.vision.ok);
  drawHealth();
}

// --- the stream ---------------------------------------------------------------------------------------------

function connect() {
  const source = new EventSource("/v1/dashboard/events");
  const on = (name, fn) => source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
  source.onopen = () => { setService("agent", true, "connected"); setState("connected"); };
  source.onerror = () => { setService("agent", false, "reconnecting"); setState("reconnecting…"); };
  on("services", onServices);
  on("llm", (d) => { last.llm = d; drawHealth(); });
  on("machine", (d) => { last.machine = d; drawHealth(); });
  on("scene", onScene);
  on("turn_started", onTurnStarted);
  on("reply_delta", onReplyDelta);
  on("turn", onTurn);
  on("barge_in", onBargeIn);
  on("speech_started", (d) => setState(d.during_playback ? "heard speech while talking" : "hearing speech"));
  on("speculative_transcript", (d) => setState(`heard so far: “${d.text.trim()}”`));
  on("turn_end", (d) => setState(`end of turn: ${d.decision}${d.probability === null ? "" : ` (${d.probability})`}`));
  on("preemptive", (d) => setState(d.outcome === "hit" ? "preemptive reply confirmed" : `preemptive reply dropped: ${d.reason}`));
  on("speech_ended", (d) => setState(d.dropped ? "listening" : "transcribing"));
  on("transcript", () => setState("thinking"));
  on("playback_started", () => setState("speaking"));
  on("playback_finished", (d) => { if (d.final) setState("listening"); });
  on("interrupted", () => setState("interrupted"));
  on("mic", (d) => setState(`microphone ${d.state}`));
}

async function post(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body) });
  if (!r.ok) {
    let message = `${r.status}`;
    try { message = (await r.json()).error.message; } catch (_) { /* not JSON */ }
    setState(`error: ${message}`);
  }
  return r;
}

$("say").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("say-text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  await post("/v1/turns", { text });
});
$("stop").addEventListener("click", () => post("/v1/stop"));

drawLegend();
drawWaterfall();
drawStages();
connect();
setInterval(refreshCamera, 500);
