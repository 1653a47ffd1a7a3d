"""Grouped-GEMM forms of the routed-expert FFN (the training / prefill paths).

Both take tokens x [T, d], the router's expert_ids / gates [T, k] and SwiGLU
weights w_gate, w_up [E, d, f], w_down [E, f, d], and return f32 [T, d].

`ragged_dot_ffn`: dropless. The T*k token-slots are sorted by expert and run
  through `jax.lax.ragged_dot`. On TPU/GPU that lowers to a grouped GEMM; on
  CPU XLA has no grouped kernel and masks every group into a dense matmul
  over all T*k rows, i.e. about E times the useful work.

`padded_grouped_ffn`: the form a grouped GEMM takes without a ragged kernel:
  slots sorted by expert, scattered into an [E, capacity, d] buffer, one
  batched matmul per weight. Dropless only when capacity >= the largest group
  (slots past capacity are dropped); the benchmark uses it as the fair CPU
  grouped-GEMM baseline with the measured maximum load as capacity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

F32 = jnp.float32


def _sort_slots(expert_ids, num_experts):
  """Slot order by expert (stable), token index of each sorted slot, group sizes
  (ids >= num_experts are counted in no group)."""
  k = expert_ids.shape[1]
  flat_ids = expert_ids.reshape(-1).astype(jnp.int32)
  order = jnp.argsort(flat_ids, stable=True)
  group_sizes = jnp.bincount(flat_ids, length=num_experts).astype(jnp.int32)
  return order, order // k, flat_ids, group_sizes


def _unsort(out_sorted, order, t, k):
  """[T*k, d] slot outputs in expert order -> [T, k, d] in token order."""
  out = jnp.zeros_like(out_sorted).at[order].set(out_sorted, unique_indices=True)
  return out.reshape(t, k, -1)


def _combine(out_sorted, order, gates):
  """Unsort [T*k, d] slot outputs and take the gate-weighted sum over k."""
  t, k = gates.shape
  return jnp.einsum("tkd,tk->td", _unsort(out_sorted, order, t, k), gates.astype(F32))


def _ragged_swiglu(x, expert_ids, w_gate, w_up, w_down):
  """(sorted [T*k, d] slot outputs, their order). An id >= E (a slot whose
  expert is not in these weights, moe/expert_parallel.py) sorts after every
  group and is in none: ragged_dot gives its row zeros and, on a grouped-GEMM
  kernel, spends no work on it."""
  order, token_of, _, group_sizes = _sort_slots(expert_ids, w_gate.shape[0])
  xs = jnp.take(x, token_of, axis=0)                                  # [T*k, d]
  h = jax.nn.silu(jax.lax.ragged_dot(xs, w_gate, group_sizes, preferred_element_type=F32))
  h = h * jax.lax.ragged_dot(xs, w_up, group_sizes, preferred_element_type=F32)
  out = jax.lax.ragged_dot(h.astype(w_down.dtype), w_down, group_sizes,
                           preferred_element_type=F32)
  return out, order


def ragged_dot_ffn(x, expert_ids, gates, w_gate, w_up, w_down):
  out, order = _ragged_swiglu(x, expert_ids, w_gate, w_up, w_down)
  return _combine(out, order, gates)


def ragged_dot_slots(x, expert_ids, w_gate, w_up, w_down):
  """f32 [T, k, d]: slot j of token t through expert expert_ids[t, j], not
  gated; zeros for an id >= E (see `_ragged_swiglu`)."""
  out, order = _ragged_swiglu(x, expert_ids, w_gate, w_up, w_down)
  return _unsort(out, order, *expert_ids.shape)


def padded_grouped_ffn(x, expert_ids, gates, w_gate, w_up, w_down, *, capacity: int):
  if capacity <= 0:
    raise ValueError(f"padded_grouped_ffn: capacity must be positive, got {capacity}")
  num_experts, d, _ = w_gate.shape
  order, token_of, flat_ids, group_sizes = _sort_slots(expert_ids, num_experts)
  sorted_ids = flat_ids[order]
  starts = jnp.cumsum(group_sizes) - group_sizes
  rank = jnp.arange(order.shape[0]) - starts[sorted_ids]               # place in its group
  keep = rank < capacity
  row = jnp.where(keep, sorted_ids * capacity + rank, num_experts * capacity)  # OOB: dropped
  buf = jnp.zeros((num_experts * capacity, d), x.dtype)
  buf = buf.at[row].set(jnp.take(x, token_of, axis=0), mode="drop")
  buf = buf.reshape(num_experts, capacity, d)
  h = jax.nn.silu(jnp.einsum("ecd,edf->ecf", buf, w_gate, preferred_element_type=F32))
  h = h * jnp.einsum("ecd,edf->ecf", buf, w_up, preferred_element_type=F32)
  out = jnp.einsum("ecf,efd->ecd", h.astype(w_down.dtype), w_down,
                   preferred_element_type=F32).reshape(num_experts * capacity, d)
  out_sorted = jnp.where(keep[:, None], jnp.take(out, row, axis=0, mode="fill",
                                                 fill_value=0), 0.0)
  return _combine(out_sorted, order, gates)
