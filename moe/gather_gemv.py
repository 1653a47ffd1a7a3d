"""Gather+GEMV MoE decode kernels: reference, XLA loop and Pallas.

All three compute, for every token t,

  y[t] = sum_j gates[t, j] * down_e(silu(x[t] @ w_gate[e]) * (x[t] @ w_up[e])),
  e = expert_ids[t, j],

with SwiGLU experts w_gate, w_up [E, d, f] and w_down [E, f, d]. There is no
sort and no padding: each token reads only its own k experts' weights, which
is what a decode step with a handful of tokens wants (the scheme of
gpt-fast's MoE decode and Cursor's warp decode).

Batch invariance by construction (the XLA and Pallas paths): every token is
processed by the same fixed-shape computation (a [d] @ [d, f] gemv per slot,
slots summed in order j = 0..k-1 into an f32 accumulator), looped over tokens,
so a token's bits do not depend on how many tokens share the call or what they
are. `gather_gemv_reference` is the plain jnp form (gather the weights with
`jnp.take`, one einsum); it is the test oracle, not a fast path: it copies the
weights into a [T, k, d, f] array.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.numerics import check_pallas_backend

F32 = jnp.float32
# The gather+gemv kernels, the one list of their names (model.moe.gemv_kernel
# takes one of these, or 'auto'; see moe/config.py).
KERNELS = ("xla", "pallas", "triton")


def check_inputs(x, expert_ids, gates, w_gate, w_up, w_down):
  """Raises ValueError naming the argument whose shape does not fit."""
  if x.ndim != 2:
    raise ValueError(f"gather_gemv: x must be [T, d], got {x.shape}")
  t, d = x.shape
  if w_gate.ndim != 3 or w_gate.shape[1] != d:
    raise ValueError(f"gather_gemv: w_gate must be [E, d={d}, f], got {w_gate.shape}")
  e, _, f = w_gate.shape
  if w_up.shape != w_gate.shape:
    raise ValueError(f"gather_gemv: w_up {w_up.shape} != w_gate {w_gate.shape}")
  if w_down.shape != (e, f, d):
    raise ValueError(f"gather_gemv: w_down must be {(e, f, d)}, got {w_down.shape}")
  if expert_ids.ndim != 2 or expert_ids.shape[0] != t:
    raise ValueError(f"gather_gemv: expert_ids must be [T={t}, k], got {expert_ids.shape}")
  if not jnp.issubdtype(expert_ids.dtype, jnp.integer):
    raise ValueError(f"gather_gemv: expert_ids must be integer, got {expert_ids.dtype}")
  if gates.shape != expert_ids.shape:
    raise ValueError(f"gather_gemv: gates {gates.shape} != expert_ids {expert_ids.shape}")


def gather_gemv_reference(x, expert_ids, gates, w_gate, w_up, w_down):
  """Pure-jnp oracle (gpt-fast's form): gather [T, k, ...] weights, einsum."""
  check_inputs(x, expert_ids, gates, w_gate, w_up, w_down)
  wg = jnp.take(w_gate, expert_ids, axis=0)   # [T, k, d, f]
  wu = jnp.take(w_up, expert_ids, axis=0)
  wd = jnp.take(w_down, expert_ids, axis=0)   # [T, k, f, d]
  h = jax.nn.silu(jnp.einsum("td,tkdf->tkf", x, wg, preferred_element_type=F32))
  h = h * jnp.einsum("td,tkdf->tkf", x, wu, preferred_element_type=F32)
  out = jnp.einsum("tkf,tkfd->tkd", h.astype(w_down.dtype), wd,
                   preferred_element_type=F32)
  return jnp.einsum("tkd,tk->td", out, gates.astype(F32)).astype(x.dtype)


def _token_ffn(x_t, ids_t, gates_t, w_gate, w_up, w_down):
  """One token: scan the k slots in order, one expert's weights at a time.

  Indexing one expert with a traced id reads its [d, f] slab in place; no
  [k, d, f] copy is made (measured at 9-14 GB/s on a 2-core CPU).
  """
  def slot(acc, j):
    e = ids_t[j]
    wg = jax.lax.dynamic_index_in_dim(w_gate, e, axis=0, keepdims=False)
    wu = jax.lax.dynamic_index_in_dim(w_up, e, axis=0, keepdims=False)
    wd = jax.lax.dynamic_index_in_dim(w_down, e, axis=0, keepdims=False)
    h = jax.nn.silu(jnp.dot(x_t, wg, preferred_element_type=F32))
    h = h * jnp.dot(x_t, wu, preferred_element_type=F32)
    out = jnp.dot(h.astype(w_down.dtype), wd, preferred_element_type=F32)
    return acc + gates_t[j].astype(F32) * out, None

  # zeros_like keeps x_t's varying-manual-axes type inside a shard_map
  # (moe/expert_parallel.py), which the scan carry must match.
  acc0 = jnp.zeros_like(x_t, dtype=F32)
  acc, _ = jax.lax.scan(slot, acc0, jnp.arange(ids_t.shape[0]))
  return acc


def gather_gemv_xla(x, expert_ids, gates, w_gate, w_up, w_down):
  """XLA path: lax.map over tokens, lax.scan over the k slots."""
  check_inputs(x, expert_ids, gates, w_gate, w_up, w_down)
  fn = functools.partial(_token_ffn, w_gate=w_gate, w_up=w_up, w_down=w_down)
  y = jax.lax.map(lambda a: fn(*a), (x, expert_ids.astype(jnp.int32), gates))
  return y.astype(x.dtype)


# ---------------------------------------------------------------------------
# Pallas: expert ids are scalar-prefetch operands that drive the weights'
# BlockSpec index maps, so each grid step DMAs exactly one expert's tile.
# Grid (T, k, f // block_f): the k and f axes are reductions into one output
# row, visited in a fixed order, so the result is batch-invariant.
# ---------------------------------------------------------------------------
def _pallas_kernel(ids_ref, x_ref, gates_ref, wg_ref, wu_ref, wd_ref, o_ref, acc_ref):
  del ids_ref  # only used by the index maps
  j = pl.program_id(1)
  fi = pl.program_id(2)

  @pl.when((j == 0) & (fi == 0))
  def _():
    acc_ref[...] = jnp.zeros_like(acc_ref)

  x = x_ref[0]                                      # [1, d]
  h = jax.nn.silu(jnp.dot(x, wg_ref[0], preferred_element_type=F32))
  h = h * jnp.dot(x, wu_ref[0], preferred_element_type=F32)   # [1, bf]
  out = jnp.dot(h.astype(wd_ref.dtype), wd_ref[0], preferred_element_type=F32)
  gate = gates_ref[0, 0, j].astype(F32)
  acc_ref[...] += gate * out

  @pl.when((j == pl.num_programs(1) - 1) & (fi == pl.num_programs(2) - 1))
  def _():
    o_ref[0] = acc_ref[...].astype(o_ref.dtype)


def gather_gemv_pallas(x, expert_ids, gates, w_gate, w_up, w_down, *,
                       block_f: int | None = None, interpret: bool = False):
  """Pallas path. block_f tiles the hidden width (default: all of it).

  Scalar prefetch (`PrefetchScalarGridSpec`) is a TPU (Mosaic) construct: this
  kernel targets TPU (compiled: interpret=False) and CPU (interpret=True, as
  the tests run it); on GPU use kernel='triton'. On TPU block_f must be a
  multiple of 128 (or d_ff itself). Not run on a TPU here.
  """
  check_inputs(x, expert_ids, gates, w_gate, w_up, w_down)
  check_pallas_backend(interpret, "gather_gemv kernel 'pallas' (model.moe.gemv_kernel)")
  from jax.experimental.pallas import tpu as pltpu  # PrefetchScalarGridSpec

  t, d = x.shape
  num_experts, _, f = w_gate.shape
  k = expert_ids.shape[1]
  block_f = f if block_f is None else int(block_f)
  if block_f <= 0 or f % block_f:
    raise ValueError(f"gather_gemv_pallas: block_f={block_f} must divide d_ff={f}")
  ids = jnp.clip(expert_ids.astype(jnp.int32), 0, num_experts - 1).reshape(-1)

  grid_spec = pltpu.PrefetchScalarGridSpec(
      num_scalar_prefetch=1,
      grid=(t, k, f // block_f),
      # Tokens ride a leading unit axis ([T, 1, d]) so every block's last two
      # dims equal the array's, as TPU tiling requires of a one-row block.
      in_specs=[
          pl.BlockSpec((1, 1, d), lambda ti, j, fi, ids: (ti, 0, 0)),
          pl.BlockSpec((1, 1, k), lambda ti, j, fi, ids: (ti, 0, 0)),
          pl.BlockSpec((1, d, block_f), lambda ti, j, fi, ids: (ids[ti * k + j], 0, fi)),
          pl.BlockSpec((1, d, block_f), lambda ti, j, fi, ids: (ids[ti * k + j], 0, fi)),
          pl.BlockSpec((1, block_f, d), lambda ti, j, fi, ids: (ids[ti * k + j], fi, 0)),
      ],
      out_specs=pl.BlockSpec((1, 1, d), lambda ti, j, fi, ids: (ti, 0, 0)),
      scratch_shapes=[pltpu.VMEM((1, d), F32)],
  )
  y = pl.pallas_call(
      _pallas_kernel,
      grid_spec=grid_spec,
      out_shape=jax.ShapeDtypeStruct((t, 1, d), x.dtype),
      interpret=interpret,
  )(ids, x[:, None, :], gates.astype(F32)[:, None, :], w_gate, w_up, w_down)
  return y[:, 0, :]


# ---------------------------------------------------------------------------
# Public entry point: forward by the chosen kernel, backward by grouped GEMM.
# ---------------------------------------------------------------------------

def _forward(kernel, block_f, interpret, x, expert_ids, gates, w_gate, w_up, w_down):
  if kernel == "xla":
    return gather_gemv_xla(x, expert_ids, gates, w_gate, w_up, w_down)
  if kernel == "pallas":
    return gather_gemv_pallas(x, expert_ids, gates, w_gate, w_up, w_down,
                              block_f=block_f, interpret=interpret)
  if kernel == "triton":
    from moe import triton_gather_gemv  # jax-triton is only needed here
    return triton_gather_gemv.gather_gemv_triton(x, expert_ids, gates, w_gate, w_up,
                                                 w_down)
  raise ValueError(f"gather_gemv: kernel {kernel!r} is not one of {KERNELS}")


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _gather_gemv(kernel, block_f, interpret, x, expert_ids, gates, w_gate, w_up, w_down):
  return _forward(kernel, block_f, interpret, x, expert_ids, gates, w_gate, w_up, w_down)


def _gather_gemv_fwd(kernel, block_f, interpret, x, expert_ids, gates, w_gate, w_up,
                     w_down):
  y = _forward(kernel, block_f, interpret, x, expert_ids, gates, w_gate, w_up, w_down)
  return y, (x, expert_ids, gates, w_gate, w_up, w_down)


def _gather_gemv_bwd(kernel, block_f, interpret, residuals, dy):
  # The per-token loop is the right shape for a few decode tokens, but its
  # autodiff transpose adds a full [E, d, f] weight-gradient update per token
  # and slot (15x slower than dense at T=256 on CPU). The gradient is the same
  # function's, so take it from the dropless grouped-GEMM form, which
  # accumulates each expert's weight gradient in one grouped matmul. Gradients
  # are deterministic but not batch-invariant; the determinism contract is
  # about forward bits.
  del kernel, block_f, interpret
  from moe import grouped_gemm
  x, expert_ids, gates, w_gate, w_up, w_down = residuals

  def f(x, gates, w_gate, w_up, w_down):
    return grouped_gemm.ragged_dot_ffn(x, expert_ids, gates, w_gate, w_up,
                                       w_down).astype(x.dtype)

  _, vjp = jax.vjp(f, x, gates, w_gate, w_up, w_down)
  dx, dgates, dwg, dwu, dwd = vjp(dy)
  return dx, None, dgates, dwg, dwu, dwd


_gather_gemv.defvjp(_gather_gemv_fwd, _gather_gemv_bwd)


def gather_gemv(x, expert_ids, gates, w_gate, w_up, w_down, *, kernel: str = "xla",
                block_f: int | None = None, interpret: bool = False):
  """y [T, d] (x.dtype) = sum_j gates[:, j] * expert_{ids[:, j]}(x); differentiable.

  kernel: 'xla' (lax.map/scan loop, what runs on CPU), 'pallas' (TPU; on CPU
  only with interpret=True) or 'triton' (jax-triton, GPU only at run time).
  `interpret` applies to the Pallas kernel only.
  """
  if kernel not in KERNELS:
    raise ValueError(f"gather_gemv: kernel {kernel!r} is not one of {KERNELS}")
  check_inputs(x, expert_ids, gates, w_gate, w_up, w_down)
  return _gather_gemv(kernel, block_f, interpret, x, expert_ids.astype(jnp.int32), gates,
                      w_gate, w_up, w_down)
