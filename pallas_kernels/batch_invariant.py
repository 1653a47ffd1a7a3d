"""Batch-invariant matmul, RMSNorm, softmax and log-softmax.

A row's result must not depend on how many other rows are computed with it.
Plain XLA ops break that on CPU: the dot and reduction kernels change with the
row count (matrix-vector vs matrix-matrix, different blocking), and so does
their summation order (../shared/notes/cpu_measurements.md). Both paths here
therefore fix the shape of every inner computation: the rows (all leading
dims flattened) are padded to a multiple of `numerics.block_rows` and each
[block_rows, d] block is computed on its own, by the same code, in sequence.
The matmul never splits the contraction (no split-K), so each output element
is one full-length dot whose order depends only on K.

- XLA path: `lax.map` over the row blocks (what runs on CPU).
- Pallas path: a grid over row blocks (and output-column tiles for the
  matmul); `interpret=True` off GPU. Gradients come from the XLA path's
  autodiff through a custom_vjp, since pallas_call has no transpose rule.

Each op has a `*_reference` (plain jnp, f32) for tolerance tests.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.numerics import Numerics

# Output-column tile of the Pallas matmul. The tile only splits independent
# output columns, never the contraction, so it does not affect the bits.
_PALLAS_BLOCK_N = 128


# ---------------------------------------------------------------------------
# References (plain jnp, f32 math).
# ---------------------------------------------------------------------------
def matmul_reference(x, w):
  """x [..., K] @ w [K, N] in f32 at highest precision, result in x.dtype."""
  out = jnp.dot(x.astype(jnp.float32), w.astype(jnp.float32),
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
def _matmul_block(xb, w):
  return jnp.dot(xb, w, preferred_element_type=jnp.float32).astype(xb.dtype)


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
  return _from_row_blocks(jax.lax.map(block_fn, blocks), rows, x.shape[:-1])


def _pallas_row_op(kernel, x, params, block_rows, interpret):
  """Pallas grid over row blocks; params are [1, d]-shaped and broadcast."""
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
  )(flat, *params)
  return _from_row_blocks(out, rows, x.shape[:-1])


def _check_rows(name, x):
  if x.ndim < 1:
    raise ValueError(f"{name}: x must have at least one dim, got shape {x.shape}")


# ---------------------------------------------------------------------------
# Matmul.
# ---------------------------------------------------------------------------
def _matmul_xla(x, w, block_rows):
  return _map_row_blocks(lambda xb: _matmul_block(xb, w), x, block_rows)


def _matmul_kernel(x_ref, w_ref, o_ref):
  o_ref[...] = _matmul_block(x_ref[...], w_ref[...]).astype(o_ref.dtype)


def _matmul_pallas_fwd_only(x, w, block_rows, interpret):
  blocks, rows = _to_row_blocks(x, block_rows)
  nblocks, _, k = blocks.shape
  n = w.shape[1]
  block_n = n if n <= _PALLAS_BLOCK_N else _PALLAS_BLOCK_N
  n_pad = -(-n // block_n) * block_n
  wp = jnp.pad(w, ((0, 0), (0, n_pad - n)))
  out = pl.pallas_call(
      _matmul_kernel,
      grid=(nblocks, n_pad // block_n),
      in_specs=[pl.BlockSpec((block_rows, k), lambda i, j: (i, 0)),
                pl.BlockSpec((k, block_n), lambda i, j: (0, j))],
      out_specs=pl.BlockSpec((block_rows, block_n), lambda i, j: (i, j)),
      out_shape=jax.ShapeDtypeStruct((nblocks * block_rows, n_pad), x.dtype),
      interpret=interpret,
  )(blocks.reshape(nblocks * block_rows, k), wp)
  return _from_row_blocks(out[:, :n], rows, x.shape[:-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _matmul_pallas(x, w, block_rows, interpret):
  return _matmul_pallas_fwd_only(x, w, block_rows, interpret)


def _matmul_pallas_fwd(x, w, block_rows, interpret):
  return _matmul_pallas_fwd_only(x, w, block_rows, interpret), (x, w)


def _matmul_pallas_bwd(block_rows, interpret, res, g):
  del interpret
  _, vjp = jax.vjp(lambda x, w: _matmul_xla(x, w, block_rows), *res)
  return vjp(g)


_matmul_pallas.defvjp(_matmul_pallas_fwd, _matmul_pallas_bwd)


def matmul(x, w, numerics: Numerics):
  """Batch-invariant x [..., K] @ w [K, N], f32 accumulation, x.dtype out."""
  _check_rows("matmul", x)
  if w.ndim != 2:
    raise ValueError(f"matmul: w must be [K, N], got shape {w.shape}")
  if x.shape[-1] != w.shape[0]:
    raise ValueError(f"matmul: x has K={x.shape[-1]} but w has K={w.shape[0]}")
  w = w.astype(x.dtype)
  if numerics.impl == "pallas":
    return _matmul_pallas(x, w, numerics.block_rows, numerics.use_interpret)
  return _matmul_xla(x, w, numerics.block_rows)


# ---------------------------------------------------------------------------
# Row-wise ops: RMSNorm, softmax, log-softmax.
# ---------------------------------------------------------------------------
def _row_op(block_fn, x, params, numerics):
  """Runs block_fn(x_block, *params) on the XLA or Pallas path."""
  if numerics.impl != "pallas":
    return _map_row_blocks(lambda xb: block_fn(xb, *params), x,
                           numerics.block_rows)
  return _row_op_pallas(block_fn, numerics.block_rows, numerics.use_interpret,
                        x, *params)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _row_op_pallas(block_fn, block_rows, interpret, x, *params):
  def kernel(x_ref, *refs):
    *param_refs, o_ref = refs
    o_ref[...] = block_fn(x_ref[...], *(r[...] for r in param_refs))
  params2d = [p.reshape(1, -1) for p in params]
  return _pallas_row_op(kernel, x, params2d, block_rows, interpret)


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
