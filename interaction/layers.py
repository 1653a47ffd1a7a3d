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
import numpy as np
import flax
from flax import nnx

from pallas_kernels import numerics as nm

# Parameters carry logical sharding names (e.g. 'expert', 'tensor'); they are
# placed on a mesh explicitly by the scale-out code, not eagerly at creation,
# so single-device runs and eval_shape need no mesh. use_eager_sharding's
# stack is thread-local; the config default also reaches threads started
# later (the session server builds models off the main thread).
flax.config.update("flax_always_shard_variable", False)
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


def _fence(x):
  """Keeps XLA from folding x's producers into what follows (or from
  constant-folding through it): see `sinusoid`."""
  return jax.lax.optimization_barrier(x)


def geometric_freqs(half: int, min_period: float, max_period: float,
                    scale: float = 1.0) -> np.ndarray:
  """f32 [half] angular frequencies scale * 2 pi / period, periods geometric
  from min_period to max_period. Computed on the host in float64 and rounded
  once, so every graph embeds the same literal (XLA would otherwise fold the
  constant chain into a neighbouring multiply in some shapes only)."""
  periods = min_period * (max_period / min_period) ** (
      np.arange(half, dtype=np.float64) / max(half - 1, 1))
  return (scale * 2 * np.pi / periods).astype(np.float32)


def sinusoid(values, dim: int, min_period: float, max_period: float,
             scale: float = 1.0):
  """[...] f32 values * scale -> [..., dim] sin/cos features, geometric periods.

  Pass a scale here rather than multiplying the values first: the angle is
  then one f32 multiply of the fenced values by a host-computed frequency.
  Issue 12: with `sinusoid(t * 1000.0, ...)` XLA folded 1000 * 2 pi into one
  constant only when the batch dim was 1 (it became a scalar), which changed
  the rounding, so a session alone and in a batch got different flow-head
  bits. The fence also keeps sin/cos from being constant-folded (with the
  host's libm) in a graph where the values are constants (the training
  forward's slot times) but not in one where they are traced (a session).
  """
  if dim % 2:
    raise ValueError(f"sinusoid: dim must be even, got {dim}")
  freqs = geometric_freqs(dim // 2, min_period, max_period, scale)
  angles = _fence(jnp.asarray(values, jnp.float32))[..., None] * freqs
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def rope_freqs(head_dim: int, theta: float) -> np.ndarray:
  """f32 [head_dim // 2] RoPE inverse frequencies theta^(-2i/d), host-computed
  in float64 (one literal in every graph, see `geometric_freqs`)."""
  half = head_dim // 2
  return (1.0 / theta ** (np.arange(half, dtype=np.float64) * 2.0 / head_dim)
          ).astype(np.float32)


def rope(x, positions, theta: float):
  """Rotary embedding on x [B, S, H, D] at integer positions [B, S].

  The positions are fenced for the reason in `sinusoid`: the training
  forward's positions are constants, a session's are traced, and both must
  compute the angles and their sin/cos with the same code.
  """
  d = x.shape[-1]
  half = d // 2
  angles = _fence(positions.astype(jnp.float32))[..., None] * rope_freqs(
      d, theta)                                             # [B, S, half]
  sin = jnp.sin(angles)[:, :, None, :]
  cos = jnp.cos(angles)[:, :, None, :]
  xf = x.astype(jnp.float32)
  x1, x2 = xf[..., :half], xf[..., half:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def silu(x):
  return x * jax.nn.sigmoid(x)
