"""The session server: many streaming sessions over WebSockets, one batch per tick.

    server = SessionServer(config, params, ServerSettings(port=8765))
    url = await server.start()          # "ws://127.0.0.1:8765" (wss:// with TLS)
    ...
    await server.stop()

The protocol is `interaction.protocol` (JSON messages: open, append, attach,
close; replies opened, output, closed, error). The clock and the batching are
`interaction.scheduler`; background jobs `interaction.background`.

- Access: `open` returns a session id and a secret token (random, 192 bits);
  every other message must carry both, checked in constant time. A wrong
  token and an unknown id get the same `forbidden` error, so ids cannot be
  probed. Outputs go only to the connection that opened or last attached to
  the session with its token.
- Limits: at most `max_sessions` sessions (open or started, across pools) and
  `max_sessions_per_connection` per connection; a refused open says why
  (`capacity`). A message over `limits.max_message_bytes` gets `too_large`;
  one over 4x that is cut off by websockets itself (close code 1009), so a
  flood of huge frames cannot fill the server's memory.
- Idle sessions (no authenticated message for `idle_timeout_s`) are closed and
  their client told (`closed`, reason idle); a closed connection leaves its
  sessions to be re-attached until then.
- A bad message never stops the server or touches another session: it gets an
  error reply naming what is wrong (and its seq), and is otherwise ignored.
- The browser page (`settings.web`, `interaction.web`): a plain HTTP GET on the
  same port gets the page (`page_url`, https:// with TLS) or `/info`; a
  WebSocket upgrade goes on to the protocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import itertools
import json
import logging
import secrets
import time

import websockets
from websockets.asyncio.server import serve

from interaction import protocol
from interaction.background import BackgroundRunner
from interaction.layout import LayoutSpec
from interaction.scheduler import ClockConfig, LiveSession, Scheduler, text_of
from interaction.tokenizer import TOKENIZER

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServerSettings:
  host: str = "127.0.0.1"
  port: int = 0                      # 0: any free port (see SessionServer.url)
  max_sessions: int = 16
  max_sessions_per_connection: int | None = None   # None: max_sessions
  slot_counts: tuple | None = None   # None: 1, 2, 4, ... up to max_sessions
  idle_timeout_s: float = 60.0
  clock: str = "realtime"            # 'realtime' | 'fast' (see interaction.scheduler)
  grace_s: float = 1.0
  max_ahead: int = 64
  capacities: tuple | None = None    # capacity_turns offered; None: the config's
  max_pools: int = 4
  batched: bool = True               # False: one step per session (benchmark baseline)
  vocoder: object = True             # True: Griffin-Lim as Sessions; False: silent audio
                                     # (text and mel still); or a factory of per-session
                                     # streamers (interaction.batcher.SlotPool)
  limits: protocol.Limits = protocol.Limits()
  ssl_context: object = None         # an ssl.SSLContext: serve wss://
  max_send_queue: int = 512          # outputs waiting for a slow client before it is dropped
  web: bool = True                   # serve the browser page (interaction/web) on the same port

  def resolved_slot_counts(self) -> tuple:
    if self.slot_counts:
      counts = sorted({int(c) for c in self.slot_counts})
      if counts[-1] < self.max_sessions:
        raise ValueError(f"slot_counts {counts}: the largest must be at least "
                         f"max_sessions ({self.max_sessions})")
      return tuple(counts)
    counts, c = [], 1
    while c < self.max_sessions:
      counts.append(c)
      c *= 2
    return tuple(counts + [self.max_sessions])


class _Connection:
  """One client connection: an outgoing queue drained by a writer task."""
  ids = itertools.count(1)

  def __init__(self, ws, max_queue: int):
    self.id = next(self.ids)
    self.ws = ws
    self.queue = asyncio.Queue()
    self.max_queue = max_queue
    self.opened = set()
    self.dropped = False

  def send(self, msg: dict):
    if self.dropped:
      return
    if self.queue.qsize() >= self.max_queue:
      # A client that does not read would hold outputs forever: drop it.
      self.dropped = True
      asyncio.get_running_loop().create_task(self.ws.close(
          1008, f"client too slow: {self.max_queue} messages unread"))
      return
    self.queue.put_nowait(msg)

  async def writer(self):
    try:
      while True:
        msg = await self.queue.get()
        await self.ws.send(json.dumps(msg, separators=(",", ":")))
    except websockets.ConnectionClosed:
      pass


class SessionServer:

  def __init__(self, config, params, settings: ServerSettings = ServerSettings(),
               background=None):
    """background: a background model (interaction.background) run on `<delegate>`."""
    self.config, self.params, self.settings = config, params, settings
    self.spec = LayoutSpec.from_config(config.layout)
    self.turn_ms = self.spec.turn_seconds * 1000.0
    self.capacities = tuple(settings.capacities or (int(config.session.capacity_turns),))
    self.runner = BackgroundRunner(background) if background is not None else None
    clock = ClockConfig(mode=settings.clock, period_s=self.spec.turn_seconds,
                        grace_s=settings.grace_s, max_ahead=settings.max_ahead)
    limits = settings.limits
    self.scheduler = Scheduler(
        config, params, clock=clock, slot_counts=settings.resolved_slot_counts(),
        batched=settings.batched, vocoder=settings.vocoder, max_pools=settings.max_pools,
        background=self.runner,
        video_decoder=lambda data, where: protocol.decode_frame(
            data, self.spec.video_height, self.spec.video_width, limits, where))
    self.counters = {"opened": 0, "refused": 0, "closed": 0, "reaped": 0,
                     "errors": 0, "connections": 0}
    self._server = None
    self._tasks = []
    self.url = None
    self.page_url = None               # the browser page (settings.web), https:// with TLS
    self._defaults = None

  # ---- life cycle ---------------------------------------------------------
  async def start(self) -> str:
    """Compiles the default pool, starts listening; returns the URL."""
    self._defaults = self.scheduler.session_config(protocol.OpenOptions(),
                                                   self.capacities)
    await self.scheduler.pool_for(self._defaults)
    s = self.settings
    self._server = await serve(
        self._handle, s.host, s.port, ssl=s.ssl_context,
        max_size=4 * s.limits.max_message_bytes, compression=None,
        ping_interval=20, ping_timeout=20,
        process_request=self._http if s.web else None)
    port = self._server.sockets[0].getsockname()[1]
    scheme = "wss" if s.ssl_context is not None else "ws"
    host = s.host if ":" not in s.host else f"[{s.host}]"
    self.url = f"{scheme}://{host}:{port}"
    if s.web:
      self.page_url = f"{'https' if s.ssl_context is not None else 'http'}://{host}:{port}/"
    loop = asyncio.get_running_loop()
    self._tasks = [loop.create_task(self.scheduler.run(self._deliver)),
                   loop.create_task(self._reaper())]
    return self.url

  async def stop(self):
    """Closes every connection (clients see code 1001, going away) and stops."""
    await self.scheduler.stop()
    if self._server is not None:
      self._server.close()
      await self._server.wait_closed()
    for t in self._tasks:
      t.cancel()
    await asyncio.gather(*self._tasks, return_exceptions=True)
    if self.runner is not None:
      await self.runner.aclose()
    await asyncio.get_running_loop().run_in_executor(None, self.scheduler.shutdown)

  async def serve_forever(self):
    await asyncio.gather(*self._tasks)

  def capabilities(self, session: LiveSession) -> dict:
    spec, lim = self.spec, self.settings.limits
    scfg = session.pool.scfg
    return {
        "protocol": protocol.VERSION,
        "chunk_ms": self.turn_ms,
        "sample_rate": session.options.sample_rate,
        "samples_per_chunk": protocol.chunk_samples(session.options.sample_rate,
                                                    self.turn_ms),
        "output_sample_rate": spec.sample_rate,
        "output_samples_per_chunk": spec.samples_per_turn,
        "encoding": "pcm16le/base64",
        "sample_rates": f"{lim.min_sample_rate}-{lim.max_sample_rate} Hz, a whole "
                        f"number of samples per {self.turn_ms:g} ms",
        "resampler_delay_samples": session.resampler.delay_samples,
        "video": ({"width": spec.video_width, "height": spec.video_height,
                   "formats": ["jpeg", "png"]} if spec.video_enabled else None),
        "voices": ["default"],
        "capacity_turns": scfg.capacity_turns,
        "capacities": list(self.capacities),
        "prefix_turns": scfg.prefix_turns,
        "temperature": scfg.temperature, "top_p": scfg.top_p,
        "clock": self.settings.clock,
        "max_ahead": self.settings.max_ahead,
        "idle_timeout_s": self.settings.idle_timeout_s,
        "background": self.runner is not None,
        "limits": dataclasses.asdict(lim),
    }

  def info(self) -> dict:
    """What the browser page needs before it opens a session (GET /info)."""
    spec, lim, st = self.spec, self.settings.limits, self.settings
    return {
        "protocol": protocol.VERSION,
        "chunk_ms": self.turn_ms,
        "sample_rate": spec.sample_rate,
        "samples_per_chunk": spec.samples_per_turn,
        "video": ({"width": spec.video_width, "height": spec.video_height,
                   "formats": ["jpeg", "png"]} if spec.video_enabled else None),
        "voices": ["default"],
        "capacities": list(self.capacities),
        "temperature": self._defaults.temperature if self._defaults else None,
        "top_p": self._defaults.top_p if self._defaults else None,
        "clock": st.clock,
        "idle_timeout_s": st.idle_timeout_s,
        "background": self.runner is not None,
        "max_sessions": st.max_sessions,
        "live": len(self.scheduler.sessions),
        "limits": {"max_text_bytes": lim.max_text_bytes,
                   "max_prompt_bytes": lim.max_prompt_bytes},
    }

  def _http(self, connection, request):
    """websockets' process_request: plain GETs get the page (interaction.web)."""
    from interaction import web
    return web.http_response(request, self.info)

  def stats(self) -> dict:
    ticks = list(self.scheduler.tick_stats)
    return {**self.counters, "live": len(self.scheduler.sessions),
            "ticks": self.scheduler.tick,
            "pools": len(self.scheduler.pools),
            "last_tick_ms": round(ticks[-1][2] * 1e3, 3) if ticks else None}

  # ---- connections --------------------------------------------------------
  async def _handle(self, ws):
    conn = _Connection(ws, self.settings.max_send_queue)
    self.counters["connections"] += 1
    writer = asyncio.get_running_loop().create_task(conn.writer())
    try:
      async for raw in ws:
        try:
          reply = await self._dispatch(conn, raw)
        except protocol.ProtocolError as e:
          self.counters["errors"] += 1
          reply = e.reply()
        except Exception as e:  # a bug must cost one reply, not the server
          log.exception("internal error handling a message")
          self.counters["errors"] += 1
          reply = protocol.error_message(protocol.INTERNAL,
                                         f"internal error: {type(e).__name__}: {e}")
        if reply is not None:
          conn.send(reply)
    except websockets.ConnectionClosed:
      pass
    finally:
      for sid in list(conn.opened):
        s = self.scheduler.sessions.get(sid)
        if s is not None and s.sink == conn.send:
          s.sink = None      # kept until reaped: the client may attach again
      # Let queued replies go out before the writer stops.
      await asyncio.sleep(0)
      writer.cancel()

  def _session(self, msg) -> LiveSession:
    sid, token = protocol.parse_auth(msg)
    s = self.scheduler.sessions.get(sid)
    # One answer for an unknown id and a wrong token: ids cannot be probed.
    if s is None or not hmac.compare_digest(s.token.encode(), token.encode()):
      raise protocol.ProtocolError(protocol.FORBIDDEN, f"{msg['type']}: no session "
                                   "with this id and token (closed, reaped, or "
                                   "never opened)")
    return s

  async def _dispatch(self, conn: _Connection, raw) -> dict | None:
    msg = protocol.parse(raw, self.settings.limits)
    # A client's "ref" (int or short string) comes back on the reply.
    ref = msg.get("ref")
    ref = (ref if isinstance(ref, (int, str)) and not isinstance(ref, bool)
           and len(str(ref)) <= 64 else None)
    try:
      reply = await self._dispatch_parsed(conn, msg)
    except protocol.ProtocolError as e:
      e.extra.setdefault("ref", ref)
      raise
    if reply is not None and ref is not None:
      reply["ref"] = ref
    return reply

  async def _dispatch_parsed(self, conn: _Connection, msg) -> dict | None:
    kind = msg["type"]
    if kind == "open":
      return await self._open(conn, msg)
    s = self._session(msg)
    if kind == "append":
      try:
        chunk = protocol.parse_append(msg, self.settings.limits, self.turn_ms,
                                      s.options.sample_rate)
        s.last_active = time.monotonic()
        self.scheduler.receive(s, chunk)
      except protocol.ProtocolError as e:
        s.counters["bad"] += e.code not in (protocol.LATE, protocol.DUPLICATE,
                                            protocol.OUT_OF_ORDER, protocol.AHEAD)
        e.extra["session"] = s.id
        raise
      if s.sink is None:
        s.sink = conn.send
      return None
    if kind == "attach":
      s.sink = conn.send
      s.last_active = time.monotonic()
      conn.opened.add(s.id)
      return {"type": "attached", "session": s.id, "turn": s.turn,
              "next_seq": s.next_seq}
    if kind == "close":
      self._close(s, "closed by the client")
      return {"type": "closed", "session": s.id, "reason": "closed by the client",
              "stats": s.stats()}
    raise AssertionError(kind)

  async def _open(self, conn: _Connection, msg) -> dict:
    st = self.settings
    options = protocol.parse_open(msg, st.limits, self.turn_ms, self.spec.sample_rate)
    if options.voice != "default":
      raise protocol.ProtocolError(protocol.BAD_OPTION, f"open.options: voice "
                                   f"{options.voice!r} is not offered; voices: ['default']")
    scfg = self.scheduler.session_config(options, self.capacities)
    live = len(self.scheduler.sessions)
    if live >= st.max_sessions:
      self.counters["refused"] += 1
      raise protocol.ProtocolError(protocol.CAPACITY, f"server full: {live} of "
                                   f"{st.max_sessions} sessions are open; close one or "
                                   "try again later")
    per_conn = st.max_sessions_per_connection or st.max_sessions
    mine = sum(1 for sid in conn.opened if sid in self.scheduler.sessions)
    if mine >= per_conn:
      self.counters["refused"] += 1
      raise protocol.ProtocolError(protocol.CAPACITY, f"this connection has {mine} "
                                   f"sessions open, the most one connection may hold "
                                   f"({per_conn})")
    pool = await self.scheduler.pool_for(scfg)
    if len(self.scheduler.sessions) >= st.max_sessions:   # filled while compiling
      self.counters["refused"] += 1
      raise protocol.ProtocolError(protocol.CAPACITY, f"server full: "
                                   f"{st.max_sessions} of {st.max_sessions} sessions "
                                   "are open; try again later")
    sid, token = secrets.token_hex(8), secrets.token_urlsafe(24)
    s = LiveSession(sid, token, options, pool, self.turn_ms, self.spec.sample_rate)
    s.sink = conn.send
    self.scheduler.add(s)
    conn.opened.add(sid)
    self.counters["opened"] += 1
    nxt = self.scheduler.next_tick_in_s()
    return {"type": "opened", "session": sid, "token": token,
            "capabilities": self.capabilities(s),
            "next_tick_in_ms": None if nxt is None else round(nxt * 1e3, 3)}

  def _close(self, s: LiveSession, reason: str):
    if s.closed:
      return
    self.scheduler.remove(s)
    self.counters["closed"] += 1

  async def _reaper(self):
    timeout = self.settings.idle_timeout_s
    while True:
      await asyncio.sleep(min(1.0, timeout / 4))
      now = time.monotonic()
      for s in list(self.scheduler.sessions.values()):
        idle = now - s.last_active
        if idle > timeout:
          reason = f"idle: no message for {idle:.1f} s (timeout {timeout:g} s)"
          s.send({"type": "closed", "session": s.id, "reason": reason,
                  "stats": s.stats()})
          self._close(s, reason)
          self.counters["reaped"] += 1

  # ---- outputs ------------------------------------------------------------
  def _deliver(self, s: LiveSession, seq, filled, received, out, x, bg_updates, info):
    spec = self.spec
    t = out.turn * spec.turn_seconds            # this input block's time
    conv = s.conversation
    if x.user_text:
      conv.add(t, "user", x.user_text)
    for _, text in bg_updates:
      conv.add(t, "background", text)
    for e in out.events:
      if e["stream"] == "model_text":
        conv.add(e["t_start"], "model", e["text"])
    events = list(out.events)
    if bg_updates:
      events += [{"t_start": t, "t_end": t + spec.turn_seconds, "text": text,
                  "stream": "background", "job": job} for job, text in bg_updates]
    if self.runner is not None:
      tokens = [int(v) for v in out.text_tokens]
      if TOKENIZER.delegate_id in tokens or TOKENIZER.cancel_id in tokens:
        task = {"model_said": _last_model_phrase(conv), "prompt": s.options.prompt,
                "session_seconds": t}
        self.runner.on_output(s.id, tokens, t + spec.turn_seconds, conv.snapshot(), task)
      events += [{"t_start": t + spec.turn_seconds if e["t"] is None else e["t"],
                  "t_end": t + spec.turn_seconds if e["t"] is None else e["t"],
                  "text": e["status"], "stream": "job", "job": e["job"]}
                 for e in self.runner.take_events(s.id)]
    now = time.monotonic()
    nxt = self.scheduler.next_tick_in_s()
    msg = {"type": "output", "session": s.id, "seq": seq, "turn": out.turn,
           "audio": protocol.encode_pcm16(out.audio), "sample_rate": spec.sample_rate,
           "text": text_of(out.text_tokens), "events": events, "filled": filled,
           # What entered the model's text input slots this micro-turn (typed
           # text, the prompt and background results drain a few bytes a turn).
           "heard": {"user_text": text_of(out.user_text_in),
                     "background_text": text_of(out.background_in)},
           "counters": {"filled": s.counters["filled"], "late": s.counters["late"]},
           "timing": {"tick": info["tick"], "batch": info["batch"],
                      "compute_ms": info["compute_ms"],
                      "queue_ms": None if received is None
                      else round((info["start"] - received) * 1e3, 3),
                      "server_ms": None if received is None
                      else round((now - received) * 1e3, 3),
                      "next_tick_in_ms": None if nxt is None else round(nxt * 1e3, 3)}}
    if s.options.return_mel:
      import base64
      msg["mel"] = base64.b64encode(out.mel.astype("<f4").tobytes()).decode("ascii")
      msg["mel_shape"] = list(out.mel.shape)
    s.send(msg)


def _last_model_phrase(conv) -> str:
  conv.flush()
  for e in reversed(conv.entries):
    if e["speaker"] == "model":
      return e["text"]
  return ""

