"""Streaming sessions: persistent-KV micro-turn inference.

Every 200 ms a session appends one input block to a KV cache preallocated to a
fixed capacity (a small prefill), then generates the output block slot by
slot: model_text tokens (temperature / top-p sampling) and model_audio slots
(flow-head Euler steps, quantized to dMel and fed back like input audio).
One jitted function with static shapes serves every micro-turn; the state's
buffers are donated, so nothing is reallocated and no history is recomputed.

Past capacity the session evicts: the first `prefix_turns` micro-turns stay,
the oldest micro-turn after them is dropped (its KV slots shifted out), and the
session goes on forever with bounded memory. Cached keys carry their RoPE
rotation and the time embedding of their own turn, so eviction never
re-rotates or re-embeds anything. `slot_turn` records which micro-turn each
cache slot holds, so the history and the cache cannot drift apart.

Several sessions step together as one batch; each row has its own write
pointer, turn counter and sampling key (folded with the turn and slot), so with
the invariant kernels a session's outputs do not depend on its companions.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from interaction import layout as lo
from interaction import mel as mel_lib
from interaction.flow_head import euler_sample, unit_to_mel
from interaction.layout import LayoutSpec, Stream
from interaction import params as params_lib
from interaction.model import InteractionModel


@dataclasses.dataclass(frozen=True)
class SessionConfig:
  capacity_turns: int
  prefix_turns: int
  temperature: float = 0.0
  top_p: float = 1.0
  flow_temperature: float = 1.0

  @classmethod
  def from_config(cls, session) -> "SessionConfig":
    c = cls(capacity_turns=int(session.capacity_turns),
            prefix_turns=int(session.prefix_turns),
            temperature=float(session.temperature), top_p=float(session.top_p),
            flow_temperature=float(session.flow_temperature))
    if c.prefix_turns < 0 or c.capacity_turns < c.prefix_turns + 2:
      raise ValueError(f"session.capacity_turns: {c.capacity_turns} must be at "
                       f"least session.prefix_turns + 2 = {c.prefix_turns + 2}")
    if c.temperature < 0 or not 0 < c.top_p <= 1:
      raise ValueError("session.temperature must be >= 0 and session.top_p in (0, 1]")
    return c


class SessionState(NamedTuple):
  cache: list            # per layer {"k", "v": [B, C, Hkv, D]}
  length: jax.Array      # int32 [B]: valid cache slots (the write pointer)
  turn: jax.Array        # int32 [B]: micro-turns completed so far
  slot_turn: jax.Array   # int32 [B, C]: micro-turn held by each cache slot, -1 empty
  key: jax.Array         # uint32 [B, 2]: per-session sampling key data


class TurnInputs(NamedTuple):
  """One micro-turn of input for B sessions (already featurised)."""
  user_audio: jax.Array        # int32 [B, F, n_mels] dMel bins
  user_text: jax.Array         # int32 [B, n_user_text]
  background_text: jax.Array   # int32 [B, n_background_text]
  video: Any = None            # uint8 [B, H, W, 3] or None without video
  video_present: Any = None    # bool [B]


class Forced(NamedTuple):
  """Teacher forcing for the output block (alignment tests, replays).

  Either stream may be None: that stream free-runs while the other is forced
  (experiments/free_run.py measures where free running departs from teacher
  forcing this way).
  """
  model_text: Any          # int32 [B, n_text], or None: sample the text
  model_audio: Any         # int32 [B, F, n_mels] dMel bins, or None: feed back the flow's


class TurnOutputs(NamedTuple):
  text_tokens: jax.Array   # int32 [B, n_text]
  text_logits: jax.Array   # f32 [B, n_text, V]
  audio_cond: jax.Array    # [B, n_audio, d] hidden states conditioning the flow head
  mel: jax.Array           # f32 [B, F, n_mels] generated log10 mel
  audio_bins: jax.Array    # int32 [B, F, n_mels] what was fed back


def capacity_slots(spec: LayoutSpec, scfg: SessionConfig, split_size: int) -> int:
  slots = scfg.capacity_turns * spec.slots_per_turn
  return -(-slots // split_size) * split_size


def init_state(model: InteractionModel, scfg: SessionConfig, batch_size: int,
               seeds) -> SessionState:
  spec = model.spec
  cap = capacity_slots(spec, scfg, model.numerics.split_size)
  seeds = np.broadcast_to(np.asarray(seeds, np.uint32), (batch_size,))
  keys = jnp.stack([jax.random.key_data(jax.random.key(int(s))) for s in seeds])
  return SessionState(
      cache=model.init_cache(batch_size, cap),
      length=jnp.zeros((batch_size,), jnp.int32),
      turn=jnp.zeros((batch_size,), jnp.int32),
      slot_turn=jnp.full((batch_size, cap), -1, jnp.int32),
      key=keys)


# ---------------------------------------------------------------------------
# Pieces of one micro-turn (pure functions of the model and the state).
# ---------------------------------------------------------------------------
def _evict(spec: LayoutSpec, scfg: SessionConfig, state: SessionState) -> SessionState:
  """Drops the oldest micro-turn after the prefix in rows that cannot fit one more."""
  spt = spec.slots_per_turn
  # Whole micro-turns only: the cache array may be a little larger (rounded
  # up to the split size), but it holds at most capacity_turns turns.
  limit = scfg.capacity_turns * spt
  keep = scfg.prefix_turns * spt
  need = state.length + spt > limit                          # [B]

  def shift(x):  # x [B, C, ...]: remove slots [keep, keep + spt)
    pad = jnp.zeros((x.shape[0], spt) + x.shape[2:], x.dtype)
    shifted = jnp.concatenate([x[:, :keep], x[:, keep + spt:], pad], axis=1)
    mask = need.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(mask, shifted, x)

  def do(state):
    slot_turn = shift(state.slot_turn + 1) - 1              # pad becomes -1
    return state._replace(
        cache=jax.tree_util.tree_map(shift, state.cache),
        length=jnp.where(need, state.length - spt, state.length),
        slot_turn=slot_turn)

  # The copy runs only in micro-turns where some row is full.
  return jax.lax.cond(jnp.any(need), do, lambda s: s, state)


def _run_slots(model, state: SessionState, x, slot_offsets):
  """Appends slots x [B, n, d] of the current turn; returns (h [B, n, d], state)."""
  spt = model.spec.slots_per_turn
  n = x.shape[1]
  positions = state.turn[:, None] * spt + jnp.asarray(slot_offsets)[None, :]
  h, cache, _ = model.backbone(x, positions, state.cache, state.length)
  idx = state.length[:, None] + jnp.arange(n)[None, :]
  slot_turn = jax.vmap(lambda st, i, t: st.at[i].set(t))(
      state.slot_turn, idx, jnp.broadcast_to(state.turn[:, None], idx.shape))
  return h, state._replace(cache=cache, length=state.length + n,
                           slot_turn=slot_turn)


def _embed(model, content, stream: Stream, turn, count: int):
  """content [B, n, d] of one stream at the current turn -> slot embeddings."""
  seconds = turn.astype(jnp.float32) * jnp.float32(model.spec.turn_seconds)
  seconds = jnp.broadcast_to(seconds[:, None], content.shape[:2])
  ids = jnp.full((count,), int(stream), jnp.int32)
  return model.embed_slots(content, ids, seconds)


def _sample_text(logits, key, temperature: float, top_p: float):
  """Greedy at temperature 0; else temperature + nucleus (top-p) sampling."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    cum = jnp.cumsum(probs, axis=-1)
    # Keep the smallest set whose mass reaches top_p (always the first token).
    cutoff_idx = jnp.sum(cum < top_p, axis=-1, keepdims=True)
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_idx, axis=-1)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return jax.vmap(lambda k, l: jax.random.categorical(k, l))(key, logits).astype(jnp.int32)


def _row_keys(state: SessionState, slot: int):
  """Per-session key for (turn, slot): independent of batch companions."""
  def one(kd, turn):
    k = jax.random.wrap_key_data(kd)
    return jax.random.fold_in(jax.random.fold_in(k, turn), slot)
  return jax.vmap(one)(state.key, state.turn)


def step(model: InteractionModel, scfg: SessionConfig, state: SessionState,
         inputs: TurnInputs, forced: Forced | None = None):
  """One micro-turn for every session in the batch: append, then generate."""
  spec = model.spec
  state = _evict(spec, scfg, state)
  turn = state.turn

  # 1. Append the input block: one small prefill against the cache.
  streams = {"user_audio": inputs.user_audio[:, None],
             "user_text": inputs.user_text[:, None],
             "background_text": inputs.background_text[:, None]}
  if spec.count(Stream.VIDEO):
    streams["video"] = inputs.video[:, None]
    streams["video_present"] = inputs.video_present[:, None]
  content = model.content(streams)
  parts = [content[s][:, 0] for s in lo.INPUT_STREAMS if spec.count(s)]
  x = jnp.concatenate(parts, axis=1)                        # [B, n_in, d]
  seconds = jnp.broadcast_to(
      (turn.astype(jnp.float32) * jnp.float32(spec.turn_seconds))[:, None],
      x.shape[:2])
  ids = jnp.asarray(spec.turn_stream_ids()[:spec.input_slots])
  x = model.embed_slots(x, ids, seconds)
  h, state = _run_slots(model, state, x, np.arange(spec.input_slots))
  h_prev = h[:, -1]

  # 2. model_text slots, one token at a time.
  n_text = spec.count(Stream.MODEL_TEXT)
  text_off = spec.offset(Stream.MODEL_TEXT)
  tokens, logits_all = [], []
  for j in range(n_text):
    logits = model.text_logits(h_prev)
    if forced is not None and forced.model_text is not None:
      tok = forced.model_text[:, j]
    else:
      tok = _sample_text(logits, _row_keys(state, j), scfg.temperature, scfg.top_p)
    tokens.append(tok)
    logits_all.append(logits)
    emb = _embed(model, model.text(tok[:, None]).astype(model.dtype),
                 Stream.MODEL_TEXT, turn, 1)
    h, state = _run_slots(model, state, emb, [text_off + j])
    h_prev = h[:, 0]

  # 3. model_audio slots: flow-head ODE, quantize to dMel, feed back.
  n_audio = spec.count(Stream.MODEL_AUDIO)
  audio_off = spec.offset(Stream.MODEL_AUDIO)
  fpp, n_mels = spec.frames_per_position, spec.n_mels
  forced_slots = (lo.stack_audio_frames(spec, forced.model_audio)
                  if forced is not None and forced.model_audio is not None else None)
  conds, mels, bins_all = [], [], []
  for j in range(n_audio):
    conds.append(h_prev)
    noise = jax.vmap(lambda k: jax.random.normal(k, (fpp * n_mels,), model.dtype))(
        _row_keys(state, n_text + j)) * scfg.flow_temperature
    x1 = euler_sample(model.flow, h_prev, noise, model.flow_steps)
    mel = unit_to_mel(x1.astype(jnp.float32), spec.dmel_min, spec.dmel_max)
    bins = (forced_slots[:, j] if forced_slots is not None
            else mel_lib.dmel_quantize(mel, spec, xp=jnp))
    mels.append(mel)
    bins_all.append(bins)
    emb = _embed(model, model.dmel(bins[:, None], model.dtype),
                 Stream.MODEL_AUDIO, turn, 1)
    h, state = _run_slots(model, state, emb, [audio_off + j])
    h_prev = h[:, 0]

  state = state._replace(turn=turn + 1)
  b = h_prev.shape[0]
  out = TurnOutputs(
      text_tokens=jnp.stack(tokens, axis=1),
      text_logits=jnp.stack(logits_all, axis=1),
      audio_cond=jnp.stack(conds, axis=1),
      mel=jnp.stack(mels, axis=1).reshape(b, n_audio * fpp, n_mels),
      audio_bins=jnp.stack(bins_all, axis=1).reshape(b, n_audio * fpp, n_mels))
  return state, out


# ---------------------------------------------------------------------------
# Compiled entry points over pure-dict parameters.
# ---------------------------------------------------------------------------
class SessionRunner:
  """Compiles `step` once per (config, batch size) and runs it with donation."""

  def __init__(self, config, params, scfg: SessionConfig | None = None):
    self.config = config
    self.scfg = scfg or SessionConfig.from_config(config.session)
    self.params = params
    self._build = params_lib.ModelBinder(config)
    self.model = self._build(params) if params is not None else None
    self.spec = LayoutSpec.from_config(config.layout)

    def _step(params, state, inputs, forced):
      return step(self._build(params), self.scfg, state, inputs, forced)

    def _run(params, state, inputs_seq, forced_seq):
      def body(st, xs):
        inp, frc = xs
        st, out = step(self._build(params), self.scfg, st, inp, frc)
        return st, out
      return jax.lax.scan(body, state, (inputs_seq, forced_seq))

    self._step = jax.jit(_step, donate_argnums=1)
    self._run = jax.jit(_run, donate_argnums=1)

  def init(self, batch_size: int, seeds=0) -> SessionState:
    return init_state(self.model, self.scfg, batch_size, seeds)

  def step(self, state, inputs: TurnInputs, forced: Forced | None = None):
    return self._step(self.params, state, inputs, forced)

  def run(self, state, inputs_seq: TurnInputs, forced_seq: Forced | None = None):
    """Many micro-turns in one call (leading axis = turns), via lax.scan."""
    return self._run(self.params, state, inputs_seq, forced_seq)


# ---------------------------------------------------------------------------
# Baseline for comparison only: what a turn-based stack does every micro-turn.
# ---------------------------------------------------------------------------
def reprefill_step(model: InteractionModel, scfg: SessionConfig, history: dict,
                   inputs: TurnInputs, seeds):
  """Recomputes the whole history, then runs one micro-turn.

  history: the batch-contract streams of the T micro-turns so far ([B, T, ...]).
  Allocates a fresh cache, prefills all T * slots_per_turn history slots in
  one pass, then appends the new input block and generates its output block
  exactly as `step` does. Its cost grows with the session; `step`'s does not.
  """
  spec = model.spec
  b, t = history["model_text"].shape[:2]
  big = dataclasses.replace(scfg, capacity_turns=t + 1, prefix_turns=0)
  state = init_state(model, big, b, seeds)
  x, positions = model.embed_episode(history)
  _, cache, _ = model.backbone(x, positions, state.cache,
                               jnp.zeros((b,), jnp.int32))
  n = t * spec.slots_per_turn
  state = state._replace(cache=cache, length=jnp.full((b,), n, jnp.int32),
                         turn=jnp.full((b,), t, jnp.int32))
  return step(model, big, state, inputs)
