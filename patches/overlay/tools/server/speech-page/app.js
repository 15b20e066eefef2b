// The speech page of llama-server (q3build overlay): streams POST v1/audio/speech as SSE
// (response_format pcm), plays each speech.audio.delta with Web Audio as it arrives, and shows the
// figures of the speech.audio.done event. No requests leave this server.
"use strict";

const SAMPLE_RATE = 24000;   // Qwen3-TTS audio: 24 kHz mono, 16-bit PCM deltas
const STAGE_ORDER = ["prompt", "talker", "code_predictor", "codec_decode"];
const $ = (id) => document.getElementById(id);

// what a test (or a curious user) can read: window.q3speech.state
const state = { voicesLoaded: false, running: false, chunks: 0, samples: 0, scheduledSeconds: 0,
                playedSeconds: 0, ttfaMs: null, done: null, error: null };
window.q3speech = { state };

let audioCtx = null;
let abort = null;
let nextStart = 0;
let downloadUrl = null;

function showError(message) {
  state.error = message;
  $("error").textContent = message;
  $("error").classList.remove("hidden");
}

function clearError() {
  state.error = null;
  $("error").classList.add("hidden");
}

async function errorMessage(res) {
  // the route answers errors as OpenAI does: {"error": {"message": ..., "type": ..., "param": ...}}
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON */ }
  return `${res.status} ${res.statusText}${text ? ": " + text.slice(0, 300) : ""}`;
}

async function loadVoices() {
  const res = await fetch("v1/audio/voices");
  if (!res.ok) {
    $("model").textContent = "no speech model";
    showError(await errorMessage(res));
    $("speak").disabled = true;
    return;
  }
  const body = await res.json();
  $("model").textContent = body.model || "";
  const select = $("voice");
  select.replaceChildren();
  const def = document.createElement("option");
  def.value = "";
  def.textContent = body.default ? `default (${body.default})` : "default";
  select.append(def);
  const groups = new Map();
  for (const v of body.voices || []) {
    const kind = v.type || "voice";
    if (!groups.has(kind)) {
      const g = document.createElement("optgroup");
      g.label = { builtin: "built-in", cloned: "cloned" }[kind] || kind;
      groups.set(kind, g);
      select.append(g);
    }
    const o = document.createElement("option");
    o.value = v.id;
    o.textContent = v.mode ? `${v.name || v.id} (${v.mode})` : (v.name || v.id);
    groups.get(kind).append(o);
  }
  const lang = $("language");
  for (const l of body.languages || []) {
    if (l === "auto") continue;
    const o = document.createElement("option");
    o.value = o.textContent = l;
    lang.append(o);
  }
  state.voicesLoaded = true;
}

function pcm16ToFloat(bytes) {
  const n = bytes.length >> 1;
  const view = new DataView(bytes.buffer, bytes.byteOffset, n * 2);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = view.getInt16(2 * i, true) / 32768;
  return out;
}

function base64Bytes(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function play(samples) {
  const buf = audioCtx.createBuffer(1, samples.length, SAMPLE_RATE);
  buf.copyToChannel(samples, 0);
  const src = audioCtx.createBufferSource();
  src.buffer = buf;
  src.connect(audioCtx.destination);
  nextStart = Math.max(nextStart, audioCtx.currentTime + 0.05);
  src.start(nextStart);
  nextStart += buf.duration;
  state.scheduledSeconds += buf.duration;
  src.onended = () => { state.playedSeconds += buf.duration; };
}

function wavBlob(chunks, nBytes) {
  const header = new ArrayBuffer(44);
  const v = new DataView(header);
  const w = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  w(0, "RIFF"); v.setUint32(4, 36 + nBytes, true); w(8, "WAVE");
  w(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, SAMPLE_RATE, true); v.setUint32(28, SAMPLE_RATE * 2, true); v.setUint16(32, 2, true);
  v.setUint16(34, 16, true); w(36, "data"); v.setUint32(40, nBytes, true);
  return new Blob([header, ...chunks], { type: "audio/wav" });
}

const fmt = (x, digits, unit) => (typeof x === "number" ? x.toFixed(digits) + unit : "–");

function showDone(done, ttfaMs) {
  $("rtf").textContent = fmt(done.real_time_factor, 3, "");
  $("audio-s").textContent = fmt(done.audio_seconds, 2, " s");
  $("wall-s").textContent = fmt(done.wall_seconds, 2, " s");
  if (done.usage) $("usage").textContent = `${done.usage.input_tokens} / ${done.usage.output_tokens}`;
  $("ttfa").textContent = fmt(ttfaMs, 0, " ms");
  const body = $("stages").tBodies[0];
  body.replaceChildren();
  // pipeline order; a stage the server adds later goes last
  const rank = (k) => { const i = STAGE_ORDER.indexOf(k); return i < 0 ? STAGE_ORDER.length : i; };
  const stages = Object.entries(done.stages_ms || {}).sort((a, b) => rank(a[0]) - rank(b[0]));
  for (const [name, ms] of stages) {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    th.textContent = name.replace(/_/g, " ");
    const td = document.createElement("td");
    td.textContent = fmt(ms, 1, " ms");
    tr.append(th, td);
    body.append(tr);
  }
}

async function speak(ev) {
  ev.preventDefault();
  if (state.running) return;
  clearError();
  Object.assign(state, { running: true, chunks: 0, samples: 0, scheduledSeconds: 0, playedSeconds: 0,
                         ttfaMs: null, done: null });
  $("speak").disabled = true;
  $("stop").disabled = false;
  $("download").classList.add("hidden");
  $("player").classList.add("hidden");
  $("figures").classList.remove("hidden");
  for (const id of ["ttfa", "rtf", "audio-s", "wall-s", "usage"]) $(id).textContent = "–";
  $("stages").tBodies[0].replaceChildren();
  if (!audioCtx) audioCtx = new AudioContext({ sampleRate: SAMPLE_RATE });
  await audioCtx.resume();
  nextStart = 0;

  const request = { input: $("input").value, response_format: "pcm", stream_format: "sse",
                    speed: Number($("speed").value), language: $("language").value };
  if ($("voice").value) request.voice = $("voice").value;
  if ($("instructions").value.trim()) request.instructions = $("instructions").value.trim();

  const pcmChunks = [];
  let nBytes = 0;
  const t0 = performance.now();
  abort = new AbortController();
  try {
    const res = await fetch("v1/audio/speech", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
      signal: abort.signal,
    });
    if (!res.ok) throw new Error(await errorMessage(res));
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (!data) continue;
        const event = JSON.parse(data);
        if (event.type === "speech.audio.delta") {
          const bytes = base64Bytes(event.audio);
          if (state.ttfaMs === null) {
            state.ttfaMs = performance.now() - t0;
            $("ttfa").textContent = fmt(state.ttfaMs, 0, " ms");
          }
          pcmChunks.push(bytes);
          nBytes += bytes.length;
          state.chunks += 1;
          state.samples += bytes.length >> 1;
          play(pcm16ToFloat(bytes));
        } else if (event.type === "speech.audio.done") {
          state.done = event;
          showDone(event, state.ttfaMs);
        } else if (event.type === "speech.audio.error") {
          throw new Error((event.error && event.error.message) || "the stream failed");
        }
      }
    }
    if (!state.done) throw new Error("the stream ended without its speech.audio.done event");
    if (downloadUrl) URL.revokeObjectURL(downloadUrl);
    downloadUrl = URL.createObjectURL(wavBlob(pcmChunks, nBytes));
    $("download").href = downloadUrl;
    $("download").classList.remove("hidden");
    $("player").src = downloadUrl;
    $("player").classList.remove("hidden");
  } catch (e) {
    if (e.name !== "AbortError") showError(e.message);
  } finally {
    state.running = false;
    abort = null;
    $("speak").disabled = false;
    $("stop").disabled = true;
  }
}

$("speed").addEventListener("input", () => { $("speed-out").textContent = Number($("speed").value).toFixed(2); });
$("form").addEventListener("submit", speak);
$("stop").addEventListener("click", () => {
  if (abort) abort.abort();
  if (audioCtx) { audioCtx.close(); audioCtx = null; }
});
loadVoices().catch((e) => showError(e.message));
