"""Basic layers that route every reduction through `pallas_kernels.numerics`.

Flax's own Linear/RMSNorm call XLA dots and reductions directly; those change
summation order with the number of rows, which would break the determinism
contract in 'invariant' mode. These thin layers compute through the one
switch. Dense stores its weight as [d_out, d_in] (PyTorch's Linear layout):
XLA:CPU's YNNPACK dots then take one summation order at every row count
(pallas_kernels/batch_invariant.py), which keeps the invariant path cheap.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pallas_kernels import numerics as nm

# Parameters carry logical sharding names (e.g. 'expert', 'tensor'); they are
# placed on a mesh explicitly by the scale-out code, not eagerly at creation,
# so single-device runs and eval_shape need no mesh.
nnx.use_eager_sharding(False)


def _dtype(name_or_dtype):
  return jnp.dtype(name_or_dtype)


class Dense(nnx.Module):
  """y = x @ weight.T (+ b), weight [d_out, d_in], through numerics.matmul.

  `sharding` names the (d_in, d_out) axes, as for a [d_in, d_out] kernel.
  """

  def __init__(self, d_in: int, d_out: int, *, numerics: nm.Numerics,
               rngs: nnx.Rngs, use_bias: bool = False, zero_init: bool = False,
               param_dtype=jnp.float32, sharding=(None, None)):
    init = (nnx.initializers.zeros if zero_init
            else nnx.initializers.variance_scaling(
                1.0, "fan_in", "truncated_normal", in_axis=-1, out_axis=-2))
    self.weight = nnx.Param(
        init(rngs.params(), (d_out, d_in), _dtype(param_dtype)),
        sharding_names=tuple(reversed(tuple(sharding))))
    self.b = (nnx.Param(jnp.zeros((d_out,), _dtype(param_dtype)))
              if use_bias else None)
    self.numerics = numerics

  def __call__(self, x):
    y = nm.matmul(x, self.weight[...].astype(x.dtype), self.numerics,
                  w_layout="nk")
    if self.b is not None:
      y = y + self.b[...].astype(y.dtype)
    return y


class RMSNorm(nnx.Module):

  def __init__(self, dim: int, *, eps: float, numerics: nm.Numerics,
               use_scale: bool = True, param_dtype=jnp.float32):
    self.scale = (nnx.Param(jnp.ones((dim,), _dtype(param_dtype)))
                  if use_scale else None)
    self.dim = dim
    self.eps = eps
    self.numerics = numerics

  def __call__(self, x):
    scale = (self.scale[...] if self.scale is not None
             else jnp.ones((self.dim,), jnp.float32))
    return nm.rms_norm(x, scale, self.eps, self.numerics)


def sinusoid(values, dim: int, min_period: float, max_period: float):
  """[...] f32 values -> [..., dim] sin/cos features with geometric periods."""
  if dim % 2:
    raise ValueError(f"sinusoid: dim must be even, got {dim}")
  half = dim // 2
  periods = min_period * (max_period / min_period) ** (
      jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
  angles = values[..., None].astype(jnp.float32) * (2 * jnp.pi / periods)
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def rope(x, positions, theta: float):
  """Rotary embedding on x [B, S, H, D] at integer positions [B, S]."""
  d = x.shape[-1]
  half = d // 2
  inv_freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) * 2.0 / d))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, S, half]
  sin = jnp.sin(angles)[:, :, None, :]
  cos = jnp.cos(angles)[:, :, None, :]
  xf = x.astype(jnp.float32)
  x1, x2 = xf[..., :half], xf[..., half:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def silu(x):
  return x * jax.nn.sigmoid(x)
