"""gather+GEMV through jax-triton's `triton_call` (GPU at run time).

The kernels are in moe/triton_kernels.py. On CPU the wrapper can be traced
(jax.jit(...).trace) but not lowered: jax-triton registers lowerings for cuda
and rocm only. The Triton source itself is checked on CPU under Triton's
interpreter by tests/moe/triton_test.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax_triton as jt
import triton

from moe import gather_gemv as gg
from moe import triton_kernels as tk


def gather_gemv_triton(x, expert_ids, gates, w_gate, w_up, w_down, *,
                       block_d: int = tk.DEFAULT_BLOCK_D,
                       block_f: int = tk.DEFAULT_BLOCK_F, num_warps: int = 4):
  """y [T, d] in x.dtype; same contract as gather_gemv.gather_gemv_xla."""
  gg.check_inputs(x, expert_ids, gates, w_gate, w_up, w_down)
  for name, v in (("block_d", block_d), ("block_f", block_f)):
    if v <= 0 or v & (v - 1):
      raise ValueError(f"gather_gemv_triton: {name}={v} must be a power of two")
  t, d = x.shape
  k = expert_ids.shape[1]
  f = w_gate.shape[2]
  ids = expert_ids.astype(jnp.int32).reshape(-1)
  consts = dict(D=d, F=f, K=k, BLOCK_D=block_d, BLOCK_F=block_f)
  h = jt.triton_call(
      x, ids, w_gate, w_up, kernel=tk.gate_up_kernel,
      out_type=jax.ShapeDtypeStruct((t * k, f), jnp.float32),
      grid=(t * k, triton.cdiv(f, block_f)), num_warps=num_warps, **consts)
  y = jt.triton_call(
      h, ids, gates.astype(jnp.float32).reshape(-1), w_down, kernel=tk.down_kernel,
      out_type=jax.ShapeDtypeStruct((t, d), jnp.float32),
      grid=(t, triton.cdiv(d, block_d)), num_warps=num_warps, **consts)
  return y.astype(x.dtype)
