"""Batch-invariant matmul, RMSNorm, softmax and log-softmax.

A row's result does not depend on how many other rows are computed with it,
on each `numerics.impl` ('xla', 'xla_blocked', 'pallas'); the 'xla' matmul is
one dot padded to `min_dot_rows`. Each op has a `*_reference` (plain jnp, f32).
Why it is bit-exact on CPU: see pallas_kernels/README.md.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.numerics import Numerics, check_pallas_backend

# Weight layouts of `matmul`: 'kn' is w [K, N] (x @ w); 'nk' is w [N, K]
# (x @ w.T, PyTorch's Linear layout).
W_LAYOUTS = ("kn", "nk")


def min_dot_rows(w_layout: str) -> int:
  """Rows a dot of this weight layout must be zero-padded to (see module docstring).

  'nk': YNNPACK always packs transposed weights; 2 keeps one-row calls off
  XLA's matrix-vector kernel. 'kn': above YNNPACK's threshold for packing
  (about 10 row tiles of its unpacked kernel), measured at 64 on AVX-512 and
  not enough on AVX2 for narrow weights, so `matmul`'s 'xla' path never runs
  a 'kn' dot: it dots a [K, N] weight as a materialised 'nk' copy.
  """
  return 2 if w_layout == "nk" else 64

# Output-column tile of the Pallas matmul. The tile only splits independent
# output columns, never the contraction, so it does not affect the bits.
_PALLAS_BLOCK_N = 128
# Contraction tile of the Pallas matmul: a program walks K in tiles of this
# size, in order, into one f32 accumulator (no split-K: one program owns an
# output tile). On an H200 this keeps a [block_rows, 64] x [64, 128] bf16 step
# (24 KiB at block_rows 64) in shared memory, which Triton pipelines over K;
# the whole K at once (tml_small: K = 4096) would need 1.5 MiB. A K that is
# not a multiple of the tile is taken whole. The tile is part of the bits.
_PALLAS_BLOCK_K = 64


def _pow2_at_least(n: int, floor: int = 16) -> int:
  """The smallest power of two >= max(n, floor) (Triton's block rule)."""
  return max(floor, 1 << (int(n) - 1).bit_length())


def pallas_block_k(k: int) -> int:
  """Contraction tile of the Pallas matmul for a contraction of k."""
  return _PALLAS_BLOCK_K if k > _PALLAS_BLOCK_K and k % _PALLAS_BLOCK_K == 0 else k


# ---------------------------------------------------------------------------
# References (plain jnp, f32 math).
# ---------------------------------------------------------------------------
def matmul_reference(x, w, w_layout="kn"):
  """x [..., K] @ w (w [K, N], or [N, K] for 'nk') in f32 at highest precision."""
  wf = w.astype(jnp.float32)
  out = jnp.dot(x.astype(jnp.float32), wf.T if w_layout == "nk" else wf,
                precision=jax.lax.Precision.HIGHEST)
  return out.astype(x.dtype)


def rms_norm_reference(x, scale, eps):
  xf = x.astype(jnp.float32)
  var = jnp.mean(xf * xf, axis=-1, keepdims=True)
  return (xf * jax.lax.rsqrt(var + eps) * scale.astype(jnp.float32)).astype(x.dtype)


def softmax_reference(x):
  return jax.nn.softmax(x.astype(jnp.float32), axis=-1).astype(x.dtype)


def log_softmax_reference(x):
  return jax.nn.log_softmax(x.astype(jnp.float32), axis=-1).astype(x.dtype)


# ---------------------------------------------------------------------------
# Per-block math shared by the XLA and Pallas paths (fixed [rows, d] shapes).
# ---------------------------------------------------------------------------
def _matmul_block(xb, w, w_layout="kn"):
  """[..., K] x w -> [..., N] in one dot, f32 accumulation; never splits K."""
  dims = (((xb.ndim - 1,), (0 if w_layout == "kn" else 1,)), ((), ()))
  return jax.lax.dot_general(xb, w, dims, preferred_element_type=jnp.float32
                             ).astype(xb.dtype)


def _rms_norm_block(xb, scale, eps):
  xf = xb.astype(jnp.float32)
  var = jnp.sum(xf * xf, axis=-1, keepdims=True) / xf.shape[-1]
  return (xf * jax.lax.rsqrt(var + eps) * scale.astype(jnp.float32)).astype(xb.dtype)


def _softmax_block(xb):
  xf = xb.astype(jnp.float32)
  e = jnp.exp(xf - jnp.max(xf, axis=-1, keepdims=True))
  return (e / jnp.sum(e, axis=-1, keepdims=True)).astype(xb.dtype)


def _log_softmax_block(xb):
  xf = xb.astype(jnp.float32)
  shifted = xf - jnp.max(xf, axis=-1, keepdims=True)
  lse = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
  return (shifted - lse).astype(xb.dtype)


# ---------------------------------------------------------------------------
# Row blocking.
# ---------------------------------------------------------------------------
def _to_row_blocks(x, block_rows):
  """[..., d] -> ([nblocks, block_rows, d], rows); rows zero-padded."""
  d = x.shape[-1]
  rows = math.prod(x.shape[:-1])
  nblocks = -(-rows // block_rows)
  x2 = x.reshape(rows, d)
  x2 = jnp.pad(x2, ((0, nblocks * block_rows - rows), (0, 0)))
  return x2.reshape(nblocks, block_rows, d), rows


def _from_row_blocks(y, rows, lead_shape):
  return y.reshape(-1, y.shape[-1])[:rows].reshape(*lead_shape, y.shape[-1])


def _map_row_blocks(block_fn, x, block_rows):
  """Applies block_fn to fixed [block_rows, d] blocks of x, one at a time."""
  blocks, rows = _to_row_blocks(x, block_rows)
  # Barriers on both sides, as in _matmul_padded. With one block XLA removes
  # the loop and fused the block's last ops with the caller's (a norm's
  # `* scale` and a following add became one FMA); with two or more it cannot.
  # So a row's bits changed at block_rows + 1 rows (issue 12: the hMLP stem's
  # last norm + patch_pos, a frame alone vs 12 frames).
  barrier = jax.lax.optimization_barrier
  out = barrier(jax.lax.map(block_fn, barrier(blocks)))
  return _from_row_blocks(out, rows, x.shape[:-1])


def _pallas_row_op(kernel, x, params, block_rows, interpret, name=None):
  """Pallas grid over row blocks; params are [1, d]-shaped and broadcast.

  `name` names the kernel (its Triton function on GPU)."""
  blocks, rows = _to_row_blocks(x, block_rows)
  nblocks, _, d = blocks.shape
  flat = blocks.reshape(nblocks * block_rows, d)
  out = pl.pallas_call(
      kernel,
      grid=(nblocks,),
      in_specs=[pl.BlockSpec((block_rows, d), lambda i: (i, 0))]
      + [pl.BlockSpec(p.shape, lambda i: (0, 0)) for p in params],
      out_specs=pl.BlockSpec((block_rows, d), lambda i: (i, 0)),
      out_shape=jax.ShapeDtypeStruct(flat.shape, x.dtype),
      interpret=interpret,
      name=name,
  )(flat, *params)
  return _from_row_blocks(out, rows, x.shape[:-1])


def _check_rows(name, x):
  if x.ndim < 1:
    raise ValueError(f"{name}: x must have at least one dim, got shape {x.shape}")


# ---------------------------------------------------------------------------
# Matmul.
# ---------------------------------------------------------------------------
def _n_of(w, w_layout):
  return w.shape[1] if w_layout == "kn" else w.shape[0]


def _matmul_blocked(x, w, block_rows, w_layout="kn"):
  return _map_row_blocks(lambda xb: _matmul_block(xb, w, w_layout), x,
                         block_rows)


def _matmul_padded(x, w, w_layout="kn", min_rows=None):
  """One dot over the rows of x, zero-padded to at least `min_rows` rows."""
  min_rows = min_dot_rows(w_layout) if min_rows is None else min_rows
  rows = math.prod(x.shape[:-1])
  x2 = x.reshape(rows, x.shape[-1])
  if rows < min_rows:
    x2 = jnp.pad(x2, ((0, min_rows - rows), (0, 0)))
  # Barriers on both sides: keep the simplifier from slicing the padding back
  # off, and keep XLA from fusing producers (x * x, a norm's rsqrt) or
  # consumers (a bias add, which YNNPACK would take as the accumulator's
  # start) into the YNNPACK dot only in some graphs: that would change the
  # arithmetic with the surrounding code (it did, for RMSNorm's x * x).
  x2 = jax.lax.optimization_barrier(x2)
  y = jax.lax.optimization_barrier(_matmul_block(x2, w, w_layout))[:rows]
  return y.reshape(*x.shape[:-1], _n_of(w, w_layout))


def _matmul_kernel(x_ref, w_ref, o_ref, *, w_layout, block_k):
  k = x_ref.shape[1]
  if block_k >= k:
    o_ref[...] = _matmul_block(x_ref[...], w_ref[...], w_layout).astype(o_ref.dtype)
    return

  def step(i, acc):
    ks = pl.ds(pl.multiple_of(i * block_k, block_k), block_k)
    wt = w_ref[ks, :] if w_layout == "kn" else w_ref[:, ks]
    dims = (((1,), (0 if w_layout == "kn" else 1,)), ((), ()))
    return acc + jax.lax.dot_general(x_ref[:, ks], wt, dims,
                                     preferred_element_type=jnp.float32)

  acc = jnp.zeros(o_ref.shape, jnp.float32)
  o_ref[...] = jax.lax.fori_loop(0, k // block_k, step, acc).astype(o_ref.dtype)


def _matmul_pallas_fwd_only(x, w, block_rows, interpret, w_layout):
  blocks, rows = _to_row_blocks(x, block_rows)
  nblocks, _, k0 = blocks.shape
  n = _n_of(w, w_layout)
  block_n = _pow2_at_least(n) if n <= _PALLAS_BLOCK_N else _PALLAS_BLOCK_N
  n_pad = -(-n // block_n) * block_n
  # Triton takes only power-of-two blocks, and a dot needs K >= 16: a K such
  # as the hMLP stem's 48 is zero-padded (to 64; above the K tile, to a
  # multiple of it). Zero products add exactly nothing, so this only fixes
  # the shape; the padding is part of this path's bits on every backend.
  k = (_pow2_at_least(k0) if k0 <= _PALLAS_BLOCK_K
       else -(-k0 // _PALLAS_BLOCK_K) * _PALLAS_BLOCK_K)
  blocks = jnp.pad(blocks, ((0, 0), (0, 0), (0, k - k0)))
  if w_layout == "kn":
    wp = jnp.pad(w, ((0, k - k0), (0, n_pad - n)))
    w_spec = pl.BlockSpec((k, block_n), lambda i, j: (0, j))
  else:
    wp = jnp.pad(w, ((0, n_pad - n), (0, k - k0)))
    w_spec = pl.BlockSpec((block_n, k), lambda i, j: (j, 0))
  out = pl.pallas_call(
      functools.partial(_matmul_kernel, w_layout=w_layout,
                        block_k=pallas_block_k(k)),
      grid=(nblocks, n_pad // block_n),
      in_specs=[pl.BlockSpec((block_rows, k), lambda i, j: (i, 0)), w_spec],
      out_specs=pl.BlockSpec((block_rows, block_n), lambda i, j: (i, j)),
      out_shape=jax.ShapeDtypeStruct((nblocks * block_rows, n_pad), x.dtype),
      interpret=interpret,
  )(blocks.reshape(nblocks * block_rows, k), wp)
  return _from_row_blocks(out[:, :n], rows, x.shape[:-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _matmul_pallas(x, w, block_rows, interpret, w_layout):
  return _matmul_pallas_fwd_only(x, w, block_rows, interpret, w_layout)


def _matmul_pallas_fwd(x, w, block_rows, interpret, w_layout):
  return _matmul_pallas_fwd_only(x, w, block_rows, interpret, w_layout), (x, w)


def _matmul_pallas_bwd(block_rows, interpret, w_layout, res, g):
  del interpret
  _, vjp = jax.vjp(lambda x, w: _matmul_blocked(x, w, block_rows, w_layout),
                   *res)
  return vjp(g)


_matmul_pallas.defvjp(_matmul_pallas_fwd, _matmul_pallas_bwd)


def check_matmul_args(x, w, w_layout):
  if w_layout not in W_LAYOUTS:
    raise ValueError(f"matmul: w_layout {w_layout!r} is not one of {W_LAYOUTS}")
  if x.ndim < 1:
    raise ValueError(f"matmul: x must have at least one dim, got shape {x.shape}")
  if w.ndim != 2:
    raise ValueError(f"matmul: w must be [K, N] ('kn') or [N, K] ('nk'), got "
                     f"shape {w.shape}")
  k = w.shape[0] if w_layout == "kn" else w.shape[1]
  if x.shape[-1] != k:
    raise ValueError(f"matmul: x has K={x.shape[-1]} but w ({w_layout!r}, shape "
                     f"{w.shape}) has K={k}")


def matmul(x, w, numerics: Numerics, w_layout: str = "kn"):
  """Batch-invariant x [..., K] @ w, f32 accumulation, x.dtype out.

  w is [K, N] for w_layout='kn' and [N, K] (x @ w.T) for 'nk'. On the 'xla'
  path, pass weights that are stored in the layout you name: a 'kn' weight
  costs a transposed copy per call, and a transposed view passed as 'nk' is
  folded back by XLA into a 'kn' dot.
  """
  check_matmul_args(x, w, w_layout)
  w = w.astype(x.dtype)
  if numerics.impl == "pallas":
    check_pallas_backend(numerics.interpret, "matmul (impl 'pallas')")
    return _matmul_pallas(x, w, numerics.block_rows, numerics.interpret,
                          w_layout)
  if numerics.impl == "xla_blocked":
    return _matmul_blocked(x, w, numerics.block_rows, w_layout)
  if w_layout == "kn":
    # A [K, N] weight is dotted as a materialised [N, K] copy (the barrier
    # keeps XLA from folding the transpose back into a 'kn' dot). YNNPACK
    # always packs a weight contracted on its last dim, so one kernel family
    # serves every row count from 2 rows up, on every x86 ISA measured. The
    # 'kn' dot's own switch depends on the CPU: padded to 64 rows it held on
    # AVX-512, but on AVX2 a narrow one (the MoE router's [32, 8]) changed its
    # bits between 64 and 100 rows (pallas_kernels/README.md).
    w = jax.lax.optimization_barrier(w.T)
    w_layout = "nk"
  return _matmul_padded(x, w, w_layout)


# ---------------------------------------------------------------------------
# Row-wise ops: RMSNorm, softmax, log-softmax.
# ---------------------------------------------------------------------------
def _row_op(block_fn, x, params, numerics):
  """Runs block_fn(x_block, *params) on the XLA or Pallas path."""
  if numerics.impl != "pallas":
    return _map_row_blocks(lambda xb: block_fn(xb, *params), x,
                           numerics.block_rows)
  check_pallas_backend(numerics.interpret, "the row-wise ops (impl 'pallas')")
  return _row_op_pallas(block_fn, numerics.block_rows, numerics.interpret,
                        x, *params)


# Elements a Pallas row-op program holds at once: a block of block_rows rows
# is walked `pallas_row_step` rows at a time so that [step, d] in f32 stays
# within 64 registers per thread at 4 warps on a GPU (a [64, 1024] softmax
# block at once spilled 19 KiB per thread, sm_90 ptxas). Each row's math is
# its own, so the step only fixes the shape of the work, like the block does.
_PALLAS_ROW_ELEMS = 8192


def pallas_row_step(rows: int, d: int) -> int:
  """Rows per step of a Pallas row-op program over [rows, d] (divides rows)."""
  step = rows
  while step % 2 == 0 and step * d > _PALLAS_ROW_ELEMS:
    step //= 2
  return step


def _fn_name(fn):
  return getattr(getattr(fn, "func", fn), "__name__", "")


# Kernel names of the Pallas row ops (what a GPU profile and the lowering
# tests see; pallas_kernels/gpu_lowering.py).
_ROW_KERNEL_NAMES = {"_rms_norm_eps_block": "rms_norm", "_softmax_block": "softmax",
                     "_log_softmax_block": "log_softmax"}


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _row_op_pallas(block_fn, block_rows, interpret, x, *params):
  def kernel(x_ref, *refs):
    *param_refs, o_ref = refs
    rows, d = x_ref.shape
    step = pallas_row_step(rows, d)
    if step == rows:
      o_ref[...] = block_fn(x_ref[...], *(r[...] for r in param_refs))
      return

    def one_step(i, carry):
      sl = pl.ds(pl.multiple_of(i * step, step), step)
      o_ref[sl, :] = block_fn(x_ref[sl, :], *(r[...] for r in param_refs))
      return carry

    jax.lax.fori_loop(0, rows // step, one_step, 0)
  params2d = [p.reshape(1, -1) for p in params]
  return _pallas_row_op(kernel, x, params2d, block_rows, interpret,
                        name=_ROW_KERNEL_NAMES.get(_fn_name(block_fn)))


def _row_op_pallas_fwd(block_fn, block_rows, interpret, x, *params):
  return _row_op_pallas(block_fn, block_rows, interpret, x, *params), (x, params)


def _row_op_pallas_bwd(block_fn, block_rows, interpret, res, g):
  del interpret
  x, params = res
  def xla(x, *params):
    return _map_row_blocks(lambda xb: block_fn(xb, *params), x, block_rows)
  _, vjp = jax.vjp(xla, x, *params)
  return vjp(g)


_row_op_pallas.defvjp(_row_op_pallas_fwd, _row_op_pallas_bwd)


def rms_norm(x, scale, eps, numerics: Numerics):
  """Batch-invariant RMSNorm over the last axis; scale [d]."""
  _check_rows("rms_norm", x)
  if scale.shape != (x.shape[-1],):
    raise ValueError(f"rms_norm: scale must have shape ({x.shape[-1]},), got "
                     f"{scale.shape}")
  block_fn = functools.partial(_rms_norm_eps_block, eps=float(eps))
  return _row_op(block_fn, x, (scale,), numerics)


def _rms_norm_eps_block(xb, scale, *, eps):
  # pallas passes scale as [1, d]; broadcasting over rows is the same math.
  return _rms_norm_block(xb, scale, eps)


def softmax(x, numerics: Numerics):
  """Batch-invariant softmax over the last axis (f32 math, x.dtype out)."""
  _check_rows("softmax", x)
  return _row_op(_softmax_block, x, (), numerics)


def log_softmax(x, numerics: Numerics):
  """Batch-invariant log-softmax over the last axis (f32 math, x.dtype out)."""
  _check_rows("log_softmax", x)
  return _row_op(_log_softmax_block, x, (), numerics)
