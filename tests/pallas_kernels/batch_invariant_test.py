"""Batch-invariant matmul, RMSNorm, softmax, log-softmax: tolerance and bits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import batch_invariant as bi
from pallas_kernels import numerics as nm

IMPLS = nm.IMPLS


def _inv(impl, block_rows=8):
  # interpret: the CPU backend runs the 'pallas' impl in Pallas interpret mode.
  return nm.Numerics(mode="invariant", impl=impl, block_rows=block_rows,
                     interpret=True)


def _rand(seed, shape, dtype=jnp.float32):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _ops(numerics):
  """name -> (fn(x, params), reference(x, params)) for one feature width."""
  return {
      "matmul": (lambda x, p: bi.matmul(x, p["w"], numerics),
                 lambda x, p: bi.matmul_reference(x, p["w"])),
      "matmul_nk": (lambda x, p: bi.matmul(x, p["w_nk"], numerics, "nk"),
                    lambda x, p: bi.matmul_reference(x, p["w_nk"], "nk")),
      "rms_norm": (lambda x, p: bi.rms_norm(x, p["scale"], 1e-6, numerics),
                   lambda x, p: bi.rms_norm_reference(x, p["scale"], 1e-6)),
      "softmax": (lambda x, p: bi.softmax(x, numerics),
                  lambda x, p: bi.softmax_reference(x)),
      "log_softmax": (lambda x, p: bi.log_softmax(x, numerics),
                      lambda x, p: bi.log_softmax_reference(x)),
  }


def _params(k, n, dtype):
  # w_nk is stored [N, K] (a copy, not a transposed view), as Dense stores it.
  return {"w": _rand(1, (k, n), dtype), "w_nk": _rand(4, (n, k), dtype),
          "scale": _rand(2, (k,), dtype) + 1.0}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-5), (jnp.bfloat16, 3e-2)])
def test_agrees_with_reference(impl, dtype, tol):
  x = _rand(0, (2, 5, 48), dtype)   # leading dims (2, 5): 10 rows, 2 blocks
  params = _params(48, 40, dtype)
  for name, (fn, ref) in _ops(_inv(impl)).items():
    got = jax.jit(fn)(x, params)
    want = ref(x, params)
    assert got.shape == want.shape and got.dtype == dtype, name
    scale = 1.0 + float(jnp.max(jnp.abs(want.astype(jnp.float32))))
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               atol=tol * scale, rtol=tol, err_msg=name)


@pytest.mark.parametrize("impl", IMPLS)
def test_row_bits_do_not_depend_on_batch(impl):
  """A 5-row sequence gives the same bits alone and among 3 or 8 companions."""
  d = 64
  seq = _rand(0, (5, d))
  params = _params(d, 96, jnp.float32)
  for name, (fn, _) in _ops(_inv(impl)).items():
    fn = jax.jit(fn)
    alone = np.asarray(fn(seq[None], params)[0])
    for batch, where in ((3, 1), (8, 5)):
      others = _rand(10 + batch, (batch, 5, d))
      x = others.at[where].set(seq)
      np.testing.assert_array_equal(np.asarray(fn(x, params)[where]), alone,
                                    err_msg=f"{name} batch={batch}")
    # Rows at other positions inside a block: a 1-row call vs the same row
    # at row 3 of a block.
    single = np.asarray(fn(seq[2:3], params))
    np.testing.assert_array_equal(np.asarray(fn(seq, params))[2:3], single,
                                  err_msg=f"{name} row position")


# (K, N) of the demo model's projections (d_model 256, 8 q / 2 kv heads of
# 32, d_ff 768) and an odd pair.
# The demo's and tiny's shapes, and the MoE routers' narrow [d, E] weights
# ((32, 8): a 'kn' dot of it changed its bits between 64 and 100 rows on AVX2).
_DEMO_SHAPES = ((256, 256), (256, 64), (256, 768), (768, 256), (32, 1000), (32, 8),
                (256, 8))
_ROW_COUNTS = (1, 2, 7, 63, 64, 65, 130, 700, 2800)


def _row_bits_by_count(matmul, k, n, w_layout, seed):
  """{(rows, position): bits of one probe row placed there among random rows}."""
  rng = np.random.default_rng(seed)
  shape = (k, n) if w_layout == "kn" else (n, k)
  w = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  probe = rng.standard_normal(k).astype(np.float32)
  fn = jax.jit(lambda x, w: matmul(x, w))   # w an argument, as params are
  out = {}
  for m in _ROW_COUNTS:
    x = rng.standard_normal((m, k)).astype(np.float32)
    for p in sorted({0, m // 2, m - 1}):
      x[p] = probe
      out[(m, p)] = np.asarray(fn(jnp.asarray(x), w)[p])
  return out


@pytest.mark.parametrize("w_layout", bi.W_LAYOUTS)
@pytest.mark.parametrize("k,n", _DEMO_SHAPES)
def test_padded_dot_row_bits_hold_for_any_row_count(k, n, w_layout):
  """The 'xla' matmul (one dot, rows padded to min_dot_rows) is invariant.

  This is a measured property of XLA:CPU's YNNPACK dots, not a construction
  (see batch_invariant.py): checked here at the model's shapes, for row
  counts on both sides of the padding and of YNNPACK's thresholds, with the
  probe row first, in the middle and last.
  """
  num = _inv("xla")
  bits = _row_bits_by_count(lambda x, w: bi.matmul(x, w, num, w_layout),
                            k, n, w_layout, 0)
  first = bits[(1, 0)]
  for where, got in bits.items():
    np.testing.assert_array_equal(got, first, err_msg=f"rows, position {where}")


def test_rms_norm_as_a_plain_reduction_is_not_invariant():
  """Why RMSNorm keeps fixed row blocks on every path: as one jnp.sum over
  all rows it does change with the row count (measured at d = 32; 64..4096
  happened to hold)."""
  d = 32
  scale = _rand(2, (d,)) + 1.0
  bits = _row_bits_by_count(lambda x, w: bi._rms_norm_block(x, scale, 1e-6),
                            d, 2, "nk", 0)
  first = bits[(1, 0)]
  assert any(not np.array_equal(got, first) for got in bits.values())


@pytest.mark.parametrize("w_layout,min_rows", [("kn", 8), ("nk", 1)])
def test_padding_to_fewer_rows_than_min_dot_rows_is_not_invariant(w_layout,
                                                                  min_rows):
  """Companion: with less padding than min_dot_rows, the bits do change.

  [K, N] weights below YNNPACK's packing threshold get kernels with another
  summation order; a single row of either layout gets XLA's matrix-vector
  kernel. This is what min_dot_rows guards against.
  """
  assert min_rows < bi.min_dot_rows(w_layout)
  bits = _row_bits_by_count(
      lambda x, w: bi._matmul_padded(x, w, w_layout, min_rows=min_rows),
      256, 256, w_layout, 0)
  first = bits[(1, 0)]
  assert any(not np.array_equal(got, first) for got in bits.values())


def test_row_bits_hold_with_leading_dims_of_any_size():
  params = _params(32, 24, jnp.float32)
  fn = jax.jit(lambda x: bi.matmul(x, params["w"], _inv("xla")))
  x = _rand(3, (4, 3, 7, 32))
  full = np.asarray(fn(x))
  np.testing.assert_array_equal(np.asarray(fn(x[2, 1])), full[2, 1])
  np.testing.assert_array_equal(np.asarray(fn(x[1:3])), full[1:3])


def test_default_mode_matmul_does_depend_on_batch():
  """Companion of the bit-exact tests: plain XLA dots change with row count.

  On CPU XLA uses a matrix-vector kernel for one row and a matrix-matrix
  kernel otherwise, with a different summation order (pallas_kernels/README.md).
  """
  x = _rand(0, (16, 256))
  w = _rand(1, (256, 768))
  fn = jax.jit(lambda x: nm.matmul(x, w, nm.Numerics()))
  row0 = np.asarray(fn(x[:1])[0])
  assert any(not np.array_equal(np.asarray(fn(x[:m])[0]), row0) for m in (2, 3, 8, 16))
  # ...while the invariant path keeps row 0 for every row count.
  inv = jax.jit(lambda x: nm.matmul(x, w, _inv("xla")))
  row0 = np.asarray(inv(x[:1])[0])
  for m in (2, 3, 8, 16):
    np.testing.assert_array_equal(np.asarray(inv(x[:m])[0]), row0)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_agree_with_reference(impl):
  x = _rand(0, (3, 5, 16))
  w = _rand(1, (16, 12))
  scale = _rand(2, (12,)) + 1.0
  num = _inv(impl)

  def loss(x, w, scale, ops):
    mm, rms, sm, lsm = ops
    h = rms(mm(x, w), scale)
    return jnp.sum(jnp.sin(sm(h)) + lsm(h) * 0.1)

  ours = (lambda x, w: bi.matmul(x, w, num),
          lambda x, s: bi.rms_norm(x, s, 1e-6, num),
          lambda x: bi.softmax(x, num), lambda x: bi.log_softmax(x, num))
  refs = (bi.matmul_reference, lambda x, s: bi.rms_norm_reference(x, s, 1e-6),
          bi.softmax_reference, bi.log_softmax_reference)
  got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)(x, w, scale, ours)
  want = jax.grad(loss, argnums=(0, 1, 2))(x, w, scale, refs)
  for g, r in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_nk_layout_gradients_agree_with_reference(impl):
  x = _rand(0, (3, 5, 16))
  w_nk = _rand(1, (12, 16))
  num = _inv(impl)
  loss = lambda mm: lambda x, w: jnp.sum(jnp.sin(mm(x, w)))
  got = jax.jit(jax.grad(loss(lambda x, w: bi.matmul(x, w, num, "nk")),
                         argnums=(0, 1)))(x, w_nk)
  want = jax.grad(loss(lambda x, w: bi.matmul_reference(x, w, "nk")),
                  argnums=(0, 1))(x, w_nk)
  for g, r in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-5, rtol=1e-5)


def test_numerics_routes_to_invariant_ops():
  x = _rand(0, (3, 16))
  w = _rand(1, (16, 8))
  num = _inv("xla")
  np.testing.assert_array_equal(np.asarray(nm.matmul(x, w, num)),
                                np.asarray(bi.matmul(x, w, num)))
  np.testing.assert_array_equal(np.asarray(nm.log_softmax(x, num)),
                                np.asarray(bi.log_softmax(x, num)))


def test_bad_input_raises_naming_the_argument():
  num = _inv("xla")
  with pytest.raises(ValueError, match="K=16"):
    bi.matmul(jnp.zeros((2, 16)), jnp.zeros((8, 4)), num)
  with pytest.raises(ValueError, match="w must be"):
    bi.matmul(jnp.zeros((2, 16)), jnp.zeros((16,)), num)
  with pytest.raises(ValueError, match="w_layout"):
    nm.matmul(jnp.zeros((2, 16)), jnp.zeros((16, 4)), num, w_layout="mk")
  with pytest.raises(ValueError, match="K=16"):
    nm.matmul(jnp.zeros((2, 16)), jnp.zeros((16, 4)), nm.Numerics(), "nk")
  with pytest.raises(ValueError, match="scale"):
    bi.rms_norm(jnp.zeros((2, 16)), jnp.zeros((8,)), 1e-6, num)
  with pytest.raises(ValueError, match="block_rows"):
    nm.Numerics(mode="invariant", block_rows=1)
  with pytest.raises(ValueError, match="split_size"):
    nm.Numerics(mode="invariant", split_size=12)
  with pytest.raises(ValueError, match=r"model\.kernels\.interpret"):
    nm.Numerics(interpret=None)


def test_pallas_on_cpu_needs_explicit_interpret():
  """interpret is False by default (compiled, as on an accelerator); on the
  CPU backend every Pallas op raises naming the field instead of guessing."""
  assert jax.default_backend() == "cpu"
  compiled = nm.Numerics(mode="invariant", impl="pallas")
  assert compiled.interpret is False
  x, w = _rand(0, (3, 16)), _rand(1, (16, 8))
  for name, fn in [("matmul", lambda: nm.matmul(x, w, compiled)),
                   ("rms_norm", lambda: nm.rms_norm(x, jnp.ones(16), 1e-6, compiled)),
                   ("softmax", lambda: nm.softmax(x, compiled)),
                   ("log_softmax", lambda: nm.log_softmax(x, compiled))]:
    with pytest.raises(ValueError, match=r"model\.kernels\.interpret"):
      fn()
  # The XLA impls never reach Pallas, so interpret does not matter to them.
  for impl in ("xla", "xla_blocked"):
    nm.matmul(x, w, nm.Numerics(mode="invariant", impl=impl))
