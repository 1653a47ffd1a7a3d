"""Client library of the session server (`interaction.server`).

    async with await Connection.connect("ws://127.0.0.1:8765") as conn:
      session = await conn.open(prompt="You are a helpful assistant.")
      await session.send(0, chunk)                    # f32 [3200] at 16 kHz
      out = await session.next_output()               # the "output" message
      result = await stream(session, chunks, pace="realtime")

Every wait has a timeout, and a connection that goes away (server stopped,
killed, network gone) wakes every waiter with `ServerGone`, which names the URL
and the close code and reason: a client never hangs on a dead server.
Error replies are raised as `ServerError(code, message)`, except in `stream`,
which counts them.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import time

import numpy as np
import websockets
from websockets.asyncio.client import connect as ws_connect

from interaction import protocol


class ClientError(Exception):
  pass


class ServerGone(ClientError, ConnectionError):
  """The server cannot be reached or the connection to it closed."""


class ServerTimeout(ClientError, TimeoutError):
  pass


class ServerError(ClientError):
  """An error reply: `code` is one of interaction.protocol's error codes."""

  def __init__(self, msg: dict):
    super().__init__(f"{msg.get('code')}: {msg.get('error')}")
    self.code = msg.get("code")
    self.message = msg.get("error")
    self.reply = msg


class Connection:

  def __init__(self, ws, url: str, timeout: float):
    self.ws, self.url, self.timeout = ws, url, timeout
    self._refs = itertools.count(1)
    self._pending: dict = {}                 # ref -> Future of the reply
    self._sessions: dict = {}                # id -> Session
    self._stray = asyncio.Queue()            # errors no request or session claims
    self.gone: ServerGone | None = None
    self._reader = asyncio.get_running_loop().create_task(self._read())

  @classmethod
  async def connect(cls, url: str, *, cafile: str | None = None, insecure: bool = False,
                    timeout: float = 10.0) -> "Connection":
    ssl_ctx = None
    if url.startswith("wss://"):
      from interaction.certs import client_context
      ssl_ctx = client_context(cafile, insecure)
    try:
      ws = await asyncio.wait_for(
          ws_connect(url, ssl=ssl_ctx, max_size=None, compression=None,
                     open_timeout=timeout, ping_interval=20, ping_timeout=20),
          timeout)
    except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake,
            websockets.InvalidURI) as e:
      raise ServerGone(f"cannot connect to {url}: {type(e).__name__}: {e}") from None
    return cls(ws, url, timeout)

  async def __aenter__(self):
    return self

  async def __aexit__(self, *exc):
    await self.close()

  async def close(self):
    await self.ws.close()
    self._reader.cancel()
    await asyncio.gather(self._reader, return_exceptions=True)

  # ---- the reader -----------------------------------------------------------
  async def _read(self):
    try:
      async for raw in self.ws:
        msg = json.loads(raw)
        ref = msg.get("ref")
        if ref is not None and ref in self._pending:
          fut = self._pending.pop(ref)
          if not fut.done():
            fut.set_result(msg)
          continue
        s = self._sessions.get(msg.get("session"))
        if s is not None:
          s._queue.put_nowait(msg)
        else:
          self._stray.put_nowait(msg)
      code, reason = self.ws.close_code, self.ws.close_reason
    except websockets.ConnectionClosed as e:
      code, reason = (e.rcvd.code, e.rcvd.reason) if e.rcvd else (1006, "no close frame")
    except asyncio.CancelledError:
      code, reason = 1000, "closed by this client"
    self.gone = ServerGone(f"connection to {self.url} closed (code {code}"
                           + (f": {reason}" if reason else "") + ")")
    for fut in self._pending.values():
      if not fut.done():
        fut.set_exception(self.gone)
    self._pending.clear()
    for s in self._sessions.values():
      s._queue.put_nowait(None)
    self._stray.put_nowait(None)

  async def _send(self, msg: dict):
    if self.gone is not None:
      raise self.gone
    try:
      await self.ws.send(json.dumps(msg, separators=(",", ":")))
    except websockets.ConnectionClosed:
      await asyncio.sleep(0)       # let the reader record why
      raise self.gone or ServerGone(f"connection to {self.url} closed") from None

  async def request(self, msg: dict) -> dict:
    """Sends msg with a fresh ref and returns the reply (ServerError if an error)."""
    ref = next(self._refs)
    fut = asyncio.get_running_loop().create_future()
    self._pending[ref] = fut
    await self._send({**msg, "ref": ref})
    try:
      reply = await asyncio.wait_for(fut, self.timeout)
    except asyncio.TimeoutError:
      self._pending.pop(ref, None)
      raise ServerTimeout(f"no reply from {self.url} to {msg['type']} within "
                          f"{self.timeout:g} s") from None
    if reply.get("type") == "error":
      raise ServerError(reply)
    return reply

  async def send_raw(self, data):
    """Sends a string or bytes as is (for tests of the server's input checks)."""
    if self.gone is not None:
      raise self.gone
    await self.ws.send(data)

  async def next_stray(self, timeout: float | None = None) -> dict:
    """The next message that answers no request and no session (e.g. bad JSON)."""
    try:
      msg = await asyncio.wait_for(self._stray.get(), timeout or self.timeout)
    except asyncio.TimeoutError:
      raise ServerTimeout(f"no message from {self.url} within "
                          f"{timeout or self.timeout:g} s") from None
    if msg is None:
      raise self.gone
    return msg

  # ---- sessions ---------------------------------------------------------------
  async def open(self, **options) -> "Session":
    """Opens a session (options: see interaction.protocol.OpenOptions)."""
    reply = await self.request({"type": "open", "options": options})
    s = Session(self, reply["session"], reply["token"], reply["capabilities"],
                reply.get("next_tick_in_ms"))
    self._sessions[s.id] = s
    return s

  async def attach(self, session_id: str, token: str) -> "Session":
    reply = await self.request({"type": "attach", "session": session_id, "token": token})
    s = self._sessions.get(session_id) or Session(self, session_id, token, {}, None)
    self._sessions[session_id] = s
    s.attached = reply
    return s


class Session:

  def __init__(self, conn: Connection, sid: str, token: str, capabilities: dict,
               next_tick_in_ms):
    self.conn, self.id, self.token = conn, sid, token
    self.capabilities = capabilities
    self.opened_at = time.monotonic()
    self.next_tick_in_ms = next_tick_in_ms
    self._queue = asyncio.Queue()

  async def send(self, seq: int, audio, *, sample_rate: int | None = None,
                 frame=None, frame_format: str = "jpeg", text: str | None = None):
    """audio: f32 [-1, 1] (or int16) samples of one chunk; frame: uint8 [H, W, 3]
    (encoded as frame_format) or JPEG/PNG bytes."""
    a = np.asarray(audio)
    pcm = (protocol.encode_pcm16(a) if a.dtype != np.int16 else
           base64.b64encode(a.astype("<i2").tobytes()).decode("ascii"))
    msg = {"type": "append", "session": self.id, "token": self.token, "seq": int(seq),
           "audio": pcm}
    if sample_rate is not None:
      msg["sample_rate"] = int(sample_rate)
    if frame is not None:
      if isinstance(frame, (bytes, bytearray)):
        msg["frame"] = base64.b64encode(bytes(frame)).decode("ascii")
      else:
        msg["frame"] = protocol.encode_frame(frame, frame_format)
    if text:
      msg["text"] = text
    await self.conn._send(msg)

  async def next_message(self, timeout: float | None = None) -> dict:
    """The next message for this session (output, closed or error)."""
    timeout = self.conn.timeout if timeout is None else timeout
    try:
      msg = await asyncio.wait_for(self._queue.get(), timeout)
    except asyncio.TimeoutError:
      raise ServerTimeout(f"no message for session {self.id} from {self.conn.url} "
                          f"within {timeout:g} s") from None
    if msg is None:
      raise self.conn.gone
    return msg

  async def next_output(self, timeout: float | None = None) -> dict:
    msg = await self.next_message(timeout)
    if msg["type"] == "error":
      raise ServerError(msg)
    if msg["type"] == "closed":
      raise ServerError({"code": protocol.CLOSED, "error": msg.get("reason")})
    return msg

  async def close(self) -> dict:
    reply = await self.conn.request({"type": "close", "session": self.id,
                                     "token": self.token})
    self.conn._sessions.pop(self.id, None)
    return reply


# ---------------------------------------------------------------------------
# Streaming a recording
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class StreamResult:
  outputs: list            # output messages in seq order
  rtt_ms: list             # per chunk: send -> its output received
  errors: list             # error replies
  seconds: float           # wall time of the stream
  arrival_s: list = dataclasses.field(default_factory=list)  # per output, from the start

  def audio(self) -> np.ndarray:
    return np.concatenate([protocol.pcm16_to_float(o["audio"]) for o in self.outputs]
                          or [np.zeros(0, np.float32)])

  def events(self) -> list:
    return [dict(e, seq=o["seq"]) for o in self.outputs for e in o["events"]]

  def summary(self) -> dict:
    r = np.asarray(self.rtt_ms, np.float64)
    return {"chunks": len(self.outputs), "errors": len(self.errors),
            "filled": sum(1 for o in self.outputs if o.get("filled")),
            "rtt_p50_ms": round(float(np.percentile(r, 50)), 3) if r.size else None,
            "rtt_p99_ms": round(float(np.percentile(r, 99)), 3) if r.size else None,
            "rtt_max_ms": round(float(r.max()), 3) if r.size else None,
            "seconds": round(self.seconds, 3)}


async def stream(session: Session, chunks, *, sample_rate: int | None = None,
                 frames=None, texts=None, pace: str = "fast", window: int = 8,
                 lead_ms: float = 30.0, first_seq: int = 0,
                 output_timeout: float | None = None) -> StreamResult:
  """Streams chunks (f32 [n, samples]) and collects one output per chunk.

  pace 'fast': as fast as the server answers, at most `window` chunks in
  flight. pace 'realtime': one chunk per chunk period; sends are aligned to
  the server's ticks (from the open reply's next_tick_in_ms) so each chunk
  arrives `lead_ms` before the tick that takes it. frames / texts: per-chunk
  lists (None entries for none). Output order is checked: a reordered or
  missing output raises ClientError. A `late` error is counted (its turn's
  filled output still arrives); any other error reply ends the stream.
  """
  if pace not in ("fast", "realtime"):
    raise ValueError(f"pace must be 'fast' or 'realtime', got {pace!r}")
  chunks = np.asarray(chunks)
  n = len(chunks)
  period = float(session.capabilities.get("chunk_ms", 200.0)) / 1000.0
  if pace == "fast":
    window = max(1, min(int(window), int(session.capabilities.get("max_ahead", window))))
  sent_at, outputs, errors, rtts, arrivals = {}, [], [], [], []
  start = time.monotonic()
  # A tick's deadline relative to now: chunk i is sent at t0 + i * period.
  t0 = start
  if pace == "realtime" and session.next_tick_in_ms is not None:
    t0 = session.opened_at + session.next_tick_in_ms / 1000.0 - lead_ms / 1000.0
    while t0 < time.monotonic():
      t0 += period
  timeout = output_timeout or session.conn.timeout

  async def sender():
    for i in range(n):
      if pace == "realtime":
        delay = t0 + i * period - time.monotonic()
        if delay > 0:
          await asyncio.sleep(delay)
      else:
        while i - len(outputs) >= window:
          await got.wait()
          got.clear()
      sent_at[first_seq + i] = time.monotonic()
      await session.send(first_seq + i, chunks[i], sample_rate=sample_rate,
                         frame=None if frames is None else frames[i],
                         text=None if texts is None else texts[i])

  got = asyncio.Event()
  task = asyncio.get_running_loop().create_task(sender())
  try:
    while len(outputs) < n:
      msg = await session.next_message(timeout + (period if pace == "realtime" else 0))
      if msg["type"] == "output":
        want = first_seq + len(outputs)
        if msg["seq"] != want:
          raise ClientError(f"session {session.id}: output seq {msg['seq']} arrived "
                            f"where seq {want} was due (lost or reordered)")
        now = time.monotonic()
        rtts.append((now - sent_at.get(msg["seq"], now)) * 1e3)
        arrivals.append(now - start)
        outputs.append(msg)
      elif msg["type"] == "error":
        errors.append(msg)
        # A late chunk's turn was filled with silence: its output still comes.
        # Any other refusal leaves a gap the rest of the stream cannot close.
        if msg.get("code") != protocol.LATE:
          break
      else:
        raise ServerError({"code": protocol.CLOSED, "error": msg.get("reason")})
      got.set()
      if task.done() and task.exception():
        raise task.exception()
  finally:
    if not task.done():
      task.cancel()
    await asyncio.gather(task, return_exceptions=True)
  return StreamResult(outputs, rtts, errors, time.monotonic() - start, arrivals)
