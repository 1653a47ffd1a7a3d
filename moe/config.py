"""MoEConfig: the typed, validated form of `config.model.moe`.

Built once from the ConfigDict (`MoEConfig.from_config`) or directly (tests,
benchmarks); every field is checked here and only here, and each error names
the config field it comes from. The defaults are the base config's
(experiments/configs/common.py, `moe_config`), where each field is documented.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from moe.gather_gemv import KERNELS
from moe.router import GATINGS

# The MoE layer's `impl` enum (moe/layer.py explains each).
IMPLS = ("auto", "loop", "dense", "ragged_dot", "gather_gemv")
# 'auto': the gather_gemv kernel follows model.kernels.impl (see moe/layer.py
# resolve_gemv_kernel); otherwise one of gather_gemv.KERNELS.
GEMV_KERNEL_CHOICES = ("auto",) + KERNELS


def _field(name: str) -> str:
  return f"model.moe.{name}"


@dataclasses.dataclass(frozen=True)
class MoEConfig:
  num_experts: int = 8
  top_k: int = 2
  d_ff: int = 128
  num_shared_experts: int = 0
  gating: str = "softmax"
  impl: str = "auto"
  auto_threshold: int = 16
  load_balance_weight: float = 1e-2
  z_loss_weight: float = 1e-3
  router_dtype: str = "float32"
  gemv_kernel: str = "auto"

  def __post_init__(self):
    for name in ("num_experts", "d_ff"):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"{_field(name)}: must be positive, got {getattr(self, name)}")
    if not 1 <= self.top_k <= self.num_experts:
      raise ValueError(f"{_field('top_k')}: {self.top_k} must be in "
                       f"[1, {_field('num_experts')}={self.num_experts}]")
    for name in ("num_shared_experts", "auto_threshold"):
      if int(getattr(self, name)) < 0:
        raise ValueError(f"{_field(name)}: must be >= 0, got {getattr(self, name)}")
    if self.gating not in GATINGS:
      raise ValueError(f"{_field('gating')}: {self.gating!r} is not one of {GATINGS}")
    if self.impl not in IMPLS:
      raise ValueError(f"{_field('impl')}: {self.impl!r} is not one of {IMPLS}")
    if self.gemv_kernel not in GEMV_KERNEL_CHOICES:
      raise ValueError(f"{_field('gemv_kernel')}: {self.gemv_kernel!r} is not one "
                       f"of {GEMV_KERNEL_CHOICES}")
    for name in ("load_balance_weight", "z_loss_weight"):
      if not float(getattr(self, name)) >= 0:  # also rejects NaN
        raise ValueError(f"{_field(name)}: must be >= 0, got {getattr(self, name)}")
    try:
      floating = jnp.issubdtype(jnp.dtype(self.router_dtype), jnp.floating)
    except TypeError:
      floating = False
    if not floating:
      raise ValueError(f"{_field('router_dtype')}: {self.router_dtype!r} is not a "
                       "floating dtype name")

  @classmethod
  def from_config(cls, moe) -> "MoEConfig":
    """`config.model.moe` -> MoEConfig; every field is read (none optional)."""
    return cls(num_experts=int(moe.num_experts), top_k=int(moe.top_k),
               d_ff=int(moe.d_ff), num_shared_experts=int(moe.num_shared_experts),
               gating=str(moe.gating), impl=str(moe.impl),
               auto_threshold=int(moe.auto_threshold),
               load_balance_weight=float(moe.load_balance_weight),
               z_loss_weight=float(moe.z_loss_weight),
               router_dtype=str(moe.router_dtype), gemv_kernel=str(moe.gemv_kernel))
