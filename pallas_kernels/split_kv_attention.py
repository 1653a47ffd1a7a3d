"""Split-KV attention whose bits do not depend on chunking, batch or capacity.

One code path serves the training forward, the prefill of an appended chunk
against the cache and single-token decode (the cache convention is in
`pallas_kernels.numerics`). Its structure fixes every reduction order:

- Queries are padded to a multiple of `block_q`; each (batch row, query
  block) is computed on its own with fixed shapes. The rows of a block are
  (query, group) pairs of one KV head, so GQA heads share one K/V read.
- The KV cache is cut into fixed-size, left-aligned splits of `split_size`
  slots (a size, never a count). Each split yields f32 partials (m, l, o)
  that are folded left to right into an f32 accumulator. A split that no row
  of the block can see is skipped; folding it would be an exact no-op
  (its weight is exp(-inf) = 0 and the accumulator's is exp(0) = 1), which is
  why the result does not depend on the cache's capacity either.

Paths:
- `impl='xla'`: `lax.map` over (batch row, query block), a `fori_loop` over
  the visible splits. This is what runs on CPU.
- `impl='pallas'`: a partials kernel on the grid (batch, kv head, query
  block, split), each split walked in fixed KV tiles with an online softmax,
  then a combine kernel folding the splits in order. On a GPU the split axis
  is what spreads one decode query over the SMs. Interpret mode only when
  `numerics.interpret` asks for it (the CPU tests do).

Training goes through a custom_vjp: the forward bits are the kernel's, the
backward is dense jnp attention math from the saved log-sum-exp (memory
O(Sq * Skv) per head, fine at the sequence lengths we train on).

`attention_reference` is plain softmax attention for tolerance tests.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.batch_invariant import min_dot_rows
from pallas_kernels.numerics import Numerics, check_pallas_backend

_NEG_INF = float("-inf")

# A whole sequence on the 'xla' path is padded to a multiple of this many keys
# (not of the split): a short last split of this alignment gives the same
# bits as a full masked one. Measured: 64 does; 1, 8, 16 and 32 did not (the
# value dot's arithmetic changed with the key count; YNNPACK aligns its K
# work to 64, ynnpack/subgraph/dot.cc choose_split_factors).
RAGGED_ALIGN = 64


class _Config(NamedTuple):
  impl: str
  split_size: int
  block_q: int
  interpret: bool


# Bytes of one K (or V) tile of the Pallas kernel at most. On an H200 Triton
# keeps num_stages (3) K and V tiles in shared memory to pipeline the KV loop:
# tml_small's 128-slot x 128-dim bf16 tiles needed 240 KiB, over the 227 KiB a
# block may have (sm_90 compile of the kernel); 64-slot tiles need 112 KiB.
KV_TILE_BYTES = 16 * 1024


def kv_tile(split_size: int, row_bytes: int = 0) -> int:
  """KV tile of the Pallas kernel: the largest of 128..8 dividing the split
  whose K tile (tile x row_bytes, row_bytes = head_dim x itemsize) fits in
  KV_TILE_BYTES (8 at least)."""
  for tile in (128, 64, 32, 16, 8):
    if split_size % tile == 0 and (tile * row_bytes <= KV_TILE_BYTES or tile == 8):
      return tile
  raise ValueError(f"split_size: {split_size} is not a multiple of the KV block "
                   "size 8")


# ---------------------------------------------------------------------------
# Reference.
# ---------------------------------------------------------------------------
def last_visible(q_offset, kv_len, sq):
  """[B, sq] int32: index of the last key each query may see (-1: none)."""
  pos = q_offset[:, None] + jnp.arange(sq, dtype=jnp.int32)[None, :]
  return jnp.minimum(pos, kv_len[:, None] - 1)


def attention_reference(q, k, v, *, q_offset, kv_len):
  """Plain softmax attention in f32 (cache convention of numerics.py)."""
  b, sq, hq, d = q.shape
  skv, hkv = k.shape[1], k.shape[2]
  q_offset, kv_len = _as_batch_vector(q_offset, b), _as_batch_vector(kv_len, b)
  qf = q.astype(jnp.float32).reshape(b, sq, hkv, hq // hkv, d)
  s = jnp.einsum("bqhgd,bkhd->bhgqk", qf, k.astype(jnp.float32),
                 precision=jax.lax.Precision.HIGHEST) / jnp.sqrt(jnp.float32(d))
  vis = (jnp.arange(skv)[None, None, :]
         <= last_visible(q_offset, kv_len, sq)[:, :, None])[:, None, None]
  s = jnp.where(vis, s, _NEG_INF)
  m = jnp.max(s, axis=-1, keepdims=True)
  p = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0))
  l = jnp.sum(p, axis=-1, keepdims=True)
  o = jnp.einsum("bhgqk,bkhd->bqhgd", p / jnp.where(l == 0, 1.0, l),
                 v.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
  return o.reshape(b, sq, hq, d).astype(q.dtype)


# ---------------------------------------------------------------------------
# Partials and their fixed-order combine (shared by both paths).
# ---------------------------------------------------------------------------
def _empty_partials(shape_rows, d):
  return (jnp.full(shape_rows, _NEG_INF, jnp.float32),
          jnp.zeros(shape_rows, jnp.float32),
          jnp.zeros(shape_rows + (d,), jnp.float32))


def _combine(acc, part):
  """Folds partial (m, l, o) `part` into `acc`; exact no-op if part is empty."""
  m_a, l_a, o_a = acc
  m_b, l_b, o_b = part
  m = jnp.maximum(m_a, m_b)
  m_safe = jnp.where(m == _NEG_INF, 0.0, m)
  wa = jnp.exp(m_a - m_safe)
  wb = jnp.exp(m_b - m_safe)
  return m, l_a * wa + l_b * wb, o_a * wa[..., None] + o_b * wb[..., None]


def _partials_from_scores(s, visible, v):
  """s [..., R, T] f32 scores, visible [R, T], v [..., T, d] -> (m, l, o)."""
  s = jnp.where(visible, s, _NEG_INF)
  m = jnp.max(s, axis=-1)
  p = jnp.exp(s - jnp.where(m == _NEG_INF, 0.0, m)[..., None])
  l = jnp.sum(p, axis=-1)
  o = jnp.matmul(p, v.astype(jnp.float32), preferred_element_type=jnp.float32)
  return m, l, o


def _finish(m, l, o, dtype):
  out = (o / jnp.where(l == 0, 1.0, l)[..., None]).astype(dtype)
  lse = jnp.where(l > 0, m + jnp.log(jnp.where(l > 0, l, 1.0)), jnp.inf)
  return out, lse


def _num_visible(last, start, size, count):
  """How many consecutive blocks of `size` from `start` the rows can see."""
  return jnp.clip((jnp.max(last) - start) // size + 1, 0, count)


# ---------------------------------------------------------------------------
# Layout: query blocks with (query, group) rows per KV head.
# ---------------------------------------------------------------------------
def _query_blocks(q, hkv, block_q):
  """[B, Sq, Hq, d] -> [B, nqb, Hkv, block_q * g, d] (rows query-major)."""
  b, sq, hq, d = q.shape
  g = hq // hkv
  nqb = -(-sq // block_q)
  qp = jnp.pad(q, ((0, 0), (0, nqb * block_q - sq), (0, 0), (0, 0)))
  qp = qp.reshape(b, nqb, block_q, hkv, g, d).transpose(0, 1, 3, 2, 4, 5)
  return qp.reshape(b, nqb, hkv, block_q * g, d)


def _row_limits(q_offset, kv_len, nqb, block_q, g):
  """[B, nqb, block_q * g] last visible key of each block row."""
  last = last_visible(q_offset, kv_len, nqb * block_q)
  return jnp.repeat(last.reshape(-1, nqb, block_q), g, axis=-1)


def _unblock(x, b, sq, hq, block_q):
  """[B, nqb, Hkv, block_q * g, ...] -> [B, Sq, Hq, ...]."""
  nqb, hkv = x.shape[1], x.shape[2]
  g = hq // hkv
  tail = x.shape[4:]
  x = x.reshape(b, nqb, hkv, block_q, g, *tail)
  x = jnp.moveaxis(x, 3, 2).reshape(b, nqb * block_q, hq, *tail)
  return x[:, :sq]


# ---------------------------------------------------------------------------
# XLA paths.
# ---------------------------------------------------------------------------
def _map_query_blocks(one_block, q_shape, hkv, nqb, rows, bq):
  """Runs one_block(i) -> (out [Hkv, R, d], lse [Hkv, R]) for every (batch
  row, query block) in sequence; returns out [B, Sq, Hq, d], lse [B, Sq, Hq]."""
  b, sq, hq, d = q_shape
  # The barrier keeps the caller's ops out of the blocks': with one block XLA
  # removes the loop and fuses its last ops with what follows (a caller's
  # `+ c` changed the bits of a one-block call, issue 12); with two or more
  # it cannot. batch_invariant._map_row_blocks does the same.
  out, lse = jax.lax.optimization_barrier(
      jax.lax.map(one_block, jnp.arange(b * nqb)))
  out = out.reshape(b, nqb, hkv, rows, d)
  lse = lse.reshape(b, nqb, hkv, rows)
  return _unblock(out, b, sq, hq, bq), _unblock(lse, b, sq, hq, bq)


def _forward_xla(q, k, v, q_offset, kv_len, cfg: _Config):
  """Wide blocks: one batch row and up to `split_size` queries per step.

  Same split and combine structure as the blocked path, but a row's bits
  rest on a measured property of XLA:CPU rather than on fixed shapes: both
  dots contract the last dim of their K/V operand ([Hkv, split, d] keys for
  the scores, [Hkv, d, split] values for the output), which YNNPACK always
  packs, so each score and output element has one summation order whatever
  the number of rows (pallas_kernels/batch_invariant.py). The max is exact.
  The softmax denominator is NOT a `jnp.sum`: XLA:CPU's row reduction changed
  its order below 64 rows, so l comes out of the same dot as the output, as
  the product with an extra all-ones row of values. The tests of this module
  check prefill == chunks == decode and batch/capacity invariance on it.
  (Batching the rows of a step across the batch did break batch invariance.)
  """
  b, sq, hq, d = q.shape
  skv, hkv = k.shape[1], k.shape[2]
  split = cfg.split_size
  nsplit = skv // split
  tail = skv - nsplit * split    # > 0 only for a whole sequence (ragged_tail)
  # A block's rows are (query, group) pairs: with one query head per KV head
  # a one-query call would make one-row dots, which XLA:CPU runs on its
  # matrix-vector kernel with another summation order (issue 12: decode !=
  # prefill at GQA ratio 1). So a block holds at least enough (padded)
  # queries for the dots' row minimum, at every GQA ratio.
  g = hq // hkv
  bq = max(min(split, sq), -(-min_dot_rows("nk") // g))
  scale = 1.0 / float(d) ** 0.5
  qb = _query_blocks(q, hkv, bq)            # [B, nqb, Hkv, R, d]
  nqb, rows = qb.shape[1], qb.shape[3]
  limits = _row_limits(q_offset, kv_len, nqb, bq, hq // hkv)   # [B, nqb, R]
  barrier = jax.lax.optimization_barrier
  kt = jnp.swapaxes(k, 1, 2)                       # [B, Hkv, Skv, d]
  vt = jnp.transpose(v, (0, 2, 3, 1)).astype(jnp.float32)
  vt = jnp.concatenate([vt, jnp.ones_like(vt[:, :, :1])], axis=2)  # [.., d+1, Skv]

  def one_block(i):
    bi, qi = i // nqb, i % nqb
    qblk = qb[bi, qi]                       # [Hkv, R, d]
    last = limits[bi, qi]                   # [R]

    def fold(start, size, acc):
      ks = jax.lax.dynamic_slice(kt, (bi, 0, start, 0), (1, hkv, size, d))[0]
      vs = jax.lax.dynamic_slice(vt, (bi, 0, 0, start),
                                 (1, hkv, d + 1, size))[0]
      # Barriers keep the exp and the masking out of the YNNPACK dots, as in
      # batch_invariant._matmul_padded.
      s = barrier(jnp.einsum("hrd,hkd->hrk", qblk, ks,
                             preferred_element_type=jnp.float32)) * scale
      visible = (start + jnp.arange(size))[None, :] <= last[:, None]
      s = jnp.where(visible, s, _NEG_INF)
      m = jnp.max(s, axis=-1)
      p = barrier(jnp.exp(s - jnp.where(m == _NEG_INF, 0.0, m)[..., None]))
      ol = barrier(jnp.einsum("hrk,hdk->hrd", p, vs,
                              preferred_element_type=jnp.float32))
      return _combine(acc, (m, ol[..., d], ol[..., :d]))

    acc = _empty_partials((hkv, rows), d)
    if nsplit:
      acc = jax.lax.fori_loop(0, _num_visible(last, 0, split, nsplit),
                              lambda j, acc: fold(j * split, split, acc), acc)
    if tail:
      # The short last split of a whole sequence (a multiple of RAGGED_ALIGN
      # keys). Its keys are the first `tail` of a full split whose other keys
      # would be masked: those add exact zeros after the same terms, so the
      # bits are those of a cache of the rounded-up capacity. Blocks that see
      # none of it skip it (folding it would be an exact no-op).
      acc = jax.lax.cond(jnp.max(last) >= nsplit * split,
                         lambda a: fold(nsplit * split, tail, a), lambda a: a,
                         acc)
    return _finish(*acc, q.dtype)

  return _map_query_blocks(one_block, q.shape, hkv, nqb, rows, bq)


def _forward_xla_blocked(q, k, v, q_offset, kv_len, cfg: _Config):
  b, sq, hq, d = q.shape
  skv, hkv = k.shape[1], k.shape[2]
  split, bq = cfg.split_size, cfg.block_q
  nsplit = skv // split
  scale = 1.0 / float(d) ** 0.5
  qb = _query_blocks(q, hkv, bq)
  nqb, rows = qb.shape[1], qb.shape[3]
  limits = _row_limits(q_offset, kv_len, nqb, bq, hq // hkv)
  # Head-major K/V, transposed once per call: the per-split slices are then
  # ready operands of the head-batched dots. Slicing [split, Hkv, d] and
  # transposing inside the loop cost two copies per split and block (about
  # 40% of the training forward's attention time at the demo shapes).
  kt, vt = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)   # [B, Hkv, Skv, d]

  def one_block(i):
    bi, qi = i // nqb, i % nqb
    qblk = qb[bi, qi]                       # [Hkv, R, d]
    last = limits[bi, qi]                   # [R]

    def fold_split(j, acc):
      start = j * split
      ks = jax.lax.dynamic_slice(kt, (bi, 0, start, 0), (1, hkv, split, d))[0]
      vs = jax.lax.dynamic_slice(vt, (bi, 0, start, 0), (1, hkv, split, d))[0]
      s = jnp.einsum("hrd,hkd->hrk", qblk, ks,
                     preferred_element_type=jnp.float32) * scale
      visible = (start + jnp.arange(split))[None, :] <= last[:, None]
      return _combine(acc, _partials_from_scores(s, visible, vs))

    acc = _empty_partials((hkv, rows), d)
    acc = jax.lax.fori_loop(0, _num_visible(last, 0, split, nsplit), fold_split,
                            acc)
    return _finish(*acc, q.dtype)

  return _map_query_blocks(one_block, q.shape, hkv, nqb, rows, bq)


# ---------------------------------------------------------------------------
# Pallas path.
# ---------------------------------------------------------------------------
def _partials_kernel(q_ref, k_ref, v_ref, last_ref, o_ref, m_ref, l_ref, *,
                     split, tile, scale):
  start = pl.program_id(3) * split
  q = q_ref[...]                            # [R, d]
  last = last_ref[...]                      # [R]

  def fold_tile(t, acc):
    kt = k_ref[pl.ds(t * tile, tile), :]    # [tile, d]
    vt = v_ref[pl.ds(t * tile, tile), :]
    s = jax.lax.dot_general(q, kt, (((1,), (1,)), ((), ())),
                            preferred_element_type=jnp.float32) * scale
    visible = (start + t * tile + jnp.arange(tile))[None, :] <= last[:, None]
    return _combine(acc, _partials_from_scores(s, visible, vt))

  acc = _empty_partials((q.shape[0],), q.shape[1])
  m, l, o = jax.lax.fori_loop(
      0, _num_visible(last, start, tile, split // tile), fold_tile, acc)
  m_ref[...] = m
  l_ref[...] = l
  o_ref[...] = o


def _combine_kernel(o_ref, m_ref, l_ref, out_ref, lse_ref, *, nsplit):
  def fold(j, acc):
    return _combine(acc, (m_ref[j], l_ref[j], o_ref[j]))

  acc = _empty_partials((o_ref.shape[1],), o_ref.shape[2])
  out, lse = _finish(*jax.lax.fori_loop(0, nsplit, fold, acc), out_ref.dtype)
  out_ref[...] = out
  lse_ref[...] = lse


def _forward_pallas(q, k, v, q_offset, kv_len, cfg: _Config):
  b, sq, hq, d = q.shape
  skv, hkv = k.shape[1], k.shape[2]
  split, bq = cfg.split_size, cfg.block_q
  nsplit = skv // split
  qb = _query_blocks(q, hkv, bq).transpose(0, 2, 1, 3, 4)  # [B, Hkv, nqb, R, d]
  nqb, rows = qb.shape[2], qb.shape[3]
  limits = _row_limits(q_offset, kv_len, nqb, bq, hq // hkv)
  sqz = pl.squeezed
  tile = kv_tile(split, d * jnp.dtype(k.dtype).itemsize)
  kernel = functools.partial(_partials_kernel, split=split, tile=tile,
                             scale=1.0 / float(d) ** 0.5)
  part_shape = (b, hkv, nqb, nsplit, rows)
  o_part, m_part, l_part = pl.pallas_call(
      kernel,
      grid=(b, hkv, nqb, nsplit),
      in_specs=[
          pl.BlockSpec((sqz, sqz, sqz, rows, d), lambda i, h, j, s: (i, h, j, 0, 0)),
          pl.BlockSpec((sqz, split, sqz, d), lambda i, h, j, s: (i, s, h, 0)),
          pl.BlockSpec((sqz, split, sqz, d), lambda i, h, j, s: (i, s, h, 0)),
          pl.BlockSpec((sqz, sqz, rows), lambda i, h, j, s: (i, j, 0)),
      ],
      out_specs=[
          pl.BlockSpec((sqz,) * 4 + (rows, d), lambda i, h, j, s: (i, h, j, s, 0, 0)),
          pl.BlockSpec((sqz,) * 4 + (rows,), lambda i, h, j, s: (i, h, j, s, 0)),
          pl.BlockSpec((sqz,) * 4 + (rows,), lambda i, h, j, s: (i, h, j, s, 0)),
      ],
      out_shape=[jax.ShapeDtypeStruct(part_shape + (d,), jnp.float32),
                 jax.ShapeDtypeStruct(part_shape, jnp.float32),
                 jax.ShapeDtypeStruct(part_shape, jnp.float32)],
      interpret=cfg.interpret,
  )(qb, k, v, limits)

  out, lse = pl.pallas_call(
      functools.partial(_combine_kernel, nsplit=nsplit),
      grid=(b, hkv, nqb),
      in_specs=[
          pl.BlockSpec((sqz, sqz, sqz, nsplit, rows, d),
                       lambda i, h, j: (i, h, j, 0, 0, 0)),
          pl.BlockSpec((sqz, sqz, sqz, nsplit, rows), lambda i, h, j: (i, h, j, 0, 0)),
          pl.BlockSpec((sqz, sqz, sqz, nsplit, rows), lambda i, h, j: (i, h, j, 0, 0)),
      ],
      out_specs=[
          pl.BlockSpec((sqz, sqz, sqz, rows, d), lambda i, h, j: (i, h, j, 0, 0)),
          pl.BlockSpec((sqz, sqz, sqz, rows), lambda i, h, j: (i, h, j, 0)),
      ],
      out_shape=[jax.ShapeDtypeStruct((b, hkv, nqb, rows, d), q.dtype),
                 jax.ShapeDtypeStruct((b, hkv, nqb, rows), jnp.float32)],
      interpret=cfg.interpret,
  )(o_part, m_part, l_part)
  out = out.transpose(0, 2, 1, 3, 4)
  lse = lse.transpose(0, 2, 1, 3)
  return _unblock(out, b, sq, hq, bq), _unblock(lse, b, sq, hq, bq)


def _forward(q, k, v, q_offset, kv_len, cfg):
  if cfg.impl == "pallas":
    return _forward_pallas(q, k, v, q_offset, kv_len, cfg)
  if cfg.impl == "xla_blocked":
    return _forward_xla_blocked(q, k, v, q_offset, kv_len, cfg)
  return _forward_xla(q, k, v, q_offset, kv_len, cfg)


# ---------------------------------------------------------------------------
# custom_vjp: kernel forward, dense backward from the saved log-sum-exp.
# ---------------------------------------------------------------------------
@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _attention(q, k, v, q_offset, kv_len, cfg):
  return _forward(q, k, v, q_offset, kv_len, cfg)[0]


def _attention_fwd(q, k, v, q_offset, kv_len, cfg):
  out, lse = _forward(q, k, v, q_offset, kv_len, cfg)
  return out, (q, k, v, q_offset, kv_len, out, lse)


def _attention_bwd(cfg, res, g):
  del cfg
  q, k, v, q_offset, kv_len, out, lse = res
  b, sq, hq, d = q.shape
  skv, hkv = k.shape[1], k.shape[2]
  grp = hq // hkv
  scale = 1.0 / float(d) ** 0.5
  hp = jax.lax.Precision.HIGHEST
  f32 = lambda x: x.astype(jnp.float32)
  qf = f32(q).reshape(b, sq, hkv, grp, d)
  kf, vf = f32(k), f32(v)
  dof = f32(g).reshape(b, sq, hkv, grp, d)
  s = jnp.einsum("bqhgd,bkhd->bhgqk", qf, kf, precision=hp) * scale
  vis = (jnp.arange(skv)[None, None, :]
         <= last_visible(q_offset, kv_len, sq)[:, :, None])[:, None, None]
  lse_t = lse.reshape(b, sq, hkv, grp).transpose(0, 2, 3, 1)[..., None]
  p = jnp.where(vis, jnp.exp(s - lse_t), 0.0)
  delta = jnp.sum(dof * f32(out).reshape(b, sq, hkv, grp, d), axis=-1)
  delta = delta.transpose(0, 2, 3, 1)[..., None]
  dv = jnp.einsum("bhgqk,bqhgd->bkhd", p, dof, precision=hp)
  dp = jnp.einsum("bqhgd,bkhd->bhgqk", dof, vf, precision=hp)
  ds = p * (dp - delta) * scale
  dq = jnp.einsum("bhgqk,bkhd->bqhgd", ds, kf, precision=hp).reshape(q.shape)
  dk = jnp.einsum("bhgqk,bqhgd->bkhd", ds, qf, precision=hp)
  return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None)


_attention.defvjp(_attention_fwd, _attention_bwd)


# ---------------------------------------------------------------------------
# Public wrapper.
# ---------------------------------------------------------------------------
def _as_batch_vector(x, batch):
  x = jnp.asarray(x, jnp.int32)
  if x.ndim == 0:
    return jnp.broadcast_to(x, (batch,))
  if x.shape != (batch,):
    raise ValueError(f"attention: q_offset/kv_len must be a scalar or int32 "
                     f"[{batch}], got shape {x.shape}")
  return x


def _check(q, k, v, q_offset, numerics, ragged_tail=False):
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"attention: q, k, v must be [B, S, H, D], got {q.shape}, "
                     f"{k.shape}, {v.shape}")
  if k.shape != v.shape:
    raise ValueError(f"attention: k {k.shape} and v {v.shape} differ")
  if q.shape[0] != k.shape[0]:
    raise ValueError(f"attention: q batch {q.shape[0]} != k batch {k.shape[0]}")
  if q.shape[3] != k.shape[3]:
    raise ValueError(f"attention: q head_dim {q.shape[3]} != k head_dim "
                     f"{k.shape[3]}")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"attention: num_heads {q.shape[2]} of q is not a multiple "
                     f"of num_kv_heads {k.shape[2]} of k")
  split = numerics.split_size
  kv_tile(split)
  if ragged_tail:
    if numerics.impl != "xla":
      raise ValueError("attention: ragged_tail is for a whole sequence attending "
                       "to itself on impl 'xla'")
    if k.shape[1] % RAGGED_ALIGN:
      raise ValueError(f"attention: with ragged_tail the sequence length "
                       f"{k.shape[1]} must be a multiple of {RAGGED_ALIGN}")
  elif k.shape[1] % split:
    raise ValueError(f"attention: KV capacity {k.shape[1]} is not a multiple of "
                     f"split_size {split}")
  if q.shape[1] > k.shape[1]:
    raise ValueError(f"attention: q has {q.shape[1]} tokens, more than the KV "
                     f"cache capacity {k.shape[1]}")
  if isinstance(q_offset, int) and q_offset + q.shape[1] > k.shape[1]:
    raise ValueError(f"attention: q_offset {q_offset} + {q.shape[1]} query tokens "
                     f"exceeds the KV cache capacity {k.shape[1]}")


def attention(q, k, v, *, q_offset, kv_len, numerics: Numerics,
              ragged_tail: bool = False):
  """Invariant causal GQA attention: q [B, Sq, Hq, D], k/v [B, Skv, Hkv, D].

  q_offset, kv_len: Python ints or int32 [B] (may be traced). Returns
  [B, Sq, Hq, D] in q.dtype. Differentiable in q, k, v. ragged_tail (impl
  'xla', Sq == Skv only): Skv need only be a multiple of RAGGED_ALIGN; the last
  split is short, with the bits of a cache padded to the next split multiple.
  """
  _check(q, k, v, q_offset, numerics, ragged_tail)
  if numerics.impl == "pallas":
    check_pallas_backend(numerics.interpret, "attention (impl 'pallas')")
  b = q.shape[0]
  cfg = _Config(numerics.impl, int(numerics.split_size), int(numerics.block_q),
                numerics.interpret)
  return _attention(q, k, v, _as_batch_vector(q_offset, b),
                    _as_batch_vector(kv_len, b), cfg)
