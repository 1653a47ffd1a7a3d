"""Triton source of the gather+GEMV MoE kernels (no JAX import here).

Two kernels, as in Cursor's warp decode:
  gate_up_kernel   grid (T*k, cdiv(f, BLOCK_F)): slot s = (t, j) reads its
                   expert's w_gate / w_up columns, h[s] = silu(x_t Wg) * (x_t Wu).
  down_kernel      grid (T, cdiv(d, BLOCK_D)): y[t] = sum_j gate[t, j] *
                   h[t, j] @ w_down[e_tj], slots summed in order j = 0..k-1.
Every program's reduction runs over fixed BLOCK_D / BLOCK_F tiles in a fixed
order and touches one token only, so outputs are batch-invariant. Everything
accumulates in f32; y is f32.

This module is imported by the jax-triton wrapper (moe/triton_gather_gemv.py)
and, without JAX, by tests/moe/triton_worker.py, which runs the same kernels
on torch CPU tensors under Triton's interpreter (TRITON_INTERPRET=1) for the
CPU test (tests/moe/triton_test.py).
"""

from __future__ import annotations


import triton
import triton.language as tl

DEFAULT_BLOCK_D = 64
DEFAULT_BLOCK_F = 64


@triton.jit
def gate_up_kernel(x_ptr, ids_ptr, wg_ptr, wu_ptr, h_ptr,
                   D: tl.constexpr, F: tl.constexpr, K: tl.constexpr,
                   BLOCK_D: tl.constexpr, BLOCK_F: tl.constexpr):
  slot = tl.program_id(0)
  pid_f = tl.program_id(1)
  token = slot // K
  expert = tl.load(ids_ptr + slot).to(tl.int64)
  offs_f = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
  mask_f = offs_f < F
  acc_g = tl.zeros((BLOCK_F,), dtype=tl.float32)
  acc_u = tl.zeros((BLOCK_F,), dtype=tl.float32)
  w_base = expert * D * F
  for d0 in range(0, D, BLOCK_D):
    offs_d = d0 + tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    xv = tl.load(x_ptr + token * D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    w_offs = w_base + offs_d[:, None] * F + offs_f[None, :]
    w_mask = mask_d[:, None] & mask_f[None, :]
    wg = tl.load(wg_ptr + w_offs, mask=w_mask, other=0.0).to(tl.float32)
    wu = tl.load(wu_ptr + w_offs, mask=w_mask, other=0.0).to(tl.float32)
    acc_g += tl.sum(xv[:, None] * wg, axis=0)
    acc_u += tl.sum(xv[:, None] * wu, axis=0)
  h = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
  tl.store(h_ptr + slot * F + offs_f, h, mask=mask_f)


@triton.jit
def down_kernel(h_ptr, ids_ptr, gates_ptr, wd_ptr, y_ptr,
                D: tl.constexpr, F: tl.constexpr, K: tl.constexpr,
                BLOCK_D: tl.constexpr, BLOCK_F: tl.constexpr):
  token = tl.program_id(0)
  pid_d = tl.program_id(1)
  offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
  mask_d = offs_d < D
  acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
  for j in range(K):
    slot = token * K + j
    expert = tl.load(ids_ptr + slot).to(tl.int64)
    gate = tl.load(gates_ptr + slot).to(tl.float32)
    part = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for f0 in range(0, F, BLOCK_F):
      offs_f = f0 + tl.arange(0, BLOCK_F)
      mask_f = offs_f < F
      hv = tl.load(h_ptr + slot * F + offs_f, mask=mask_f, other=0.0)
      w_offs = expert * F * D + offs_f[:, None] * D + offs_d[None, :]
      wd = tl.load(wd_ptr + w_offs, mask=mask_f[:, None] & mask_d[None, :],
                   other=0.0).to(tl.float32)
      part += tl.sum(hv[:, None] * wd, axis=0)
    acc += gate * part
  tl.store(y_ptr + token * D + offs_d, acc, mask=mask_d)


def run_torch(x, expert_ids, gates, w_gate, w_up, w_down, *,
              block_d=DEFAULT_BLOCK_D, block_f=DEFAULT_BLOCK_F):
  """Runs both kernels on torch tensors (CPU under TRITON_INTERPRET=1)."""
  import torch  # only the interpreter / torch path needs it
  t, d = x.shape
  k = expert_ids.shape[1]
  f = w_gate.shape[2]
  ids = expert_ids.to(torch.int32).contiguous()
  h = torch.empty((t * k, f), dtype=torch.float32, device=x.device)
  y = torch.empty((t, d), dtype=torch.float32, device=x.device)
  gate_up_kernel[(t * k, triton.cdiv(f, block_f))](
      x.contiguous(), ids, w_gate.contiguous(), w_up.contiguous(), h,
      D=d, F=f, K=k, BLOCK_D=block_d, BLOCK_F=block_f)
  down_kernel[(t, triton.cdiv(d, block_d))](
      h, ids, gates.to(torch.float32).contiguous(), w_down.contiguous(), y,
      D=d, F=f, K=k, BLOCK_D=block_d, BLOCK_F=block_f)
  return y
