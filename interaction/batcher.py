"""Slot batches: many streaming sessions stepped as one batch, joining and leaving.

A `SlotPool` keeps the batched state of `interaction.streaming` for a few
fixed slot counts (e.g. 1, 2, 4, 8, 16 rows). A session that joins takes a free
row, which is reset to a fresh session of its seed; one that leaves frees its
row. The batch grows to the next slot count when every row is taken and
shrinks to the smallest one that fits when sessions leave, by copying rows, so
the jitted step is compiled once per slot count (`warmup()` compiles them all
up front), never once per number of live sessions. Vacant rows are stepped
with silence and their outputs dropped.

With `kernels.mode=invariant` a session's outputs are bit-identical whatever
its row, the slot count and its companions, so joining, leaving and the
resizes never change what a session says (tests/interaction/batcher_test.py).

`batched=False` steps each session on its own with a batch-1 state: the
"one step per session" baseline of the serving benchmark.

Each member's host side is what `interaction.session.Sessions` keeps per row:
the streaming mel front end, queues for typed text and background results
(drained as many tokens per micro-turn as the layout has slots), the word
events and the streaming vocoder, built from the same config fields.
"""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from interaction import mel as mel_lib
from interaction.audio_stream import OutputLimiter, StreamingMelFrontend, StreamingVocoder
from interaction.layout import LayoutSpec, Stream
# The word grouping of Sessions, shared so a served session's events equal a
# Sessions(batch_size=1) session's.
from interaction.session import _Eventizer
from interaction.streaming import SessionConfig, SessionRunner, TurnInputs
from interaction.tokenizer import TOKENIZER


@dataclasses.dataclass
class SlotInput:
  audio: np.ndarray                    # f32 [samples_per_turn] at the layout's rate
  video: np.ndarray | None = None      # uint8 [H, W, 3] at the layout's frame size
  user_text: str | None = None
  background_text: str | None = None


@dataclasses.dataclass
class SlotOutput:
  turn: int                   # the micro-turn this output block belongs to
  audio: np.ndarray           # f32 [samples_per_turn], spoken during turn + 1
  events: list                # {"t_start","t_end","text","stream"}
  text_tokens: np.ndarray     # int32 [n_model_text]
  mel: np.ndarray             # f32 [frames_per_turn, n_mels]
  user_text_in: list          # token ids that entered the user_text slots
  background_in: list         # token ids that entered the background_text slots


class Member:
  """One session's host-side state in a pool."""

  def __init__(self, pool: "SlotPool", seed: int):
    spec = pool.spec
    self.seed = int(seed)
    self.row = -1
    self.state = None          # its own batch-1 state when the pool is not batched
    self.turn = 0
    self.frontend = StreamingMelFrontend(spec, pool.mel_params)
    self.vocoder = pool.make_vocoder() if pool.vocoder else None
    sc = pool.config.session   # the same limiter as interaction.session.Sessions
    self.limiter = OutputLimiter(spec.sample_rate, float(sc.get("output_ceiling", 0.98)),
                                 float(sc.get("output_release_s", 0.05)))
    self.user_text = collections.deque()
    self.background_text = collections.deque()
    self.eventizer = _Eventizer()

  def queue(self, user_text, background_text):
    if user_text:
      self.user_text.extend(TOKENIZER.encode(user_text))
    if background_text:
      self.background_text.extend(TOKENIZER.encode(background_text))


def _take(queue, n):
  return [queue.popleft() if queue else TOKENIZER.empty_id for _ in range(n)]


# Row surgery on a batched state, shared by every pool (compiled per shape).
_set_row = jax.jit(lambda state, fresh, row: jax.tree_util.tree_map(
    lambda s, f: jax.lax.dynamic_update_slice_in_dim(s, f, row, 0), state, fresh),
    donate_argnums=0)
_get_row = jax.jit(lambda state, row: jax.tree_util.tree_map(
    lambda s: jax.lax.dynamic_slice_in_dim(s, row, 1, 0), state))
_grow = jax.jit(lambda state, extra: jax.tree_util.tree_map(
    lambda s, e: jnp.concatenate([s, e]), state, extra))
_gather = jax.jit(lambda state, rows: jax.tree_util.tree_map(lambda s: s[rows], state))

_RUNNERS = collections.OrderedDict()


def shared_runner(config, params, scfg: SessionConfig | None) -> SessionRunner:
  """One SessionRunner (one compiled step per batch size) per model and
  SessionConfig in this process, so pools and servers started again (tests,
  benchmarks) reuse what is compiled."""
  scfg = scfg or SessionConfig.from_config(config.session)
  key = (id(params), config.to_json_best_effort(), scfg)
  if key not in _RUNNERS:
    # The entry holds params, so their id cannot be reused while cached.
    _RUNNERS[key] = (SessionRunner(config, params, scfg), params)
    while len(_RUNNERS) > 8:
      _RUNNERS.popitem(last=False)
  _RUNNERS.move_to_end(key)
  return _RUNNERS[key][0]


class SlotPool:
  """Sessions of one SessionConfig stepped together in fixed slot counts."""

  def __init__(self, config, params, scfg: SessionConfig | None = None, *,
               slot_counts=(1, 2, 4, 8, 16), batched: bool = True,
               vocoder=True):
    counts = sorted({int(c) for c in slot_counts})
    if not counts or counts[0] < 1:
      raise ValueError(f"slot_counts: need positive batch sizes, got {slot_counts}")
    self.config = config
    self.spec = LayoutSpec.from_config(config.layout)
    self.mel_params = mel_lib.MelParams.from_layout(config.layout)
    self.runner = shared_runner(config, params, scfg)
    self.scfg = self.runner.scfg
    self.slot_counts = tuple(counts)
    self.batched = bool(batched)
    # vocoder, as Sessions takes it: True (the chunked Griffin-Lim, from the
    # config's session fields), False (silent audio), a LearnedVocoder or the
    # path of a vocoder checkpoint (its per-session streamers); or any
    # zero-argument factory of streamers (mel [frames, n_mels] -> wave).
    if isinstance(vocoder, str):
      from interaction.learned_vocoder import load_vocoder
      vocoder = load_vocoder(vocoder)
    self.vocoder = bool(vocoder)
    if hasattr(vocoder, "streamer"):
      from interaction.learned_vocoder import check_layout
      check_layout(vocoder.config, self.spec, where="session vocoder")
      self.make_vocoder = vocoder.streamer
    elif callable(vocoder):
      self.make_vocoder = vocoder
    else:
      sc = config.session
      self.make_vocoder = lambda: StreamingVocoder(
          self.spec, n_iter=sc.vocoder_iters, context_frames=sc.vocoder_context_frames,
          params=self.mel_params)
    self.members: list[Member] = []
    self.size = 0               # rows of the batched state (0: none yet)
    self.state = None
    self.resizes = 0
    self._set_row, self._get_row, self._grow, self._gather = (
        _set_row, _get_row, _grow, _gather)

  @property
  def capacity(self) -> int:
    """The most sessions this pool holds at once."""
    return self.slot_counts[-1]

  def __len__(self):
    return len(self.members)

  # ---- membership ---------------------------------------------------------
  def join(self, seed: int = 0) -> Member:
    if len(self.members) >= self.capacity:
      raise ValueError(f"slot pool is full: {self.capacity} of {self.capacity} "
                       "slots taken")
    m = Member(self, seed)
    fresh = self.runner.init(1, [m.seed])
    if not self.batched:
      m.state = fresh
      self.members.append(m)
      return m
    taken = {x.row for x in self.members}
    if len(taken) >= self.size:
      self._resize(min(c for c in self.slot_counts if c > len(taken)))
      taken = {x.row for x in self.members}
    m.row = min(r for r in range(self.size) if r not in taken)
    self.state = self._set_row(self.state, fresh, jnp.int32(m.row))
    self.members.append(m)
    return m

  def leave(self, member: Member):
    self.members.remove(member)
    if not self.batched:
      member.state = None
      return
    if not self.members:
      return        # keep the state: the next join reuses it without a copy
    fit = min(c for c in self.slot_counts if c >= len(self.members))
    if fit < self.size:
      self._resize(fit)

  def _resize(self, size: int):
    """Moves the batch to `size` rows; live sessions keep their state."""
    if self.state is None:
      self.state = self.runner.init(size, [0] * size)
    elif size > self.size:
      self.state = self._grow(self.state, self.runner.init(size - self.size,
                                                           [0] * (size - self.size)))
    else:
      # Live rows first (in row order), then any vacant rows to fill the size.
      live = sorted(m.row for m in self.members)
      rest = [r for r in range(self.size) if r not in live]
      rows = np.asarray((live + rest)[:size], np.int32)
      self.state = self._gather(self.state, jnp.asarray(rows))
      where = {int(r): i for i, r in enumerate(rows)}
      for m in self.members:
        m.row = where[m.row]
    self.size = size
    self.resizes += 1

  def warmup(self):
    """Compiles the step (and row reset) for every slot count, before serving."""
    silence = SlotInput(np.zeros(self.spec.samples_per_turn, np.float32))
    sizes = self.slot_counts if self.batched else (1,)
    for size in sizes:
      state = self.runner.init(size, [0] * size)
      state = self._set_row(state, self.runner.init(1, [0]), jnp.int32(0))
      state, _ = self.runner.step(state, self._inputs([silence] * size)[0])
      jax.block_until_ready(state)
    m = Member(self, 0)   # the host side too (librosa's first call is slow)
    m.frontend(silence.audio)
    if m.vocoder is not None:
      m.vocoder(np.full((self.spec.frames_per_turn, self.spec.n_mels), -5.0, np.float32))

  # ---- the micro-turn -----------------------------------------------------
  def _inputs(self, rows: list[SlotInput], members=None) -> TurnInputs:
    """TurnInputs for the rows (members' queues and front ends are advanced)."""
    spec = self.spec
    n_ut, n_bg = spec.count(Stream.USER_TEXT), spec.count(Stream.BACKGROUND_TEXT)
    bins, ut, bt = [], [], []
    for i, x in enumerate(rows):
      m = members[i] if members else None
      if m is None:
        mel = np.full((spec.frames_per_turn, spec.n_mels), -10.0, np.float32)
        ut.append([TOKENIZER.empty_id] * n_ut)
        bt.append([TOKENIZER.empty_id] * n_bg)
      else:
        mel = m.frontend(x.audio)
        ut.append(_take(m.user_text, n_ut))
        bt.append(_take(m.background_text, n_bg))
      bins.append(mel_lib.dmel_quantize(mel, spec))
    args = [jnp.asarray(np.stack(bins)), jnp.asarray(np.array(ut, np.int32)),
            jnp.asarray(np.array(bt, np.int32))]
    if spec.count(Stream.VIDEO):
      blank = np.zeros((spec.video_height, spec.video_width, 3), np.uint8)
      args.append(jnp.asarray(np.stack([blank if x.video is None else x.video
                                        for x in rows])))
      args.append(jnp.asarray(np.array([x.video is not None for x in rows])))
    return TurnInputs(*args), ut, bt

  def _check(self, x: SlotInput):
    spec = self.spec
    a = np.asarray(x.audio)
    if a.shape != (spec.samples_per_turn,) or not np.issubdtype(a.dtype, np.floating):
      raise ValueError(f"audio: expected float [{spec.samples_per_turn}], got "
                       f"{a.dtype} {a.shape}")
    if not np.isfinite(a).all():
      raise ValueError("audio: chunk contains NaN or infinite samples")
    if x.video is not None:
      if not spec.count(Stream.VIDEO):
        raise ValueError("video: this model's layout has no video slots")
      want = (spec.video_height, spec.video_width, 3)
      v = np.asarray(x.video)
      if v.shape != want or v.dtype != np.uint8:
        raise ValueError(f"video: expected uint8 {want}, got {v.dtype} {v.shape}")
    return SlotInput(a.astype(np.float32), x.video, x.user_text, x.background_text)

  def step(self, inputs: dict) -> dict:
    """inputs: Member -> SlotInput. Returns Member -> SlotOutput for those members.

    A member without an input is held: its session does not advance (its row
    is stepped with the batch and then put back as it was, bit for bit).
    """
    stray = [m for m in inputs if m not in self.members]
    if stray:
      raise ValueError(f"step: {len(stray)} inputs for sessions not in this pool")
    inputs = {m: self._check(x) for m, x in inputs.items()}
    for m, x in inputs.items():
      m.queue(x.user_text, x.background_text)
    if not inputs:
      return {}
    if self.batched:
      rows = [SlotInput(np.zeros(self.spec.samples_per_turn, np.float32))] * self.size
      by_row = [None] * self.size
      for m, x in inputs.items():
        rows[m.row] = x
        by_row[m.row] = m
      held = [(m.row, self._get_row(self.state, jnp.int32(m.row)))
              for m in self.members if m not in inputs]
      turn_inputs, ut, bt = self._inputs(rows, by_row)
      self.state, out = self.runner.step(self.state, turn_inputs)
      for row, saved in held:
        self.state = self._set_row(self.state, saved, jnp.int32(row))
      out = jax.device_get(out)
      picks = {m: (m.row, out, ut[m.row], bt[m.row]) for m in inputs}
    else:
      picks = {}
      for m in inputs:
        turn_inputs, ut, bt = self._inputs([inputs[m]], [m])
        m.state, out = self.runner.step(m.state, turn_inputs)
        picks[m] = (0, jax.device_get(out), ut[0], bt[0])
    results = {}
    spec = self.spec
    for m in [m for m in self.members if m in inputs]:
      row, out, ut, bt = picks[m]
      tokens, mel = out.text_tokens[row], out.mel[row]
      # The output block of turn t is spoken during the next 200 ms.
      t0 = (m.turn + 1) * spec.turn_seconds
      events = m.eventizer.feed(tokens, t0, t0 + spec.turn_seconds)
      wave = (m.limiter(m.vocoder(mel)) if m.vocoder is not None
              else np.zeros(spec.samples_per_turn, np.float32))
      results[m] = SlotOutput(turn=m.turn, audio=wave, events=events,
                              text_tokens=np.asarray(tokens), mel=np.asarray(mel),
                              user_text_in=[t for t in ut if t != TOKENIZER.empty_id],
                              background_in=[t for t in bt if t != TOKENIZER.empty_id])
      m.turn += 1
    return results
