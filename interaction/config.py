"""ModelConfig and FlowConfig: the typed, validated form of `config.model`.

`ModelConfig.from_config(config.model)` converts the ConfigDict once; the
model's modules take these frozen values (and `LayoutSpec` for the layout),
never a ConfigDict. Each field is checked here and only here, with an error
naming the config field. Nested sections: `moe` (moe.config.MoEConfig),
`flow` (FlowConfig) and `kernels` (pallas_kernels.numerics.Numerics). The
defaults are the base config's (experiments/configs/common.py, where each
field is documented), so tests can build a small model by naming what they
change.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from interaction.tokenizer import TOKENIZER
from moe.config import MoEConfig
from pallas_kernels.numerics import Numerics

FFNS = ("swiglu", "moe")


def _check_positive(section: str, obj, names) -> None:
  for name in names:
    value = getattr(obj, name)
    if not value > 0:
      raise ValueError(f"{section}.{name}: must be positive, got {value}")


def _check_dtype(field: str, name: str) -> None:
  try:
    floating = jnp.issubdtype(jnp.dtype(name), jnp.floating)
  except TypeError:
    floating = False
  if not floating:
    raise ValueError(f"{field}: {name!r} is not a floating dtype name")


@dataclasses.dataclass(frozen=True)
class FlowConfig:
  """`config.model.flow`: the flow-matching head (interaction/flow_head.py)."""
  width: int = 128
  depth: int = 2
  num_steps: int = 4
  batch_mul: int = 2

  def __post_init__(self):
    _check_positive("model.flow", self, ("width", "num_steps", "batch_mul"))
    if self.depth < 0:
      raise ValueError(f"model.flow.depth: must be >= 0, got {self.depth}")

  @classmethod
  def from_config(cls, flow) -> "FlowConfig":
    return cls(width=int(flow.width), depth=int(flow.depth),
               num_steps=int(flow.num_steps), batch_mul=int(flow.batch_mul))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """`config.model`: the decoder, its embedders and heads."""
  vocab_size: int = TOKENIZER.vocab_size
  d_model: int = 64
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 16
  d_ff: int = 128
  ffn: str = "swiglu"
  first_dense_layers: int = 0
  moe: MoEConfig = MoEConfig()
  rope_theta: float = 10000.0
  norm_eps: float = 1e-6
  dtype: str = "float32"
  param_dtype: str = "float32"
  time_embed_dim: int = 32
  hmlp_factors: tuple[int, ...] = (4, 2, 5)
  flow: FlowConfig = FlowConfig()
  kernels: Numerics = Numerics()

  def __post_init__(self):
    _check_positive("model", self, (
        "d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim", "d_ff",
        "vocab_size", "time_embed_dim", "rope_theta", "norm_eps"))
    if self.ffn not in FFNS:
      raise ValueError(f"model.ffn: {self.ffn!r} is not one of {FFNS}")
    if self.first_dense_layers < 0:
      raise ValueError(f"model.first_dense_layers: must be >= 0, got "
                       f"{self.first_dense_layers}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"model.num_heads: {self.num_heads} is not a multiple of "
                       f"model.num_kv_heads={self.num_kv_heads}")
    if self.time_embed_dim % 2:
      raise ValueError(f"model.time_embed_dim: must be even, got {self.time_embed_dim}")
    if self.head_dim % 2:
      raise ValueError(f"model.head_dim: must be even for RoPE, got {self.head_dim}")
    if self.vocab_size < TOKENIZER.vocab_size:
      raise ValueError(f"model.vocab_size: {self.vocab_size} is smaller than the "
                       f"tokenizer's {TOKENIZER.vocab_size}")
    _check_dtype("model.dtype", self.dtype)
    _check_dtype("model.param_dtype", self.param_dtype)
    if not self.hmlp_factors or any(f <= 0 for f in self.hmlp_factors):
      # Their product must also equal layout.video.patch; HMLPStem checks
      # that against the layout.
      raise ValueError(f"model.hmlp_factors: need positive factors, got "
                       f"{self.hmlp_factors}")
    for name, cls in (("moe", MoEConfig), ("flow", FlowConfig), ("kernels", Numerics)):
      if not isinstance(getattr(self, name), cls):
        raise ValueError(f"model.{name}: must be a {cls.__name__} "
                         f"({cls.__name__}.from_config(config.model.{name})), got "
                         f"{type(getattr(self, name)).__name__}")

  @property
  def use_moe(self) -> bool:
    return self.ffn == "moe"

  def is_moe_layer(self, i: int) -> bool:
    """Layer i's FFN: MoE with ffn='moe', except the first_dense_layers."""
    return self.use_moe and i >= self.first_dense_layers

  @classmethod
  def from_config(cls, model) -> "ModelConfig":
    """`config.model` -> ModelConfig; every field is read (none optional)."""
    return cls(
        vocab_size=int(model.vocab_size), d_model=int(model.d_model),
        num_layers=int(model.num_layers), num_heads=int(model.num_heads),
        num_kv_heads=int(model.num_kv_heads), head_dim=int(model.head_dim),
        d_ff=int(model.d_ff), ffn=str(model.ffn),
        first_dense_layers=int(model.first_dense_layers),
        moe=MoEConfig.from_config(model.moe), rope_theta=float(model.rope_theta),
        norm_eps=float(model.norm_eps), dtype=str(model.dtype),
        param_dtype=str(model.param_dtype),
        time_embed_dim=int(model.time_embed_dim),
        hmlp_factors=tuple(int(f) for f in model.hmlp_factors),
        flow=FlowConfig.from_config(model.flow),
        kernels=Numerics.from_config(model.kernels))
