"""Slot batches: sessions join, leave and are held without recompiling, and each
session's outputs equal, bit for bit (invariant kernels), a Sessions(batch_size=1)
session fed the same, through growing, shrinking, eviction, text and video."""

import numpy as np
import pytest

from interaction.batcher import SlotInput, SlotPool
from tests.interaction.serving import config, params, reference_session


def _inputs(n, seed):
  rng = np.random.default_rng(seed)
  audio = (0.1 * rng.standard_normal((n, 3200))).astype(np.float32)
  frames = rng.integers(0, 255, (n, 40, 40, 3), np.uint8)
  return [SlotInput(audio[i], frames[i] if i % 3 == 0 else None,
                    "hi there" if i == 1 else None, "result 7" if i == 4 else None)
          for i in range(n)]


def _reference(seed, inputs):
  ref = reference_session(seed)
  return [ref.step(x.audio, video=x.video, user_text=x.user_text,
                   background_text=x.background_text) for x in inputs]


def _same(out, r, where):
  np.testing.assert_array_equal(out.text_tokens, r.text_tokens[0], err_msg=where)
  np.testing.assert_array_equal(out.mel, r.mel[0], err_msg=where)
  np.testing.assert_array_equal(out.audio, r.audio[0], err_msg=where)
  assert out.events == r.events[0], where


@pytest.mark.parametrize("batched", [True, False])
def test_sessions_join_leave_and_wait_and_each_equals_itself_alone(batched):
  cfg = config()                                # 16-turn cache, 20 turns: past capacity
  pool = SlotPool(cfg, params(), slot_counts=(1, 2, 4), batched=batched)
  pool.warmup()
  compiled = pool.runner._step._cache_size()
  n = 20
  feeds = {k: _inputs(n, k) for k in range(5)}
  members, outs = {}, {k: [] for k in range(5)}
  sizes = []
  for t in range(60):
    if t == 8 and 0 in members:
      pool.leave(members.pop(0))                # leaves early: its row is reused
    for k in range(5):
      if t == 2 * k:
        members[k] = pool.join(seed=100 + k)
    for k in [k for k in members if len(outs[k]) >= n]:
      pool.leave(members.pop(k))
    # Session 2 has no chunk every third tick: it is held, not advanced.
    step = {m: feeds[k][len(outs[k])] for k, m in members.items()
            if not (k == 2 and t % 3 == 0)}
    res = pool.step(step)
    for k, m in members.items():
      if m in res:
        outs[k].append(res[m])
    sizes.append(pool.size)
    if not members and t > 30:
      break
  if batched:
    assert 4 in sizes and 2 in sizes and 1 in sizes and pool.resizes >= 4
  # Joining, leaving, resizing and holding never compiled a new step.
  assert pool.runner._step._cache_size() == compiled
  for k in range(5):
    ref = _reference(100 + k, feeds[k][:len(outs[k])])
    assert len(outs[k]) == (8 if k == 0 else n)
    for i, (o, r) in enumerate(zip(outs[k], ref)):
      assert o.turn == i
      _same(o, r, f"session {k} turn {i}")


def test_full_pool_refuses_and_bad_inputs_name_the_problem():
  cfg = config()
  pool = SlotPool(cfg, params(), slot_counts=(1,), vocoder=False)
  m = pool.join()
  with pytest.raises(ValueError, match="slot pool is full: 1 of 1"):
    pool.join()
  with pytest.raises(ValueError, match="audio: expected float"):
    pool.step({m: SlotInput(np.zeros(3199, np.float32))})
  with pytest.raises(ValueError, match="video: expected uint8"):
    pool.step({m: SlotInput(np.zeros(3200, np.float32), np.zeros((40, 40), np.uint8))})
  assert m.turn == 0
