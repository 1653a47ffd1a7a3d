"""Property-based determinism of the invariant kernels (issue 12; README.md, the determinism contract).

Hypothesis draws the shapes the hand-written tests fix: batch sizes, row
counts, GQA ratios 1-8, head dims, split sizes, chunkings and cache
capacities, in f32, and checks the contract bit for bit on every kernel path:

- split-KV attention: one prefill == the same tokens in random chunks (with
  stale values past the valid length) == the whole sequence without a cache
  (the training forward's padded path) == a larger cache; a row's bits do
  not depend on its batch companions or their offsets.
- matmul (both weight layouts), RMSNorm, softmax, log-softmax: a row's bits
  do not depend on how many rows are computed with it, or which.

The example budget is fixed (tests/property_budget.py); each property prints
how many cases it tried. Issue 12's GQA-ratio-1 decode hole in impl 'xla' is
the kind of case this finds and the fixed tests did not.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from pallas_kernels import batch_invariant as bi
from pallas_kernels import numerics as nm
from tests.property_budget import check_property


def _num(impl, split_size=64, block_q=8, block_rows=8):
  # interpret: the CPU backend runs impl 'pallas' in Pallas interpret mode.
  return nm.Numerics(mode="invariant", impl=impl, split_size=split_size,
                     block_q=block_q, block_rows=block_rows, interpret=True)


def _consumer(y):
  # An add after the kernel, as the model has (a bias, a residual, a
  # position embedding): XLA:CPU contracts a fused multiply and add into one
  # FMA, so a kernel whose last multiply fuses with its caller's add in some
  # shapes only changes bits there (issue 12). Checked through it.
  return y + 0.25


@functools.lru_cache(maxsize=None)
def _attention_fn(numerics):
  """One jitted attention per numerics; offsets are traced int32 [B]."""
  return jax.jit(lambda q, k, v, off, n: _consumer(nm.attention(
      q, k, v, q_offset=off, kv_len=n, numerics=numerics)))


def _attend(numerics, q, k, v, off, kv_len):
  b = q.shape[0]
  off = jnp.broadcast_to(jnp.asarray(off, jnp.int32), (b,))
  kv_len = jnp.broadcast_to(jnp.asarray(kv_len, jnp.int32), (b,))
  return np.asarray(_attention_fn(numerics)(q, k, v, off, kv_len))


# ---------------------------------------------------------------------------
# Split-KV attention.
# ---------------------------------------------------------------------------
@st.composite
def attention_cases(draw, impls, max_tokens):
  split = draw(st.sampled_from([8, 16, 32, 64]))
  n = draw(st.integers(1, max_tokens))
  cap = split * (-(-n // split) + draw(st.integers(0, 1)))
  # Random chunk sizes, often one token (a session's decode steps); the last
  # chunk takes what is left.
  sizes, left = [], n
  for size in draw(st.lists(st.one_of(st.just(1), st.integers(1, n)),
                            min_size=1, max_size=4)):
    if left == 0:
      break
    sizes.append(min(size, left))
    left -= sizes[-1]
  if left:
    sizes.append(left)
  batch = draw(st.integers(1, 3))
  return dict(
      impl=draw(st.sampled_from(impls)), split=split, n=n, cap=cap,
      # The chunks run against a cache of this many extra splits.
      extra_splits=draw(st.integers(0, 2)), chunks=sizes,
      hkv=draw(st.integers(1, 2)), ratio=draw(st.integers(1, 8)),
      d=draw(st.sampled_from([4, 6, 8, 16, 24, 32, 64])),
      block_q=draw(st.sampled_from([2, 4, 8])), batch=batch,
      row=draw(st.integers(0, batch - 1)),
      scale=draw(st.sampled_from([0.1, 1.0, 4.0])),
      seed=draw(st.integers(0, 2**16)))


def _attention_property(c):
  rng = np.random.default_rng(c["seed"])
  num = _num(c["impl"], c["split"], c["block_q"])
  n, cap, b = c["n"], c["cap"], c["batch"]
  hkv, hq, d = c["hkv"], c["hkv"] * c["ratio"], c["d"]
  big = cap + c["extra_splits"] * c["split"]
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  q = jnp.asarray(c["scale"] * normal(b, n, hq, d))
  k_all, v_all = normal(b, big, hkv, d), normal(b, big, hkv, d)

  def cache(valid, capacity):
    # Slots past the valid length hold stale values in a real cache.
    keep = (np.arange(capacity) < valid)[None, :, None, None]
    stale = lambda: 3.0 * normal(b, capacity, hkv, d)
    return (jnp.asarray(np.where(keep, k_all[:, :capacity], stale())),
            jnp.asarray(np.where(keep, v_all[:, :capacity], stale())))

  prefill = _attend(num, q, *cache(n, cap), 0, n)
  # Chunks (in a cache of `big` slots) == one prefill (in `cap` slots).
  chunked, start = [], 0
  for size in c["chunks"]:
    chunked.append(_attend(num, q[:, start:start + size],
                           *cache(start + size, big), start, start + size))
    start += size
  np.testing.assert_array_equal(np.concatenate(chunked, axis=1), prefill,
                                err_msg=f"chunks (capacity {big}) != prefill")
  # The whole sequence without a cache (the training forward's path).
  whole = _attend(num, q, jnp.asarray(k_all[:, :n]), jnp.asarray(v_all[:, :n]),
                  0, n)
  np.testing.assert_array_equal(whole, prefill, err_msg="whole sequence != cache")
  # Batch: the last chunk of one row alone == in the batch, whose other rows
  # sit at random offsets of the same cache.
  r, size = c["row"], c["chunks"][-1]
  ck, cv = cache(n, big)
  off = rng.integers(0, big - size + 1, b).astype(np.int32)
  off[r] = n - size
  got = _attend(num, q[:, n - size:], ck, cv, off, off + size)
  alone = _attend(num, q[r:r + 1, n - size:], ck[r:r + 1], cv[r:r + 1],
                  n - size, n)
  np.testing.assert_array_equal(got[r], alone[0], err_msg="batch != alone")


def test_attention_chunking_capacity_and_batch_property(capsys):
  check_property(capsys, "split-KV attention (xla, xla_blocked)",
                 attention_cases(("xla", "xla_blocked"), 96),
                 _attention_property, max_examples=18)


def test_attention_property_on_pallas_interpret(capsys):
  # Interpret mode compiles slowly: fewer, smaller cases.
  check_property(capsys, "split-KV attention (pallas interpret)",
                 attention_cases(("pallas",), 24), _attention_property,
                 max_examples=2)


def _mha_decode_vs_prefill():
  """Issue 12's minimal case: split 64, 64 tokens, 2 query and 2 KV heads of
  32 (GQA ratio 1), impl 'xla': how many one-token decodes != the prefill."""
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((1, 64, 2, 32)), jnp.float32)
             for _ in range(3))
  num = _num("xla", split_size=64)
  prefill = _attend(num, q, k, v, 0, 64)
  return sum(not np.array_equal(_attend(num, q[:, t:t + 1], k, v, t, t + 1),
                                prefill[:, t:t + 1]) for t in range(64))


def test_mha_decode_equals_prefill():
  assert _mha_decode_vs_prefill() == 0


def test_mha_decode_with_one_row_dots_does_differ(monkeypatch):
  """Companion: without the row minimum a one-query block of GQA ratio 1 is
  a one-row dot (XLA's matrix-vector kernel), and decode != prefill."""
  from pallas_kernels import split_kv_attention as ska
  monkeypatch.setattr(ska, "min_dot_rows", lambda w_layout: 1)
  _attention_fn.cache_clear()
  try:
    assert _mha_decode_vs_prefill() > 0
  finally:
    _attention_fn.cache_clear()


# ---------------------------------------------------------------------------
# Matmul and the row-wise ops.
# ---------------------------------------------------------------------------
_WIDTHS = st.one_of(st.integers(1, 300), st.sampled_from([32, 64, 96, 128, 256]))


@st.composite
def row_cases(draw, impls):
  m1, m2 = draw(st.integers(1, 300)), draw(st.integers(1, 300))
  return dict(
      impl=draw(st.sampled_from(impls)),
      op=draw(st.sampled_from(["kn", "nk", "rms_norm", "softmax", "log_softmax"])),
      k=draw(_WIDTHS), n=draw(_WIDTHS), m1=m1, m2=m2,
      row=draw(st.integers(0, min(m1, m2) - 1)),
      lead=draw(st.sampled_from([None, 2, 3])),
      block_rows=draw(st.sampled_from([2, 8, 16])),
      log_scale=draw(st.integers(-3, 3)), seed=draw(st.integers(0, 2**16)))


@functools.lru_cache(maxsize=None)
def _row_fn(numerics, op):
  if op in ("kn", "nk"):
    return jax.jit(lambda x, w: _consumer(bi.matmul(x, w, numerics, op)))
  if op == "rms_norm":
    return jax.jit(lambda x, w: _consumer(bi.rms_norm(x, w, 1e-6, numerics)))
  fn = bi.softmax if op == "softmax" else bi.log_softmax
  return jax.jit(lambda x, w: _consumer(fn(x, numerics)))


def _row_property(c):
  rng = np.random.default_rng(c["seed"])
  num = _num(c["impl"], block_rows=c["block_rows"])
  k, n, r = c["k"], c["n"], c["row"]
  w = {"kn": (k, n), "nk": (n, k)}.get(c["op"], (k,))
  w = jnp.asarray(rng.standard_normal(w).astype(np.float32) + (
      1.0 if c["op"] == "rms_norm" else 0.0))
  target = (10.0 ** c["log_scale"]) * rng.standard_normal(k).astype(np.float32)

  def rows(m):
    # m rows of fresh companions with the target at row r; optionally with
    # a leading dim (the model's [B, S, d] activations).
    x = (10.0 ** c["log_scale"]) * rng.standard_normal((m, k)).astype(np.float32)
    x[r] = target
    if c["lead"] and m % c["lead"] == 0:
      x = x.reshape(c["lead"], m // c["lead"], k)
    out = np.asarray(_row_fn(num, c["op"])(jnp.asarray(x), w))
    return out.reshape(m, -1)[r]

  want = rows(c["m1"])
  np.testing.assert_array_equal(rows(c["m2"]), want, err_msg="m2 rows != m1 rows")
  alone = np.asarray(_row_fn(num, c["op"])(jnp.asarray(target[None]), w))[0]
  np.testing.assert_array_equal(alone, want, err_msg="alone != in a batch")


def test_row_bits_property(capsys):
  check_property(capsys, "matmul / rms_norm / softmax rows (xla, xla_blocked)",
                 row_cases(("xla", "xla_blocked")), _row_property,
                 max_examples=30)


def test_row_bits_property_on_pallas_interpret(capsys):
  check_property(capsys, "matmul / rms_norm / softmax rows (pallas interpret)",
                 row_cases(("pallas",)), _row_property, max_examples=5)
