// The browser page of the session server (interaction/server.py, protocol in
// interaction/protocol.py). Plain ES module, no build step.
//
// One "run" is one session: the microphone (and camera), an AudioContext with the
// capture and playback worklets (worklet.js), one WebSocket and one session on it.
// Anything that ends a run (Stop, a denied permission, the server gone, the session
// closed by the server, a watchdog) goes through teardown() and says why in the
// notice bar, with a button to try again. Every wait has a timeout: nothing hangs.

const $ = (id) => document.getElementById(id);

const TIMEOUTS = {
  info: 5000,          // GET /info
  connect: 8000,       // WebSocket open
  open: 90000,         // "opened" (a new option combination compiles a pool first)
  close: 3000,         // "closed" after Stop
  silence: 8000,       // no message from the server while live
  warmup: 30000,       // the same over a session's first 10 turns (a server may compile)
  mic: 6000,           // no audio from the microphone while live
};
const PREROLL_S = 0.1;         // playback: silence before the first chunk
const MAX_EXCESS_S = 0.4;      // playback: most audio held over its target before dropping
const TIMELINE_COLUMNS = 100;  // 20 s of 200 ms micro-turns
const ALIGN_MIN_MS = 60;       // first chunk: arrive at least this long before its tick

// Everything the page knows, also for tests (window.app).
const app = window.app = {
  phase: "loading",
  info: null,
  run: null,
  muted: false,
  notice: null,                // {kind, text, action}
  lastClosed: null,            // the last "closed" reply (server-side stats)
  history: [],                 // per finished run: {sent, outputs, closed, reason}
  // Sessions a run gave up on while the server could not answer (stuck, or the
  // connection dropped): the server keeps a session until it is closed or idle
  // long enough to be reaped, so on a small server the next run would be
  // refused as "full" by our own dead session. The next connection closes
  // these first, in order, before it opens its own.
  abandoned: [],               // [{session, token}]
  stats: null,
};

function freshStats() {
  return { sent: 0, outputs: 0, filled: 0, late: 0, realigned: 0, errors: 0,
           sentSeqs: [], outputSeqs: [], arrivals: [], rtt: [], compute: [],
           lastError: null,
           playback: { gaps: 0, played: 0, dropped: 0, energy: 0, chunks: 0 },
           modelText: "", heardText: "", frames: 0, micRate: null, startedAt: null };
}
app.stats = freshStats();

// ---------------------------------------------------------------------------
// Notices and phases
// ---------------------------------------------------------------------------
function setPhase(phase, label) {
  app.phase = phase;
  const el = $("status");
  el.dataset.phase = phase;
  el.textContent = label || phase;
  const live = phase === "live";
  $("start").disabled = !(phase === "idle" || phase === "error") || !app.info;
  $("stop").disabled = !(live || phase === "connecting");
  $("mute").disabled = !live;
  $("say").disabled = !live;
  $("say-send").disabled = !live;
  for (const el of $("options-form").elements) el.disabled = live || phase === "connecting";
  $("camera").disabled = live || phase === "connecting" || !(app.info && app.info.video);
}

function showNotice(kind, text, action) {
  app.notice = { kind, text, action: action ? action.label : null };
  const box = $("notice");
  box.dataset.kind = kind;
  $("notice-text").textContent = text;
  const btn = $("notice-action");
  if (action) {
    btn.textContent = action.label;
    btn.hidden = false;
    btn.onclick = () => { clearNotice(); action.fn(); };
  } else {
    btn.hidden = true;
    btn.onclick = null;
  }
  box.hidden = false;
}

function clearNotice() {
  app.notice = null;
  $("notice").hidden = true;
}

function systemLine(text) {
  addLine("system", "", text);
}

// ---------------------------------------------------------------------------
// Secure context and server info
// ---------------------------------------------------------------------------
function insecureText() {
  const port = location.port || (location.protocol === "https:" ? "443" : "80");
  return (`This page is not secure: it was loaded over plain http:// from ` +
    `${location.hostname}, which is not this machine, so the browser will not give it ` +
    `the microphone (nor the audio worklet it needs).\n` +
    `Either serve with TLS (the default: run experiments.serve without --notls; it makes ` +
    `a self-signed certificate) and open https://${location.host}/ — accept the ` +
    `certificate warning once — or tunnel to localhost: ssh -L ${port}:localhost:${port} ` +
    `${location.hostname}, then open http://localhost:${port}/.`);
}

function secureEnough() {
  return window.isSecureContext && !!(navigator.mediaDevices &&
    navigator.mediaDevices.getUserMedia) && typeof AudioWorkletNode !== "undefined";
}

async function fetchJSON(url, timeoutMs) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const r = await fetch(url, { signal: ctl.signal, cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    return await r.json();
  } catch (e) {
    if (e.name === "AbortError") throw new Error(`no answer within ${timeoutMs / 1000} s`);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

async function loadInfo(retry) {
  setPhase("loading", "contacting the server");
  $("server").textContent = location.origin;
  try {
    app.info = await fetchJSON("info", TIMEOUTS.info);
  } catch (e) {
    setPhase("error", "server unreachable");
    showNotice("error", `Cannot reach the server at ${location.origin} (${e.message}). ` +
      `Is experiments.serve still running?`, { label: "Reconnect", fn: retry || loadInfo });
    return false;
  }
  fillOptions(app.info);
  setPhase("idle", "ready");
  return true;
}

function fillOptions(info) {
  const voice = $("opt-voice");
  voice.replaceChildren(...info.voices.map((v) => new Option(v, v)));
  const cap = $("opt-capacity");
  cap.replaceChildren(...info.capacities.map((c) => new Option(String(c), String(c))));
  if (info.temperature != null && $("opt-temperature").value === "")
    $("opt-temperature").value = info.temperature;
  if (info.top_p != null && $("opt-top-p").value === "") $("opt-top-p").value = info.top_p;
  $("opt-prompt").maxLength = info.limits.max_prompt_bytes;
  $("say").maxLength = Math.min(1000, info.limits.max_text_bytes);
  const cam = $("camera");
  if (!info.video) {
    cam.checked = false;
    $("camera-label").title = "this model takes no video";
  } else {
    $("camera-label").title = `frames go to the model at ${info.video.width}x` +
      `${info.video.height}, one per ${info.chunk_ms} ms micro-turn`;
  }
  $("server").textContent = `${location.origin} · ${info.clock} clock · ` +
    `${info.chunk_ms} ms chunks · ${info.max_sessions} ` +
    `session${info.max_sessions === 1 ? "" : "s"} at most`;
}

function sessionOptions() {
  const o = { sample_rate: app.info.sample_rate, voice: $("opt-voice").value || "default" };
  const t = parseFloat($("opt-temperature").value);
  if (Number.isFinite(t) && t !== app.info.temperature) o.temperature = t;
  const p = parseFloat($("opt-top-p").value);
  if (Number.isFinite(p) && p !== app.info.top_p) o.top_p = p;
  const c = parseInt($("opt-capacity").value, 10);
  if (Number.isFinite(c)) o.capacity_turns = c;
  const s = parseInt($("opt-seed").value, 10);
  if (Number.isFinite(s) && s > 0) o.seed = s;
  const prompt = $("opt-prompt").value.trim();
  if (prompt) o.prompt = prompt;
  return o;
}

// ---------------------------------------------------------------------------
// Media
// ---------------------------------------------------------------------------
function mediaErrorText(e, what) {
  switch (e && e.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
    case "SecurityError":
      return `${what} permission was denied, so the page cannot listen. Allow the ` +
        `${what.toLowerCase()} for ${location.host} (the icon at the left of the address ` +
        `bar, or the browser's site settings), then press Try again.`;
    case "NotFoundError":
    case "DevicesNotFoundError":
      return `No ${what.toLowerCase()} was found. Plug one in (or enable it in the ` +
        `system settings), then press Try again.`;
    case "NotReadableError":
    case "TrackStartError":
      return `The ${what.toLowerCase()} is in use by another program or could not be ` +
        `started (${e.message}). Close the other program, then press Try again.`;
    case "OverconstrainedError":
      return `The ${what.toLowerCase()} cannot record in the format asked for ` +
        `(${e.constraint || e.message}).`;
    default:
      return `Could not open the ${what.toLowerCase()}: ${e && e.name}: ${e && e.message}`;
  }
}

async function getMedia(wantCamera) {
  const audio = { channelCount: 1, echoCancellation: true, noiseSuppression: false,
                  autoGainControl: true };
  if (wantCamera) {
    try {
      return { stream: await navigator.mediaDevices.getUserMedia({
        audio, video: { width: { ideal: 320 }, height: { ideal: 240 } } }), camera: true };
    } catch (e) {
      if (e.name === "NotAllowedError" || e.name === "SecurityError") {
        // Was it the camera or the microphone? Ask for the microphone alone.
        const s = await navigator.mediaDevices.getUserMedia({ audio });
        systemLine("camera not available: " + mediaErrorText(e, "Camera"));
        return { stream: s, camera: false };
      }
      if (e.name !== "NotFoundError" && e.name !== "NotReadableError" &&
          e.name !== "OverconstrainedError") throw e;
      const s = await navigator.mediaDevices.getUserMedia({ audio });
      systemLine("camera not available: " + mediaErrorText(e, "Camera"));
      return { stream: s, camera: false };
    }
  }
  return { stream: await navigator.mediaDevices.getUserMedia({ audio }), camera: false };
}

// ---------------------------------------------------------------------------
// Wire format helpers
// ---------------------------------------------------------------------------
function pcm16Base64(f32) {
  const bytes = new Uint8Array(f32.length * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < f32.length; i++) {
    const v = Math.max(-1, Math.min(1, f32[i]));
    view.setInt16(2 * i, Math.round(v * 32767), true);
  }
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000)
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

function base64Pcm16ToFloat(b64) {
  const bin = atob(b64);
  const n = bin.length >> 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
    if (v >= 0x8000) v -= 0x10000;
    out[i] = v / 32768;
  }
  return out;
}

function rms(a) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return a.length ? Math.sqrt(s / a.length) : 0;
}

// ---------------------------------------------------------------------------
// A run: start to teardown
// ---------------------------------------------------------------------------
class Run {
  constructor() {
    this.id = (Run.count = (Run.count || 0) + 1);
    this.ws = null; this.media = null; this.camera = false; this.ctx = null;
    this.capture = null; this.playback = null; this.source = null;
    this.session = null; this.token = null; this.caps = null;
    this.seq = 0; this.sentAt = new Map(); this.micRms = new Map();
    this.pending = new Map(); this.refs = 0;
    this.live = false; this.ended = false; this.stopping = false;
    this.goneOnServer = false;   // the server closed or forgot this run's session
    this.tickAt = null; this.holding = null; this.lastMsgAt = 0; this.lastChunkAt = 0;
    this.pendingText = ""; this.timers = [];
  }
  get current() { return app.run === this && !this.ended; }
}

async function start() {
  if (app.run && !app.run.ended) return;
  clearNotice();
  if (!secureEnough()) {
    setPhase("error", "insecure page");
    showNotice("error", insecureText(), { label: "Try again", fn: start });
    return;
  }
  const run = app.run = new Run();
  // Made inside the click that started us: browsers let audio start only then.
  try {
    run.ctx = new AudioContext({ latencyHint: "interactive" });
  } catch (e) {
    return fail(run, `This browser cannot start Web Audio: ${e.name}: ${e.message}`,
                "Try again", "audio");
  }
  // The server may have gone (or restarted with other options) since the page loaded.
  if (!(await loadInfo(start))) { teardown(run, "server unreachable"); return; }
  if (!run.current) return;
  app.stats = freshStats();
  resetView();
  setPhase("connecting", "asking for the microphone");
  try {
    const { stream, camera } = await getMedia($("camera").checked && !!app.info.video);
    run.media = stream; run.camera = camera;
  } catch (e) {
    return fail(run, mediaErrorText(e, "Microphone"), "Try again", "microphone");
  }
  if (!run.current) return cleanupMedia(run);
  for (const track of run.media.getTracks()) {
    track.onended = () => {
      if (run.current && track.kind === "audio")
        fail(run, "The microphone stopped (unplugged, or taken by another program). " +
             "Press Try again to start a new session.", "Try again", "microphone ended");
    };
  }
  try {
    await setupAudio(run);
  } catch (e) {
    return fail(run, `Could not start audio in this browser: ${e.name}: ${e.message}`,
                "Try again", "audio");
  }
  if (!run.current) return;
  setPhase("connecting", "connecting");
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
  try {
    run.ws = await openSocket(url, TIMEOUTS.connect);
  } catch (e) {
    return fail(run, `Cannot reach the session server at ${url} (${e.message}). ` +
      `Is experiments.serve running?`, "Reconnect", "connect");
  }
  if (!run.current) { run.ws.close(); return; }
  run.ws.onmessage = (e) => onMessage(run, e.data);
  run.ws.onclose = (e) => onSocketClosed(run, e);
  await closeAbandoned(run);
  if (!run.current) return;
  setPhase("connecting", "opening a session");
  const slow = setTimeout(() => { if (run.current && !run.session)
    setPhase("connecting", "opening a session (the server compiles these options)"); }, 3000);
  let opened;
  try {
    opened = await request(run, { type: "open", options: sessionOptions() }, TIMEOUTS.open);
  } catch (e) {
    clearTimeout(slow);
    if (!run.current) return;
    if (e.reply) {
      const what = e.reply.code === "capacity" ? "The server is full" :
                   "The server refused the session";
      return fail(run, `${what}: ${e.reply.error}`, "Try again", "open refused");
    }
    return fail(run, `No session: ${e.message}`, "Reconnect", "open");
  }
  clearTimeout(slow);
  if (!run.current) return;
  run.session = opened.session; run.token = opened.token; run.caps = opened.capabilities;
  if (opened.next_tick_in_ms != null) run.tickAt = performance.now() + opened.next_tick_in_ms;
  run.lastMsgAt = performance.now();
  run.lastChunkAt = performance.now();
  run.live = true;
  app.stats.startedAt = performance.now();
  $("st-session").textContent = run.session;
  $("options").open = false;          // options apply at Start; the view needs the room
  setPhase("live", "live");
  systemLine(`session ${run.session} opened (${run.caps.capacity_turns} turns of context, ` +
             `${run.caps.clock} clock${run.camera ? ", camera on" : ""})`);
  run.source.connect(run.capture);        // chunks start flowing now
  run.timers.push(setInterval(() => watchdog(run), 500));
}

async function setupAudio(run) {
  const ctx = run.ctx;
  await ctx.audioWorklet.addModule("worklet.js");
  if (ctx.state !== "running") await ctx.resume();
  app.stats.micRate = ctx.sampleRate;
  $("st-mic").textContent = `${ctx.sampleRate} Hz -> ${app.info.sample_rate} Hz`;
  run.source = ctx.createMediaStreamSource(run.media);
  run.capture = new AudioWorkletNode(ctx, "capture", {
    numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: "explicit",
    processorOptions: { outRate: app.info.sample_rate,
                        chunkSamples: app.info.samples_per_chunk } });
  run.capture.port.onmessage = (e) => onChunk(run, e.data);
  run.playback = new AudioWorkletNode(ctx, "playback", {
    numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { inRate: app.info.sample_rate, prerollSeconds: PREROLL_S,
                        maxExcessSeconds: MAX_EXCESS_S,
                        chunkSeconds: app.info.chunk_ms / 1000 } });
  run.playback.port.onmessage = (e) => {
    if (e.data.type === "stats" && app.run === run) {
      app.stats.playback = e.data;
      $("st-gaps").textContent = String(e.data.gaps);
    }
  };
  run.playback.connect(ctx.destination);
  if (run.camera) {
    const v = $("preview");
    v.srcObject = run.media;
    v.hidden = false;
    v.play().catch(() => {});
    run.canvas = document.createElement("canvas");
    run.canvas.width = app.info.video.width;
    run.canvas.height = app.info.video.height;
  }
}

function openSocket(url, timeoutMs) {
  return new Promise((resolve, reject) => {
    let ws;
    try { ws = new WebSocket(url); } catch (e) { reject(e); return; }
    const timer = setTimeout(() => {
      ws.onopen = ws.onclose = null; ws.close();
      reject(new Error(`no answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    ws.onopen = () => { clearTimeout(timer); ws.onclose = null; resolve(ws); };
    ws.onclose = (e) => {
      clearTimeout(timer);
      reject(new Error(`the connection was refused or closed, code ${e.code}`));
    };
  });
}

function request(run, msg, timeoutMs) {
  const ref = `r${++run.refs}`;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      run.pending.delete(ref);
      reject(new Error(`no reply to ${msg.type} within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    run.pending.set(ref, { resolve, reject, timer });
    try {
      run.ws.send(JSON.stringify({ ...msg, ref }));
    } catch (e) {
      clearTimeout(timer); run.pending.delete(ref); reject(e);
    }
  });
}

async function closeAbandoned(run) {
  // A session already reaped answers "forbidden": it is gone either way.
  while (app.abandoned.length && run.current) {
    const { session, token } = app.abandoned[0];
    setPhase("connecting", `closing the earlier session ${session}`);
    try {
      await request(run, { type: "close", session, token }, TIMEOUTS.close);
    } catch (e) {
      if (!e.reply && run.current) return;   // no answer: keep it for the next run
    }
    app.abandoned.shift();
  }
}

function rejectPending(run, err) {
  for (const [, p] of run.pending) { clearTimeout(p.timer); p.reject(err); }
  run.pending.clear();
}

// ---- sending ----------------------------------------------------------------
function onChunk(run, m) {
  if (!run.live || !run.current || m.type !== "chunk") return;
  run.lastChunkAt = performance.now();
  const audio = m.audio;
  if (app.muted) audio.fill(0);
  const level = app.muted ? 0 : m.rms;
  if (run.holding) { run.holding.push([audio, level]); return; }
  if (run.seq === 0 && run.tickAt != null && app.info.clock === "realtime") {
    // The session starts at the tick that takes chunk 0, and every later chunk is
    // due one period after the one before: send chunk 0 right after a tick, not
    // just before one, so each chunk has most of a period to spare.
    const period = app.info.chunk_ms;
    const now = performance.now();
    let wait = (run.tickAt - now) % period;
    if (wait < 0) wait += period;
    if (wait < ALIGN_MIN_MS) {
      run.holding = [[audio, level]];
      setTimeout(() => {
        const held = run.holding || [];
        run.holding = null;
        for (const [a, l] of held) sendChunk(run, a, l);
      }, wait + 15);
      return;
    }
  }
  sendChunk(run, audio, level);
}

function grabFrame(run) {
  const v = $("preview");
  if (!run.camera || !v.videoWidth) return null;
  const c = run.canvas, g = c.getContext("2d");
  // Centre crop to the model's aspect, then scale to its frame size.
  const ar = c.width / c.height, vr = v.videoWidth / v.videoHeight;
  let sw = v.videoWidth, sh = v.videoHeight;
  if (vr > ar) sw = sh * ar; else sh = sw / ar;
  g.drawImage(v, (v.videoWidth - sw) / 2, (v.videoHeight - sh) / 2, sw, sh,
              0, 0, c.width, c.height);
  const url = c.toDataURL("image/jpeg", 0.9);
  return url.slice(url.indexOf(",") + 1);
}

function sendChunk(run, audio, level) {
  if (!run.live || !run.current || run.ws.readyState !== WebSocket.OPEN) return;
  const seq = run.seq++;
  const msg = { type: "append", session: run.session, token: run.token, seq,
                audio: pcm16Base64(audio) };
  const frame = grabFrame(run);
  if (frame) { msg.frame = frame; app.stats.frames++; }
  if (run.pendingText) { msg.text = run.pendingText; run.pendingText = ""; }
  run.sentAt.set(seq, performance.now());
  run.micRms.set(seq, level);
  run.ws.send(JSON.stringify(msg));
  app.stats.sent++;
  app.stats.sentSeqs.push(seq);
  $("st-sent").textContent = String(app.stats.sent);
  updateSpeech(level);
}

// ---- receiving --------------------------------------------------------------
function onMessage(run, raw) {
  if (!run.current) return;
  run.lastMsgAt = performance.now();
  let msg;
  try { msg = JSON.parse(raw); } catch (e) { return; }
  if (msg.ref != null && run.pending.has(msg.ref)) {
    const p = run.pending.get(msg.ref);
    run.pending.delete(msg.ref);
    clearTimeout(p.timer);
    if (msg.type === "error") {
      const err = new Error(`${msg.code}: ${msg.error}`);
      err.reply = msg;
      p.reject(err);
    } else {
      p.resolve(msg);
    }
    return;
  }
  if (msg.type === "output") return onOutput(run, msg);
  if (msg.type === "closed") {
    app.lastClosed = msg;
    run.goneOnServer = true;
    if (run.stopping) return;
    return fail(run, `The server closed the session: ${msg.reason}.`,
                "Start a new session", "closed by the server", "warn");
  }
  if (msg.type === "error") return onError(run, msg);
}

function onError(run, msg) {
  app.stats.errors++;
  app.stats.lastError = msg;
  if (msg.code === "late") {
    // Our chunk missed its tick (the turn was filled with silence). If the next
    // chunk would miss its own too, send a silent one for that turn now: the
    // stream then runs one turn later with a whole period to spare.
    app.stats.late++;
    if (msg.seq === run.seq - 1 && run.live) {
      app.stats.realigned++;
      sendChunk(run, new Float32Array(app.info.samples_per_chunk), 0);
    }
    return;
  }
  if (msg.code === "forbidden") {
    run.goneOnServer = true;
    return fail(run, "The server no longer has this session: it was closed, reaped " +
                "after being idle, or the server restarted.", "Start a new session",
                "session gone", "warn");
  }
  if (msg.code === "ahead" || msg.code === "out_of_order") {
    // The server did not take this chunk (it holds too many already: it is slower
    // than real time), so it still expects that seq: resend from there. The
    // refused audio is lost; say so once.
    const m = /expected seq (\d+)/.exec(msg.error || "");
    const expected = m ? parseInt(m[1], 10) : msg.seq;
    if (Number.isInteger(expected) && expected < run.seq) run.seq = expected;
    app.stats.dropped = (app.stats.dropped || 0) + 1;
    if (!run.warnedBehind) {
      run.warnedBehind = true;
      const ms = app.stats.compute.length ? app.stats.compute[app.stats.compute.length - 1] : null;
      showNotice("warn", `The server is falling behind real time` +
                 (ms ? ` (its last step took ${ms.toFixed(0)} ms for a ` +
                       `${app.info.chunk_ms} ms turn)` : "") +
                 `: it refuses chunks it has no room for, so some of your audio is ` +
                 `lost. A lighter model, fewer sessions or a faster machine helps.`);
    }
    return;
  }
  systemLine(`server error ${msg.code}: ${msg.error}`);
}

function onOutput(run, msg) {
  const now = performance.now();
  const s = app.stats;
  s.outputs++;
  s.outputSeqs.push(msg.seq);
  s.arrivals.push(Math.round(now - s.startedAt));
  if (msg.filled) s.filled++;
  if (msg.timing && msg.timing.next_tick_in_ms != null)
    run.tickAt = now + msg.timing.next_tick_in_ms;
  const audio = base64Pcm16ToFloat(msg.audio);
  const level = rms(audio);
  run.playback.port.postMessage({ type: "audio", audio }, [audio.buffer]);
  let rtt = null;
  if (run.sentAt.has(msg.seq)) {
    rtt = now - run.sentAt.get(msg.seq);
    run.sentAt.delete(msg.seq);
    s.rtt.push(rtt);
    if (s.rtt.length > 600) s.rtt.shift();
  }
  if (msg.timing) {
    s.compute.push(msg.timing.compute_ms);
    if (s.compute.length > 600) s.compute.shift();
  }
  const events = msg.events || [];
  const bg = events.filter((e) => e.stream === "background" || e.stream === "job");
  // What the model heard this turn comes before what it said.
  const heard = msg.heard && msg.heard.user_text;
  if (heard) {
    s.heardText += heard;
    appendTo("heard", "you (text)", heard);
  }
  if (msg.text) {
    s.modelText += msg.text;
    appendTo("model", "model", msg.text);
  }
  for (const e of events) {
    if (e.stream === "control") appendTo("model", "model", e.text, "ctl");
    else if (e.stream === "background") appendTo("background", "background", e.text);
    else if (e.stream === "job") addLine("job", "job", `${e.job}: ${e.text}`);
  }
  const user = run.micRms.has(msg.seq) ? run.micRms.get(msg.seq) : 0;
  run.micRms.delete(msg.seq);
  pushColumn({ seq: msg.seq, user, model: level, text: msg.text || "",
               ctl: events.some((e) => e.stream === "control"), bg: bg.length > 0,
               filled: !!msg.filled, rtt });
  updateNumbers(msg);
}

function onSocketClosed(run, e) {
  rejectPending(run, new Error(`the connection closed (code ${e.code})`));
  if (!run.current || run.stopping) return;
  const why = e.code === 1001 ? "the server shut down" :
              e.code === 1006 ? "no close frame: the server stopped or crashed, or the " +
                                "network dropped" :
              e.code === 1008 || e.code === 1009 ? `the server dropped us: ${e.reason}` :
              e.reason || "closed";
  fail(run, `Lost the connection to the server (code ${e.code}, ${why}). ` +
       `The session is over; press Reconnect once the server is back.`,
       "Reconnect", "connection lost");
}

function watchdog(run) {
  if (!run.current || !run.live) return;
  const now = performance.now();
  const silent = now - run.lastMsgAt;
  const limit = app.stats.outputs < 10 ? TIMEOUTS.warmup : TIMEOUTS.silence;
  if (silent > 1500) setPhase("live", `waiting for the server: ${(silent / 1000).toFixed(0)} s`);
  else if (app.phase === "live" && $("status").textContent !== "live") setPhase("live", "live");
  if (silent > limit) {
    fail(run, `No reply from the server for ${Math.round((now - run.lastMsgAt) / 1000)} s ` +
         `(it may be overloaded or stuck). The session was abandoned.`, "Reconnect",
         "server silent");
  } else if (now - run.lastChunkAt > TIMEOUTS.mic) {
    fail(run, `The microphone delivered no audio for ` +
         `${Math.round((now - run.lastChunkAt) / 1000)} s (audio suspended?).`,
         "Try again", "microphone silent");
  }
  $("st-time").textContent = `${((now - app.stats.startedAt) / 1000).toFixed(1)} s`;
}

// ---- ending -----------------------------------------------------------------
function fail(run, text, actionLabel, reason, kind = "error") {
  if (run.ended) return;
  teardown(run, reason);
  setPhase("error", reason);
  showNotice(kind, text, { label: actionLabel, fn: start });
  systemLine(text);
}

function cleanupMedia(run) {
  if (run.media) for (const t of run.media.getTracks()) { t.onended = null; t.stop(); }
  run.media = null;
}

function teardown(run, reason) {
  if (run.ended) return;
  run.ended = true;
  run.live = false;
  for (const t of run.timers) clearInterval(t);
  rejectPending(run, new Error("the session ended"));
  try { if (run.source) run.source.disconnect(); } catch (e) { /* already */ }
  if (run.capture) run.capture.port.postMessage({ type: "stop" });
  if (run.playback) run.playback.port.postMessage({ type: "stop" });
  cleanupMedia(run);
  if (run.ctx) run.ctx.close().catch(() => {});
  if (run.session && !run.goneOnServer) {
    app.abandoned.push({ session: run.session, token: run.token });
    // Said now too: a server that is only slow frees the session when it reads this.
    if (run.ws && run.ws.readyState === WebSocket.OPEN) {
      try {
        run.ws.send(JSON.stringify({ type: "close", session: run.session, token: run.token }));
      } catch (e) { /* closing anyway */ }
    }
  }
  if (run.ws && run.ws.readyState <= WebSocket.OPEN) {
    run.ws.onclose = null;
    run.ws.close(1000, "page: " + reason);
  }
  const v = $("preview");
  v.srcObject = null;
  v.hidden = true;
  app.history.push({ sent: app.stats.sent, outputs: app.stats.outputs, reason,
                     closed: app.lastClosed });
}

async function stop() {
  const run = app.run;
  if (!run || run.ended) return;
  run.stopping = true;
  run.live = false;
  if (run.session && run.ws && run.ws.readyState === WebSocket.OPEN) {
    try {
      const closed = await request(run, { type: "close", session: run.session,
                                          token: run.token }, TIMEOUTS.close);
      app.lastClosed = closed;
      run.goneOnServer = true;
      const st = closed.stats || {};
      teardown(run, "stopped");
      setPhase("idle", "stopped");
      const text = `Session closed. The server received ${st.received} chunks` +
        (st.filled ? `, filled ${st.filled} late or missing ones with silence` : "") + ".";
      showNotice("info", text, { label: "Start again", fn: start });
      systemLine(text);
      return;
    } catch (e) {
      if (!run.ended) {
        teardown(run, "stopped");
        setPhase("idle", "stopped");
        showNotice("warn", `Stopped, but the server did not confirm the close ` +
                   `(${e.message}).`, { label: "Start again", fn: start });
      }
      return;
    }
  }
  teardown(run, "stopped");
  setPhase("idle", "stopped");
}

// ---------------------------------------------------------------------------
// View: transcript, timeline, numbers
// ---------------------------------------------------------------------------
// The transcript: one growing line per stream (your typed text as the model heard
// it, the model's text, your speech), in the order the lines began. A stream's line
// ends at a newline, after a pause, or when long; background results and jobs get a
// line each.
const LINE_GAP_MS = 1500, LINE_MAX = 240;
let current = {};          // kind -> {el, t, at, len}
let speech = null;         // the current "you (speech)" line: {t, turns, quiet}

function resetView() {
  $("transcript").replaceChildren();
  current = {}; speech = null;
  columns.length = 0;
  drawTimeline();
  drawRtt();
  for (const id of ["st-sent", "st-outputs", "st-filled", "st-gaps"]) $(id).textContent = "0";
  for (const id of ["rtt-last", "rtt-p50", "compute", "st-time", "st-session"])
    $(id).textContent = "-";
}

function addLine(kind, who, text, cls) {
  const box = $("transcript");
  const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  const el = document.createElement("div");
  el.className = `line ${kind}`;
  const w = document.createElement("span");
  w.className = "who";
  w.textContent = who;
  const t = document.createElement("span");
  t.className = "txt";
  el.append(w, t);
  box.append(el);
  while (box.childElementCount > 400) box.firstElementChild.remove();
  const line = { el, t, at: performance.now(), len: 0 };
  if (text) appendSpan(line, text, cls);
  if (stick) box.scrollTop = box.scrollHeight;
  return line;
}

function appendSpan(line, text, cls) {
  if (cls) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = ` ${text} `;
    line.t.append(s);
  } else {
    line.t.append(document.createTextNode(text));
  }
  line.len += text.length;
  line.at = performance.now();
}

function appendTo(kind, who, text, cls) {
  const parts = text.split("\n");
  parts.forEach((part, i) => {
    if (i > 0) delete current[kind];            // a newline ends the line
    if (!part) return;
    let line = current[kind];
    const now = performance.now();
    if (!line || !line.el.isConnected || now - line.at > LINE_GAP_MS || line.len > LINE_MAX)
      line = current[kind] = addLine(kind, who, "");
    appendSpan(line, part, cls);
  });
  const box = $("transcript");
  box.scrollTop = box.scrollHeight;
}

const SPEECH_LEVEL = 0.015;
function updateSpeech(level) {
  // A line per stretch of microphone speech (the page does no recognition: the
  // model hears the audio itself; this marks when and how long you spoke).
  if (level >= SPEECH_LEVEL) {
    if (!speech || !speech.el.isConnected) {
      const line = addLine("user", "you", "");
      speech = { el: line.el, t: line.t, turns: 0, quiet: 0 };
    }
    speech.turns++;
    speech.quiet = 0;
    speech.t.textContent = `speaking (${(speech.turns * app.info.chunk_ms / 1000).toFixed(1)} s)`;
  } else if (speech && ++speech.quiet >= 3) {
    speech = null;
  }
}

const columns = [];
function pushColumn(c) {
  columns.push(c);
  if (columns.length > TIMELINE_COLUMNS) columns.shift();
  $("timeline").dataset.columns = String(app.stats.outputs);
  drawTimeline();
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function drawTimeline() {
  const cv = $("timeline");
  const g = cv.getContext("2d");
  const W = cv.width, H = cv.height, left = 110;
  g.clearRect(0, 0, W, H);
  const lanes = [["you (mic)", "--user"], ["model speech", "--model"],
                 ["model text", "--text"], ["background", "--bg-job"], ["filled", "--filled"]];
  const laneH = (H - 16) / lanes.length;
  g.font = "11px system-ui, sans-serif";
  g.textBaseline = "middle";
  lanes.forEach(([name], i) => {
    g.fillStyle = "#6e6e73";
    g.fillText(name, 6, 8 + laneH * (i + 0.5));
    g.fillStyle = "#f0f0f3";
    g.fillRect(left, 8 + laneH * i + laneH - 1, W - left, 1);
  });
  const cw = (W - left) / TIMELINE_COLUMNS;
  const level = (x) => Math.min(1, Math.sqrt(x / 0.3));
  const col = {};
  for (const [, v] of lanes) col[v] = cssVar(v);
  columns.forEach((c, i) => {
    const x = left + i * cw;
    const bar = (lane, frac, color) => {
      const h = Math.max(1, frac * (laneH - 4));
      const y0 = 8 + laneH * lane + (laneH - h) / 2;
      g.fillStyle = color;
      g.fillRect(x + 1, y0, Math.max(1, cw - 2), h);
    };
    if (c.user > 0.002) bar(0, level(c.user), col["--user"]);
    if (c.model > 0.002) bar(1, level(c.model), col["--model"]);
    if (c.ctl) bar(2, 0.9, col["--bg-job"]);
    else if (c.text.trim()) bar(2, Math.min(1, 0.25 + c.text.length / 8), col["--text"]);
    if (c.bg) bar(3, 0.8, col["--bg-job"]);
    if (c.filled) bar(4, 0.8, col["--filled"]);
    if (c.seq % 25 === 0) {              // a label every 5 s
      g.fillStyle = "#9a9aa0";
      g.fillText(`${(c.seq * app.info.chunk_ms / 1000).toFixed(0)} s`, x, H - 4);
    }
  });
}

function percentile(xs, q) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

function drawRtt() {
  const cv = $("rtt-chart"), g = cv.getContext("2d");
  const xs = (app.stats.rtt || []).slice(-100);
  g.clearRect(0, 0, cv.width, cv.height);
  if (!xs.length) return;
  const top = Math.max(400, ...xs);
  g.strokeStyle = cssVar("--user");
  g.beginPath();
  xs.forEach((v, i) => {
    const x = (i / 99) * (cv.width - 2) + 1, y = cv.height - 2 - (v / top) * (cv.height - 6);
    if (i) g.lineTo(x, y); else g.moveTo(x, y);
  });
  g.stroke();
  g.fillStyle = "#9a9aa0";
  g.font = "10px system-ui, sans-serif";
  g.fillText(`${Math.round(top)} ms`, 4, 10);
}

function updateNumbers(msg) {
  const s = app.stats;
  $("st-outputs").textContent = String(s.outputs);
  $("st-filled").textContent = `${s.filled} (${s.late} late)`;
  const last = s.rtt.length ? s.rtt[s.rtt.length - 1] : null;
  $("rtt-last").textContent = last == null ? "-" : `${last.toFixed(0)} ms`;
  const recent = s.rtt.slice(-100);
  const p50 = percentile(recent, 0.5), p95 = percentile(recent, 0.95);
  $("rtt-p50").textContent = p50 == null ? "-" : `${p50.toFixed(0)} / ${p95.toFixed(0)} ms`;
  if (msg.timing) $("compute").textContent = `${msg.timing.compute_ms.toFixed(1)} ms ` +
    `(batch ${msg.timing.batch})`;
  drawRtt();
}

// ---------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------
function init() {
  $("start").onclick = () => start();
  $("stop").onclick = () => stop();
  $("mute").onclick = () => {
    app.muted = !app.muted;
    $("mute").setAttribute("aria-pressed", String(app.muted));
    $("mute").textContent = app.muted ? "Unmute" : "Mute";
  };
  $("say-form").onsubmit = (e) => {
    e.preventDefault();
    const text = $("say").value;
    if (!text || !app.run || !app.run.live) return;
    app.run.pendingText += text + "\n";
    $("say").value = "";
  };
  $("options-form").onsubmit = (e) => e.preventDefault();
  window.addEventListener("pagehide", () => {
    const run = app.run;
    if (run && !run.ended && run.session && run.ws && run.ws.readyState === WebSocket.OPEN)
      run.ws.send(JSON.stringify({ type: "close", session: run.session, token: run.token }));
  });
  setPhase("loading", "loading");
  if (!secureEnough()) {
    setPhase("error", "insecure page");
    showNotice("error", insecureText(), { label: "Try again", fn: () => location.reload() });
    // Still read /info, so the form shows what the server offers.
    fetchJSON("info", TIMEOUTS.info).then((info) => { app.info = info; fillOptions(info);
      setPhase("error", "insecure page"); }).catch(() => {});
    return;
  }
  loadInfo();
}

init();
