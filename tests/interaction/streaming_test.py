"""Streaming sessions: trainer-sampler bit alignment, batch invariance, eviction,
unbounded sessions and bad input (README.md, the determinism contract)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipeline.pipeline import make_train_iter
from experiments.trainer import create_train_state
from interaction.params import load_model
from interaction.flow_head import euler_sample, unit_to_mel
from interaction.streaming import Forced, SessionRunner, TurnInputs
from tests.interaction.nontrivial import perturbed, tiny_session_config


_config = tiny_session_config


@functools.lru_cache(maxsize=None)
def _params():
  # Every leaf perturbed: fresh parameters zero-initialise the flow head's
  # output layer, so its mel would be clip(noise) and the mel checks below
  # could not fail (issue 12).
  return perturbed(create_train_state(_config())["params"])


@functools.lru_cache(maxsize=None)
def _runner(mode="invariant", capacity=16, prefix=1, temperature=0.0, split=None):
  """One compiled runner per session config, shared by the tests."""
  return SessionRunner(_config(mode, capacity, prefix, temperature, split),
                       _params())


def _batch(c, seed=0):
  c = c.copy_and_resolve_references()
  c.data.seed = seed
  return {k: jnp.asarray(v) for k, v in next(make_train_iter(c)).items()}


def _turn(batch, t, rows=slice(None)):
  inp = TurnInputs(batch["user_audio"][rows, t], batch["user_text"][rows, t],
                   batch["background_text"][rows, t], batch["video"][rows, t],
                   batch["video_present"][rows, t])
  frc = Forced(batch["model_text"][rows, t], batch["model_audio"][rows, t])
  return inp, frc


def _stream_forced(mode, batch, split=None):
  runner = _runner(mode, split=split)
  b, t_max = batch["model_text"].shape[:2]
  # The session is at the window's turn in its session (a crop keeps its
  # elapsed time and positions, issue 15), its cache empty as the window's.
  state = runner.init(b, seeds=list(range(b)))
  state = state._replace(turn=jnp.array(np.asarray(batch["first_turn"]), jnp.int32))  # a copy: steps donate the state
  outs = []
  for t in range(t_max):
    inp, frc = _turn(batch, t)
    state, out = runner.step(state, inp, frc)
    outs.append(jax.device_get(out))
  return outs


def _alignment_diffs(mode, split=None):
  c = _config(mode, split=split)
  params = _params()
  batch = _batch(c)
  train = jax.device_get(jax.jit(lambda b: load_model(c, params).forward(b))(batch))
  # The reference flow sample runs jitted, as the training step does.
  sample = jax.jit(lambda h, noise: unit_to_mel(euler_sample(
      load_model(c, params).flow, h, noise, int(c.model.flow.num_steps)), -7.0, 2.0))
  outs = _stream_forced(mode, batch, split)
  n_text = batch["model_text"].shape[2]
  diffs = []
  for t, out in enumerate(outs):
    diffs.append(np.abs(train["text_logits"][:, t] - out.text_logits).max())
    diffs.append(np.abs(train["audio_cond"][:, t] - out.audio_cond).max())
    # Flow-head outputs: the teacher-forced condition with the session's own
    # noise gives the session's mel, bit for bit.
    for j in range(out.audio_cond.shape[1]):
      first = np.asarray(batch["first_turn"])
      keys = [jax.random.fold_in(jax.random.fold_in(jax.random.key(s), first[s] + t),
                                 n_text + j)
              for s in range(out.audio_cond.shape[0])]
      noise = jnp.stack([jax.random.normal(k, (320,)) for k in keys])
      x1 = sample(jnp.asarray(train["audio_cond"][:, t, j]), noise)
      mel = np.asarray(x1).reshape(-1, 4, 80)
      diffs.append(np.abs(mel - out.mel[:, 4 * j:4 * j + 4]).max())
  return diffs


@pytest.mark.parametrize("split", [None, 256])
def test_streaming_equals_training_forward_bit_for_bit(split):
  """Trainer-sampler alignment: logits, flow conditions and flow outputs.

  split 256 (longer than the training sequence): the training forward's
  attention folds one short split of a multiple of 64 keys
  (split_kv_attention.RAGGED_ALIGN), the session full 256-slot splits.
  """
  diffs = _alignment_diffs("invariant", split)
  assert max(diffs) == 0.0, [(i, float(x)) for i, x in enumerate(diffs) if x]


def test_alignment_check_can_fail_in_default_mode():
  diffs = _alignment_diffs("default")
  assert max(diffs) > 0.0


def _free_run(runner, batch, rows, seeds, turns):
  state = runner.init(len(seeds), seeds=seeds)
  outs = []
  for t in range(turns):
    inp, _ = _turn(batch, t % batch["model_text"].shape[1], rows)
    state, out = runner.step(state, inp)
    outs.append(jax.device_get(out))
  return outs, jax.device_get(state)


def test_three_sessions_in_a_batch_equal_each_alone():
  """Sampling on (temperature 0.8, top-p), past eviction (capacity 4 turns)."""
  c = _config(capacity=4, prefix=1, temperature=0.8)
  runner = _runner(capacity=4, prefix=1, temperature=0.8)
  a, b = _batch(c, 0), _batch(c, 1)
  batch = {k: jnp.concatenate([a[k], b[k][:1]]) for k in a}      # 3 different rows
  turns = 7
  together, state = _free_run(runner, batch, slice(0, 3), [11, 22, 33], turns)
  assert int(state.turn[0]) == turns
  for row, seed in enumerate([11, 22, 33]):
    alone, _ = _free_run(runner, batch, slice(row, row + 1), [seed], turns)
    for t in range(turns):
      for field in ("text_tokens", "text_logits", "mel", "audio_bins"):
        np.testing.assert_array_equal(getattr(together[t], field)[row],
                                      getattr(alone[t], field)[0],
                                      err_msg=f"row {row} turn {t} {field}")


def test_batch_check_can_fail_in_default_mode():
  c = _config(mode="default", capacity=4, prefix=1)
  runner = _runner(mode="default", capacity=4, prefix=1)
  a, b = _batch(c, 0), _batch(c, 1)
  batch = {k: jnp.concatenate([a[k], b[k][:1]]) for k in a}
  together, _ = _free_run(runner, batch, slice(0, 3), [11, 22, 33], 2)
  alone, _ = _free_run(runner, batch, slice(1, 2), [22], 2)
  assert not np.array_equal(together[1].text_logits[1], alone[1].text_logits[0])


def test_eviction_keeps_prefix_and_latest_turns_in_step_with_the_cache():
  c = _config(capacity=5, prefix=2)
  batch = _batch(c)
  runner = _runner(capacity=5, prefix=2)
  spt = runner.spec.slots_per_turn
  state = runner.init(2, seeds=[0, 1])
  snapshots = []
  for t in range(12):
    inp, _ = _turn(batch, t % 6)
    state, out = runner.step(state, inp)
    assert np.isfinite(np.asarray(out.text_logits)).all()
    snapshots.append(jax.device_get(state))
  last = snapshots[-1]
  # Memory is bounded: the cache never grows and holds at most capacity turns.
  cap = last.slot_turn.shape[1]
  assert int(last.length[0]) <= cap and int(last.length[0]) == 5 * spt
  # The history and the cache stay in step: prefix turns 0-1, then the three
  # most recent turns, each as one contiguous block of spt slots.
  held = last.slot_turn[0, :int(last.length[0])]
  np.testing.assert_array_equal(held, np.repeat([0, 1, 9, 10, 11], spt))
  assert (last.slot_turn[0, int(last.length[0]):] == -1).all()
  # The kept slots' keys are exactly the ones written when they were computed:
  # eviction moves KV, it never recomputes or re-rotates it.
  before = snapshots[-2]                      # after turn 10: turns 0,1,8,9,10
  k_before = np.asarray(before.cache[1]["k"][0])
  k_last = np.asarray(last.cache[1]["k"][0])
  np.testing.assert_array_equal(k_last[:2 * spt], k_before[:2 * spt])
  np.testing.assert_array_equal(k_last[2 * spt:4 * spt], k_before[3 * spt:5 * spt])


@pytest.mark.slow
def test_two_hour_session_runs_with_flat_memory():
  """36,000 micro-turns (2 hours) of `tiny`, far past capacity."""
  import psutil
  runner = _runner(capacity=50, prefix=5, temperature=0.7)
  spec = runner.spec
  chunk = 1200
  total = 36_000
  rng = np.random.default_rng(0)
  bins = rng.integers(0, 16, (chunk, 1, spec.frames_per_turn, spec.n_mels), np.int32)
  text = rng.integers(0, 256, (chunk, 1, 2), np.int32)
  video = rng.integers(0, 256, (chunk, 1, 40, 40, 3), np.uint8)
  present = rng.random((chunk, 1)) < 0.5
  inputs = TurnInputs(jnp.asarray(bins), jnp.asarray(text), jnp.asarray(text),
                      jnp.asarray(video), jnp.asarray(present))
  state = runner.init(1, seeds=[0])
  proc = psutil.Process()
  rss = []
  for _ in range(total // chunk):
    state, out = runner.run(state, inputs)
    jax.block_until_ready(state)
    assert np.isfinite(np.asarray(out.mel)).all()
    rss.append(proc.memory_info().rss)
  assert int(state.turn[0]) == total
  assert int(state.length[0]) <= state.slot_turn.shape[1]
  # Flat: after the first chunk (compilation, allocator warm-up) resident
  # memory grows by less than 5% over the remaining 1h58m.
  growth = (max(rss[1:]) - rss[1]) / rss[1]
  assert growth < 0.05, [r / 2**20 for r in rss]
