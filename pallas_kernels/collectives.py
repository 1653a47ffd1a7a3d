"""Deterministic all-reduce and reduce-scatter: fixed bits on any layout.

Used inside `jax.shard_map` over a named mesh axis:

  y = all_reduce(x, "tensor")                        # sum over the axis, every shard gets it
  y = reduce_scatter(x, "tensor", scatter_dimension=1)  # shard i gets block i of the sum
  z = fixed_order_sum([p0, p1, ...])                 # the one summation order

Both are one-shot: every shard receives the n partial values it needs
(`all_gather`, or `all_to_all` for reduce-scatter, which moves 1/n of the
data) and adds them in f32 in rank order, p0 + p1 + ... + p(n-1), left to
right. That is the deterministic one-shot reduction that NVLink SHARP (NVLS)
multimem reductions stand in for on an NVSwitch node: one round of
communication, then a fixed reduction. Because the order is fixed, the bits do
not depend on how the work was split over devices: the tensor-parallel
forward (partials on different devices, gathered and summed here) and the
sequence-parallel forward (the same partials computed on one device and
summed with `fixed_order_sum`) give identical outputs
(interaction/parallel.py, tests/interaction/parallel_sharding_test.py).
`all_reduce(..., deterministic=False)` is the plain `psum` path, kept for
the companion test that shows the layouts then differ.

Why NCCL's reductions do not give fixed bits: NCCL picks the algorithm
(ring, tree, NVLS, CollNet) and the protocol (LL, LL128, Simple) at run time
from the message size, the topology and the number of ranks, and splits a
message over a run-time number of channels. A ring all-reduce adds each
chunk in ring order starting at a different rank per chunk, so the
association of the sum depends on the element's position, the ring and the
channel count; a tree adds in the tree's order; NVLS adds inside the switch.
Floating-point addition is not associative, so any change (another message
size after XLA combines all-reduces differently, another node count, another
NCCL version) changes the low bits, and a tensor-parallel result never
matches the single-device or sequence-parallel one, which sums in yet another
order. To pin the native path as far as it can be pinned: NCCL_ALGO=Ring,
NCCL_PROTO=Simple, NCCL_MIN_NCHANNELS=NCCL_MAX_NCHANNELS=<fixed>,
NCCL_NVLS_ENABLE=0, NCCL_COLLNET_ENABLE=0, the same NCCL version and
topology; and for XLA --xla_gpu_deterministic_ops=true (or
--xla_gpu_exclude_nondeterministic_ops=true) plus fixed
--xla_gpu_all_reduce_combine_threshold_bytes and
--xla_gpu_reduce_scatter_combine_threshold_bytes (combining changes which
elements share a message, hence the chunking). That gives run-to-run bits on
one fixed layout only; the collectives here give the same bits across
layouts, at the cost of n x the received data of a ring (fine for the small
messages of a 200 ms micro-turn, see BENCHMARKS.md).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

F32 = jnp.float32


def fixed_order_sum(parts: Sequence[jax.Array] | jax.Array, dtype=None):
  """p0 + p1 + ... + p(n-1) in f32, left to right (`parts`: a list, or an
  array whose leading axis is n). Result in `dtype` (default the parts')."""
  if isinstance(parts, (list, tuple)):
    items = list(parts)
  else:
    items = [parts[i] for i in range(parts.shape[0])]
  if not items:
    raise ValueError("fixed_order_sum: nothing to sum")
  out_dtype = dtype or items[0].dtype
  acc = items[0].astype(F32)
  for p in items[1:]:
    # One add per step, in order: XLA does not reassociate floating-point
    # adds, and the barrier keeps a fusion from turning the chain into a
    # reduce whose order the backend picks.
    acc = jax.lax.optimization_barrier(acc) + p.astype(F32)
  return acc.astype(out_dtype)


def all_reduce(x, axis_name, *, deterministic: bool = True):
  """Sum of x over the mesh axis `axis_name`, on every shard.

  deterministic: all-gather the n shards' values, then `fixed_order_sum` in
  rank order (f32). False: `jax.lax.psum` (the backend's own order).
  """
  if not deterministic:
    return jax.lax.psum(x, axis_name)
  parts = jax.lax.all_gather(x, axis_name, axis=0, tiled=False)   # [n, ...]
  return fixed_order_sum(parts, dtype=x.dtype)


def reduce_scatter(x, axis_name, *, scatter_dimension: int = 0,
                   deterministic: bool = True):
  """Block i (along `scatter_dimension`) of the sum over `axis_name`, on shard i.

  deterministic: an all-to-all hands shard i the n partial values of its
  block, summed in rank order: bit for bit the slice of `all_reduce`.
  False: `jax.lax.psum_scatter` (tiled).
  """
  if not deterministic:
    return jax.lax.psum_scatter(x, axis_name, scatter_dimension=scatter_dimension,
                                tiled=True)
  n = jax.lax.axis_size(axis_name)
  dim = scatter_dimension % x.ndim
  if x.shape[dim] % n:
    raise ValueError(f"reduce_scatter: dim {dim} of {x.shape} is not divisible by "
                     f"the {n} shards of axis {axis_name!r}")
  blocks = jnp.stack(jnp.split(x, n, axis=dim), axis=0)          # [n, ..., blk, ...]
  # After the exchange, row j holds source shard j's partial of my block.
  mine = jax.lax.all_to_all(blocks, axis_name, split_axis=0, concat_axis=0,
                            tiled=False)
  return fixed_order_sum(mine, dtype=x.dtype)


# ---------------------------------------------------------------------------
# References (host, numpy): what the collectives must return, bit for bit.
# ---------------------------------------------------------------------------
def all_reduce_reference(shards: Sequence[np.ndarray]) -> np.ndarray:
  """The rank-order f32 sum of the shards' values."""
  acc = np.asarray(shards[0], np.float32).copy()
  for s in shards[1:]:
    acc = acc + np.asarray(s, np.float32)
  return acc.astype(np.asarray(shards[0]).dtype)


def reduce_scatter_reference(shards: Sequence[np.ndarray], scatter_dimension: int = 0):
  """[block i of the rank-order sum for each shard i]."""
  total = all_reduce_reference(shards)
  return np.split(total, len(shards), axis=scatter_dimension)
