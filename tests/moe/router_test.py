"""Router: top-k choice, gates and the auxiliary losses against hand-computed values."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from moe import router as router_lib


LOGITS = np.array([[2.0, 1.0, 0.0, -1.0],
                   [0.0, 0.0, 3.0, 0.0],
                   [1.0, 2.0, 3.0, 4.0]], np.float32)


def _softmax(row):
  e = [math.exp(v) for v in row]
  return [v / sum(e) for v in e]


def test_softmax_top2_by_hand():
  r = router_lib.route(jnp.asarray(LOGITS), top_k=2, gating="softmax")
  np.testing.assert_array_equal(np.asarray(r.expert_ids), [[0, 1], [2, 0], [3, 2]])
  # Renormalized top-2 probabilities: softmax over the two chosen logits.
  g0 = 1 / (1 + math.exp(-1.0))
  np.testing.assert_allclose(np.asarray(r.gates),
                             [[g0, 1 - g0], [1 / (1 + math.exp(-3)), 1 - 1 / (1 + math.exp(-3))],
                              [g0, 1 - g0]], rtol=1e-6)
  # load balance: E * sum_e f_e * P_e with f = counts / (T*k).
  counts = [2, 1, 2, 1]
  probs = [_softmax(row) for row in LOGITS.tolist()]
  mean_p = [sum(p[e] for p in probs) / 3 for e in range(4)]
  lb = 4 * sum(c / 6 * p for c, p in zip(counts, mean_p))
  np.testing.assert_allclose(float(r.load_balance_loss), lb, rtol=1e-6)
  lse = [math.log(sum(math.exp(v) for v in row)) for row in LOGITS.tolist()]
  np.testing.assert_allclose(float(r.z_loss), sum(v * v for v in lse) / 3, rtol=1e-6)


def test_softmax_top1_keeps_raw_probability():
  r = router_lib.route(jnp.asarray(LOGITS), top_k=1, gating="softmax")
  np.testing.assert_array_equal(np.asarray(r.expert_ids)[:, 0], [0, 2, 3])
  want = [max(_softmax(row)) for row in LOGITS.tolist()]
  np.testing.assert_allclose(np.asarray(r.gates)[:, 0], want, rtol=1e-6)


def test_sigmoid_top2_by_hand():
  r = router_lib.route(jnp.asarray(LOGITS), top_k=2, gating="sigmoid")
  sig = lambda v: 1 / (1 + math.exp(-v))
  np.testing.assert_array_equal(np.asarray(r.expert_ids), [[0, 1], [2, 0], [3, 2]])
  want = []
  for row, ids in zip(LOGITS.tolist(), [[0, 1], [2, 0], [3, 2]]):
    s = [sig(row[i]) for i in ids]
    want.append([v / sum(s) for v in s])
  np.testing.assert_allclose(np.asarray(r.gates), want, rtol=1e-6)
  scores = [[sig(v) for v in row] for row in LOGITS.tolist()]
  probs = [[v / sum(row) for v in row] for row in scores]
  mean_p = [sum(p[e] for p in probs) / 3 for e in range(4)]
  lb = 4 * sum(c / 6 * p for c, p in zip([2, 1, 2, 1], mean_p))
  np.testing.assert_allclose(float(r.load_balance_loss), lb, rtol=1e-6)


def test_uniform_routing_gives_unit_load_balance():
  logits = jnp.asarray(np.eye(4, dtype=np.float32) * 5)  # token t -> expert t
  r = router_lib.route(logits, top_k=1)
  # f_e = 1/4 each, so loss = 4 * sum_e P_e / 4 = sum_e P_e = 1 exactly.
  np.testing.assert_allclose(float(r.load_balance_loss), 1.0, rtol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(top_k=0), "top_k"), (dict(top_k=5), "top_k"), (dict(top_k=1, gating="relu"), "gating")])
def test_bad_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    router_lib.route(jnp.asarray(LOGITS), **kwargs)


def test_bad_logits_shape_raises():
  with pytest.raises(ValueError, match="logits"):
    router_lib.route(jnp.zeros((2, 3, 4)), top_k=1)
