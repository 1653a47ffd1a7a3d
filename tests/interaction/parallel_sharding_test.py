"""Deterministic collectives: tensor- and sequence-parallel forwards agree bit for bit.

The tiny model (a dense and an MoE block, invariant kernels) on 8 simulated CPU devices in
a subprocess (tests/interaction/parallel_sharding_worker.py): its decoder
stack run tensor-parallel, sequence-parallel and both at once
(interaction/parallel.py). With the deterministic all-reduce (all-gather,
then a fixed-order f32 sum: pallas_kernels/collectives.py) every layout gives
the same bits; the companion runs the plain path (one matmul per shard and
psum) and shows that the tensor- and sequence-parallel bits then differ, so
the check can fail. The collectives themselves are checked against their
numpy references on the suite's 4 in-process devices.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from pallas_kernels import collectives
from tests.workers import run_worker


@pytest.fixture(scope="module")
def layouts():
  out = run_worker("tests.interaction.parallel_sharding_worker", devices=8)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_tensor_and_sequence_parallel_forward_bit_identical(layouts):
  assert layouts["devices"] == 8
  det = layouts["deterministic"]
  bits = {(r["logits"], r["cond"]) for r in det.values()}
  assert len(bits) == 1, det
  assert all(r["max_diff"] == 0.0 for r in det.values())
  # And it is the model's forward, up to the order of the sums.
  assert all(r["model_diff"] < 1e-4 for r in det.values()), det


def test_plain_psum_tensor_and_sequence_parallel_differ(layouts):
  plain = layouts["psum"]
  tp, sp = plain["data=4,tensor=2"], plain["data=4,sequence=2"]
  assert (tp["logits"], tp["cond"]) != (sp["logits"], sp["cond"]), plain
  # Different bits, same function.
  assert max(r["max_diff"] for r in plain.values()) < 1e-4, plain


def _mesh4():
  if jax.device_count() < 4:
    pytest.skip("needs 4 CPU devices (tests/conftest.py sets them)")
  from interaction import sharding
  return sharding.make_mesh("tensor=4", devices=jax.devices()[:4])


def test_all_reduce_and_reduce_scatter_match_their_references():
  mesh = _mesh4()
  rng = np.random.default_rng(0)
  shards = [rng.standard_normal((8, 6)).astype(np.float32) * 10 ** rng.uniform(-3, 3)
            for _ in range(4)]
  x = jnp.asarray(np.concatenate(shards, axis=0))         # shard i = rows 8i..8i+7

  def run(f, out_spec):
    return np.asarray(jax.jit(jax.shard_map(f, mesh=mesh, in_specs=P("tensor"),
                                            out_specs=out_spec, check_vma=False))(x))
  ar = run(lambda s: collectives.all_reduce(s, "tensor"), P("tensor"))
  ref = collectives.all_reduce_reference(shards)
  for i in range(4):
    np.testing.assert_array_equal(ar[8 * i:8 * i + 8], ref)
  rs = run(lambda s: collectives.reduce_scatter(s, "tensor", scatter_dimension=0),
           P("tensor"))
  np.testing.assert_array_equal(rs, np.concatenate(
      collectives.reduce_scatter_reference(shards, 0), axis=0))
  # The plain paths compute the same sums (not necessarily the same bits).
  np.testing.assert_allclose(run(lambda s: collectives.all_reduce(
      s, "tensor", deterministic=False), P("tensor"))[:8], ref, rtol=1e-5, atol=1e-5)


def test_fixed_order_sum_is_left_to_right():
  a = jnp.float32(1e8)
  parts = [a, jnp.float32(1.0), -a, jnp.float32(1.0)]
  # ((1e8 + 1) - 1e8) + 1 = 1 in f32 (1e8 + 1 rounds to 1e8); any other
  # association of these four gives 0 or 2.
  assert float(collectives.fixed_order_sum(parts)) == 1.0
  assert float(collectives.fixed_order_sum([parts[i] for i in (0, 2, 1, 3)])) == 2.0
