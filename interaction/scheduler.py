"""The server's clock: per-session chunk sequencing and one batched step per tick.

Every live session owns a buffer of received chunks and a sequence counter.
Chunk `seq` n is the session's micro-turn n. Each tick the scheduler takes,
for every started session, the chunk of its next micro-turn; a chunk that has
not arrived by then is filled with silence (counted and flagged in that
output), so the session's time stays aligned with the server's. A chunk that
arrives after its turn was filled is refused as `late`; one received before as
`duplicate`; one past the next expected seq as `out_of_order`; more than
`max_ahead` waiting chunks as `ahead`. A session starts (joins its pool's
batch) at the tick that takes its chunk 0, so opening early costs no silence.

Clocks:
- `realtime`: ticks at a fixed period (the layout's 200 ms) from the server's
  start; the deadline of a chunk is the tick that takes it. A tick that runs
  late (the step took longer than the period) is followed at once by the next.
- `fast`: a tick fires as soon as every started session has its next chunk,
  or `grace_s` after the first one was ready; a session without its chunk
  then waits (its row is held, nothing is filled: this clock has no
  deadlines). For tests, benchmarks and offline runs that stream faster than
  real time.

All pool work (joins, leaves, steps) runs on one worker thread, so the event
loop keeps serving messages while a tick computes. Sessions are grouped into
pools by SessionConfig (capacity and sampling are static in the jitted step);
a pool's sessions are stepped as one batch (`interaction.batcher`).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import time

import numpy as np

from interaction import protocol
from interaction.background import Conversation
from interaction.batcher import SlotInput, SlotPool
from interaction.streaming import SessionConfig
from interaction.tokenizer import TOKENIZER

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class ClockConfig:
  mode: str = "realtime"      # 'realtime' | 'fast'
  period_s: float = 0.2
  grace_s: float = 1.0        # fast clock: longest wait for a missing chunk
  max_ahead: int = 64         # chunks a session may have waiting

  def __post_init__(self):
    if self.mode not in ("realtime", "fast"):
      raise ValueError(f"clock: mode must be 'realtime' or 'fast', got {self.mode!r}")
    if not self.period_s > 0 or not self.grace_s > 0 or self.max_ahead < 1:
      raise ValueError("clock: period_s and grace_s must be > 0, max_ahead >= 1")


class LiveSession:
  """One session's server-side record (owned by the event loop thread)."""

  def __init__(self, sid: str, token: str, options: protocol.OpenOptions, pool: SlotPool,
               turn_ms: float, layout_rate: int):
    self.id, self.token, self.options, self.pool = sid, token, options, pool
    self.member = None
    self.started = False
    self.next_seq = 0          # the seq the next append must carry
    self.turn = 0              # the next micro-turn to step
    self.buffer = collections.deque()   # (seq, SlotInput, text, received monotonic)
    self.filled_seqs = set()
    self.counters = collections.Counter()
    self.resampler = protocol.ChunkResampler(options.sample_rate, layout_rate, turn_ms)
    self.conversation = Conversation()
    self.sink = None           # callable(dict) sending a message to the attached client
    self.last_active = time.monotonic()
    self.opened_at = time.monotonic()
    self.closed = False

  def stats(self) -> dict:
    c = self.counters
    return {"turns": self.turn, "received": c["received"], "filled": c["filled"],
            "late": c["late"], "duplicate": c["duplicate"],
            "out_of_order": c["out_of_order"], "ahead": c["ahead"],
            "bad": c["bad"]}

  def send(self, msg: dict):
    if self.sink is not None:
      self.sink(msg)


class Scheduler:

  def __init__(self, config, params, *, clock: ClockConfig, slot_counts,
               batched: bool = True, vocoder: bool = True, max_pools: int = 4,
               background=None, video_decoder=None):
    from interaction.layout import LayoutSpec
    self.config, self.params = config, params
    self.spec = LayoutSpec.from_config(config.layout)
    self.clock = clock
    self.slot_counts = tuple(slot_counts)
    self.batched, self.vocoder = batched, vocoder
    self.max_pools = int(max_pools)
    self.background = background          # a BackgroundRunner or None
    self.video_decoder = video_decoder    # bytes -> uint8 [H, W, 3] (raises ProtocolError)
    self.pools: dict = {}
    self._warming: dict = {}    # SessionConfig -> Future done when its pool is compiled
    self.sessions: dict = {}
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tick")
    self._compile = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile")
    self._closed = []
    self._arrival = asyncio.Event()
    self._stop = False
    self.tick = 0
    self.t0 = None
    self.tick_stats = collections.deque(maxlen=4096)   # (tick, n sessions, compute s)

  # ---- pools --------------------------------------------------------------
  def session_config(self, options: protocol.OpenOptions, capacities) -> SessionConfig:
    sc = self.config.session
    cap = options.capacity_turns if options.capacity_turns is not None else capacities[0]
    if cap not in capacities:
      raise protocol.ProtocolError(protocol.BAD_OPTION, f"open.options: capacity_turns "
                                   f"{cap} is not offered; choose one of {list(capacities)}")
    try:
      return SessionConfig.from_config(type(sc)({
          **sc.to_dict(), "capacity_turns": int(cap),
          "temperature": sc.temperature if options.temperature is None
          else float(options.temperature),
          "top_p": sc.top_p if options.top_p is None else float(options.top_p)}))
    except ValueError as e:
      raise protocol.ProtocolError(protocol.BAD_OPTION, f"open.options: {e}") from None

  async def pool_for(self, scfg: SessionConfig) -> SlotPool:
    """The pool of `scfg`, created and compiled (in a worker thread) if new."""
    if scfg in self._warming:          # another open is compiling it: wait for it
      await asyncio.shield(self._warming[scfg])
    if scfg in self.pools:
      return self.pools[scfg]
    if len(self.pools) >= self.max_pools:
      empty = [k for k, p in self.pools.items() if not len(p)
               and not any(s.pool is p for s in self.sessions.values())]
      if not empty:
        raise protocol.ProtocolError(
            protocol.CAPACITY, f"server runs {self.max_pools} session configurations "
            "(capacity, temperature, top_p) already; open with the default options "
            "or one of the running ones")
      del self.pools[empty[0]]
    pool = SlotPool(self.config, self.params, scfg, slot_counts=self.slot_counts,
                    batched=self.batched, vocoder=self.vocoder)
    loop = asyncio.get_running_loop()
    self._warming[scfg] = loop.create_future()
    try:
      await loop.run_in_executor(self._compile, pool.warmup)
      self.pools[scfg] = pool
    finally:
      self._warming.pop(scfg).set_result(None)
    return pool

  # ---- sessions -----------------------------------------------------------
  def add(self, session: LiveSession):
    self.sessions[session.id] = session

  def remove(self, session: LiveSession):
    session.closed = True
    self.sessions.pop(session.id, None)
    # Its row is freed at the next tick: a join may be in flight in this one.
    self._closed.append(session)
    if self.background is not None:
      self.background.close(session.id)

  def receive(self, session: LiveSession, chunk: protocol.Chunk):
    """Sequencing checks, then buffers the chunk (ProtocolError if refused)."""
    seq = chunk.seq
    if seq < session.next_seq:
      kind = protocol.LATE if seq in session.filled_seqs else protocol.DUPLICATE
      session.counters[kind] += 1
      if kind == protocol.LATE:
        raise protocol.ProtocolError(kind, f"chunk seq {seq} arrived after its "
                                     f"deadline; turn {seq} was filled with silence "
                                     f"(next expected seq {session.next_seq})", seq=seq)
      raise protocol.ProtocolError(kind, f"chunk seq {seq} was already received "
                                   f"(next expected seq {session.next_seq})", seq=seq)
    if seq > session.next_seq:
      session.counters["out_of_order"] += 1
      raise protocol.ProtocolError(protocol.OUT_OF_ORDER, f"chunk seq {seq} is out of "
                                   f"order: expected seq {session.next_seq}", seq=seq)
    if len(session.buffer) >= self.clock.max_ahead:
      session.counters["ahead"] += 1
      raise protocol.ProtocolError(protocol.AHEAD, f"chunk seq {seq}: {len(session.buffer)} "
                                   f"chunks are already waiting (the most the server "
                                   f"holds is {self.clock.max_ahead}); wait for outputs",
                                   seq=seq)
    video = None
    if chunk.frame is not None:
      if not self.spec.video_enabled:
        raise protocol.ProtocolError(protocol.BAD_FRAME, f"append seq {seq}: this "
                                     "model takes no video frames", seq=seq)
      video = self.video_decoder(chunk.frame, f"append seq {seq}: frame")
    # Validated: from here on the session changes.
    audio = session.resampler(chunk.audio)
    session.buffer.append((seq, SlotInput(audio, video, chunk.text), time.monotonic()))
    session.next_seq = seq + 1
    session.counters["received"] += 1
    session.last_active = time.monotonic()
    self._arrival.set()

  # ---- the clock ----------------------------------------------------------
  def _ready(self):
    """(sessions ready for a tick, sessions still missing their chunk)."""
    ready, missing = 0, 0
    for s in self.sessions.values():
      if s.started:
        if s.buffer:
          ready += 1
        else:
          missing += 1
      elif s.buffer:
        ready += 1
    return ready, missing

  async def _wait_for_tick(self):
    loop = asyncio.get_running_loop()
    if self.clock.mode == "realtime":
      if self.t0 is None:
        self.t0 = loop.time()
      due = self.t0 + (self.tick + 1) * self.clock.period_s
      await asyncio.sleep(max(0.0, due - loop.time()))
      return
    ready_since = None
    while not self._stop:
      ready, missing = self._ready()
      if ready and not missing:
        return
      if ready:
        ready_since = ready_since or loop.time()
        timeout = ready_since + self.clock.grace_s - loop.time()
        if timeout <= 0:
          return
      else:
        timeout, ready_since = 1.0, None
      self._arrival.clear()
      try:
        await asyncio.wait_for(self._arrival.wait(), timeout)
      except asyncio.TimeoutError:
        pass

  def next_tick_in_s(self) -> float | None:
    """Seconds until the next tick's deadline (realtime clock), for clients."""
    if self.clock.mode != "realtime" or self.t0 is None:
      return None
    loop = asyncio.get_running_loop()
    return max(0.0, self.t0 + (self.tick + 1) * self.clock.period_s - loop.time())

  def _collect(self):
    """The tick's plan: per session, the chunk of its next turn (or silence)."""
    plan = []
    silence = np.zeros(self.spec.samples_per_turn, np.float32)
    for s in list(self.sessions.values()):
      if not s.started:
        if not s.buffer:
          continue
        s.started = True
      if s.buffer:
        seq, x, received = s.buffer.popleft()
        filled = False
      elif self.clock.mode == "fast":
        continue       # no deadlines on the fast clock: the session waits
      else:
        seq, x, received, filled = s.turn, SlotInput(silence), None, True
        s.filled_seqs.add(seq)
        if len(s.filled_seqs) > 4096:
          s.filled_seqs = {q for q in s.filled_seqs if q > seq - 4096}
        s.counters["filled"] += 1
        s.next_seq = max(s.next_seq, seq + 1)
      assert seq == s.turn, (seq, s.turn)
      user_text = x.user_text
      if s.turn == 0 and s.options.prompt:
        # The prompt is the first thing on the user_text stream, one line.
        user_text = s.options.prompt + "\n" + (user_text or "")
      bg, bg_updates = (self.background.take(s.id) if self.background is not None
                        else (None, []))
      plan.append((s, seq, filled, received,
                   SlotInput(x.audio, x.video, user_text, bg), bg_updates))
    return plan

  def _compute(self, plan, leaving):
    """Worker thread: leaves, joins, then one step per pool."""
    for pool, member in leaving:
      pool.leave(member)
    for s, *_ in plan:
      if s.member is None:
        s.member = s.pool.join(seed=s.options.seed)
    by_pool = collections.defaultdict(dict)
    for s, seq, filled, received, x, _ in plan:
      by_pool[id(s.pool)][s.member] = x
    pools = {id(s.pool): s.pool for s, *_ in plan}
    results = {}
    for key, inputs in by_pool.items():
      results.update(pools[key].step(inputs))   # members without input are held
    return results

  async def run(self, deliver):
    """The tick loop. deliver(session, seq, filled, received, out, bg, info)."""
    loop = asyncio.get_running_loop()
    while not self._stop:
      await self._wait_for_tick()
      if self._stop:
        break
      plan = self._collect()
      leaving = [(s.pool, s.member) for s in self._closed if s.member is not None]
      self._closed = []
      self.tick += 1
      if not plan and not leaving:
        continue
      start = time.monotonic()
      try:
        results = await loop.run_in_executor(self._executor, self._compute, plan, leaving)
      except Exception as e:  # a failed tick must not stop the clock for everyone
        log.exception("tick %d failed", self.tick)
        for s, seq, *_ in plan:
          s.turn += 1
          s.send(protocol.error_message(protocol.INTERNAL, f"turn {seq} failed on the "
                                        f"server ({type(e).__name__}: {e})",
                                        seq=seq, session=s.id))
        continue
      compute = time.monotonic() - start
      self.tick_stats.append((self.tick, len(plan), compute))
      info = {"tick": self.tick, "compute_ms": round(compute * 1e3, 3),
              "batch": len(plan), "start": start}
      for s, seq, filled, received, x, bg in plan:
        s.turn += 1
        out = results.get(s.member)
        if out is None or s.closed:
          continue
        deliver(s, seq, filled, received, out, x, bg, info)

  async def stop(self):
    self._stop = True
    self._arrival.set()

  def shutdown(self):
    self._executor.shutdown(wait=True, cancel_futures=True)
    self._compile.shutdown(wait=False, cancel_futures=True)


def text_of(tokens) -> str:
  return TOKENIZER.decode([int(t) for t in tokens])
