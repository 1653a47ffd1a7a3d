"""gather_gemv kernels: match the reference, and per-token bits are batch-invariant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from moe import gather_gemv as gg
from moe import layer as layer_lib
from moe.config import MoEConfig
from moe.layer import MoE
from pallas_kernels.numerics import Numerics


def problem(t, num_experts=8, k=2, d=32, f=48, seed=0, dtype=jnp.float32):
  ks = jax.random.split(jax.random.key(seed), 6)
  x = jax.random.normal(ks[0], (t, d)).astype(dtype)
  ids = jax.random.randint(ks[1], (t, k), 0, num_experts, jnp.int32)
  gates = jax.random.uniform(ks[2], (t, k))
  wg = (jax.random.normal(ks[3], (num_experts, d, f)) * d ** -0.5).astype(dtype)
  wu = (jax.random.normal(ks[4], (num_experts, d, f)) * d ** -0.5).astype(dtype)
  wd = (jax.random.normal(ks[5], (num_experts, f, d)) * f ** -0.5).astype(dtype)
  return x, ids, gates, wg, wu, wd


@pytest.mark.parametrize("t,num_experts,k", [(1, 4, 1), (5, 8, 2), (16, 64, 8)])
def test_xla_and_pallas_match_reference(t, num_experts, k):
  args = problem(t, num_experts, k)
  ref = np.asarray(gg.gather_gemv_reference(*args))
  np.testing.assert_allclose(np.asarray(jax.jit(gg.gather_gemv_xla)(*args)), ref,
                             atol=2e-6, rtol=1e-5)
  pallas = gg.gather_gemv_pallas(*args, block_f=16, interpret=True)
  np.testing.assert_allclose(np.asarray(pallas), ref, atol=2e-6, rtol=1e-5)


def test_gather_gemv_gradient_matches_reference():
  x, ids, gates, wg, wu, wd = problem(6)

  def loss(fn, x, gates, wg, wu, wd):
    return jnp.sum(jnp.sin(fn(x, ids, gates, wg, wu, wd)))

  for kernel in ("xla", "pallas"):
    fn = lambda *a: gg.gather_gemv(*a, kernel=kernel, interpret=True)
    got = jax.grad(lambda *a: loss(fn, *a), argnums=range(5))(x, gates, wg, wu, wd)
    want = jax.grad(lambda *a: loss(gg.gather_gemv_reference, *a), argnums=range(5))(
        x, gates, wg, wu, wd)
    for a, b in zip(got, want):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)


# At d=32 XLA:CPU happens to use one kernel for every batch size, so the
# companion test below would be vacuous; at 64 x 128 dense and ragged_dot differ.
D, F = 64, 128


def _token0_bits(fn, args, sizes):
  """Token 0's output when it shares the call with `size - 1` random companions."""
  x0, ids0, gates0, *w = args
  outs = []
  for n in sizes:
    xc, idc, gc, *_ = problem(n, d=D, f=F, seed=n)
    xs = jnp.concatenate([x0[:1], xc[1:]])
    ids = jnp.concatenate([ids0[:1], idc[1:]])
    gates = jnp.concatenate([gates0[:1], gc[1:]])
    outs.append(np.asarray(jax.jit(fn)(xs, ids, gates, *w))[0])
  return outs


SIZES = (1, 2, 8, 31, 200)


@pytest.mark.parametrize("kernel", ["xla", "pallas"])
def test_per_token_output_is_bit_identical_whatever_the_batch(kernel):
  args = problem(1, d=D, f=F)
  fn = lambda *a: gg.gather_gemv(*a, kernel=kernel, interpret=True)
  sizes = SIZES if kernel == "xla" else (1, 3, 8)  # interpret mode is slow
  outs = _token0_bits(fn, args, sizes)
  for n, out in zip(sizes[1:], outs[1:]):
    np.testing.assert_array_equal(out, outs[0], err_msg=f"batch of {n}")


def test_bit_identity_check_can_fail_for_batch_dependent_impls():
  """Companion: the dense and grouped-GEMM forms do change a token's bits."""
  args = problem(1, d=D, f=F)
  for name, fn in [("dense", layer_lib.ffn_dense), ("ragged_dot", layer_lib.ffn_ragged_dot)]:
    def ffn(x, ids, gates, *w, fn=fn):
      from moe.router import Routing
      return fn(x, Routing(ids, gates, jnp.float32(0), jnp.float32(0)), *w)
    outs = _token0_bits(ffn, args, SIZES)
    differs = [n for n, o in zip(SIZES[1:], outs[1:]) if not np.array_equal(o, outs[0])]
    assert differs, f"{name}: token 0 identical for every batch size; the check is vacuous"


def test_invariant_moe_layer_decode_equals_training_forward():
  """Invariant numerics: auto -> gather_gemv; 1-token call == row of a 300-token call."""
  cfg = MoEConfig(num_experts=8, top_k=2, d_ff=24, num_shared_experts=1,
                  auto_threshold=4)
  for numerics, expect_equal in [(Numerics(mode="invariant"), True), (Numerics(), False)]:
    model = MoE(32, cfg, numerics=numerics, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (3, 100, 32))
    full, _ = jax.jit(lambda x: model(x))(x)
    diffs = 0
    for b, s in [(0, 0), (1, 57), (2, 99)]:
      one, _ = jax.jit(lambda x: model(x))(x[b:b + 1, s:s + 1])
      same = np.array_equal(np.asarray(one)[0, 0], np.asarray(full)[b, s])
      diffs += not same
      if expect_equal:
        assert same, f"token ({b}, {s}) differs between decode and training forward"
    if not expect_equal:
      # Default numerics with auto: gather_gemv at 1 token, ragged_dot at 300.
      assert diffs > 0, "default numerics never differed; the check is vacuous"


def test_bad_inputs_raise():
  x, ids, gates, wg, wu, wd = problem(3)
  with pytest.raises(ValueError, match="w_down"):
    gg.gather_gemv(x, ids, gates, wg, wu, wd[:, :, :5])
  with pytest.raises(ValueError, match="expert_ids"):
    gg.gather_gemv(x, ids.astype(jnp.float32), gates, wg, wu, wd)
  with pytest.raises(ValueError, match="gates"):
    gg.gather_gemv(x, ids, gates[:, :1], wg, wu, wd)
  with pytest.raises(ValueError, match="kernel"):
    gg.gather_gemv(x, ids, gates, wg, wu, wd, kernel="cuda")
  with pytest.raises(ValueError, match="block_f"):
    gg.gather_gemv_pallas(x, ids, gates, wg, wu, wd, block_f=7, interpret=True)


def test_pallas_on_cpu_needs_explicit_interpret():
  """interpret is False by default (compiled, as on a TPU); the CPU backend
  cannot compile Pallas, so it says which field to set instead of guessing."""
  assert jax.default_backend() == "cpu"
  args = problem(2)
  with pytest.raises(ValueError, match=r"model\.kernels\.interpret"):
    gg.gather_gemv_pallas(*args)
  with pytest.raises(ValueError, match=r"model\.kernels\.interpret"):
    gg.gather_gemv(*args, kernel="pallas")
  # The MoE layer passes numerics.interpret through: with it the kernel runs.
  cfg = MoEConfig(num_experts=8, top_k=2, d_ff=24, impl="gather_gemv",
                  gemv_kernel="pallas")
  x = jax.random.normal(jax.random.key(1), (1, 2, 32))
  with pytest.raises(ValueError, match=r"model\.kernels\.interpret"):
    MoE(32, cfg, numerics=Numerics(), rngs=nnx.Rngs(0))(x)
  model = MoE(32, cfg, numerics=Numerics(interpret=True), rngs=nnx.Rngs(0))
  y, _ = model(x)
  ref, _ = model(x, impl="loop")
  np.testing.assert_allclose(np.asarray(y), np.asarray(ref), atol=2e-5, rtol=1e-5)
