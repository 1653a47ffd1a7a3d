"""Flow-matching head: predicts a model_audio slot's stacked mel frames.

After MAR's SimpleMLPAdaLN (Li et al. 2024): the noisy sample is projected in,
conditioned on the transformer's hidden state plus a timestep embedding, run
through residual blocks with adaptive-norm shift/scale/gate, and projected out.
Norms are RMSNorm through the numerics switch (so a slot's output does not
depend on its batch companions) rather than LayerNorm.

Training follows Lipman et al. (CondOT): x_t = (1 - t) x0 + t x1, target
x1 - x0. Sampling integrates x' = v(x, t, h) with `num_steps` Euler steps.
Mel values are scaled from [dmel_min, dmel_max] to [-1, 1] for the head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from interaction.config import FlowConfig
from interaction.layers import Dense, RMSNorm, silu, sinusoid
from pallas_kernels import numerics as nm


class ResBlock(nnx.Module):

  def __init__(self, width: int, *, numerics: nm.Numerics, rngs: nnx.Rngs,
               param_dtype=jnp.float32):
    self.norm = RMSNorm(width, eps=1e-6, numerics=numerics, use_scale=False)
    self.fc1 = Dense(width, width, numerics=numerics, rngs=rngs, use_bias=True,
                     param_dtype=param_dtype)
    self.fc2 = Dense(width, width, numerics=numerics, rngs=rngs, use_bias=True,
                     param_dtype=param_dtype)
    # Zero-initialised modulation: every block starts as the identity (MAR).
    self.ada = Dense(width, 3 * width, numerics=numerics, rngs=rngs,
                     use_bias=True, zero_init=True, param_dtype=param_dtype)

  def __call__(self, x, cond):
    shift, scale, gate = jnp.split(self.ada(silu(cond)), 3, axis=-1)
    h = self.norm(x) * (1 + scale) + shift
    h = self.fc2(silu(self.fc1(h)))
    return x + gate * h


class FlowHead(nnx.Module):

  def __init__(self, d_model: int, d_out: int, cfg: FlowConfig, *,
               numerics: nm.Numerics, rngs: nnx.Rngs, param_dtype=jnp.float32):
    w = int(cfg.width)
    self.d_out = d_out
    self.time_dim = min(256, w)
    self.inp = Dense(d_out, w, numerics=numerics, rngs=rngs, use_bias=True,
                     param_dtype=param_dtype)
    self.cond = Dense(d_model, w, numerics=numerics, rngs=rngs, use_bias=True,
                      param_dtype=param_dtype)
    self.t1 = Dense(self.time_dim, w, numerics=numerics, rngs=rngs,
                    use_bias=True, param_dtype=param_dtype)
    self.t2 = Dense(w, w, numerics=numerics, rngs=rngs, use_bias=True,
                    param_dtype=param_dtype)
    self.blocks = nnx.List([
        ResBlock(w, numerics=numerics, rngs=rngs, param_dtype=param_dtype)
        for _ in range(int(cfg.depth))])
    self.final_norm = RMSNorm(w, eps=1e-6, numerics=numerics, use_scale=False)
    self.final_ada = Dense(w, 2 * w, numerics=numerics, rngs=rngs, use_bias=True,
                           zero_init=True, param_dtype=param_dtype)
    self.out = Dense(w, d_out, numerics=numerics, rngs=rngs, use_bias=True,
                     zero_init=True, param_dtype=param_dtype)

  def __call__(self, x_t, t, h):
    """Velocity v(x_t, t | h). x_t [..., d_out], t [...], h [..., d_model]."""
    # t in [0, 1] scaled by 1000 (MAR) inside sinusoid, in its host-side
    # frequencies: a `t * 1000.0` here was folded by shape (issue 12).
    temb = sinusoid(t, self.time_dim, 1.0, 10000.0, scale=1000.0).astype(
        x_t.dtype)
    cond = self.cond(h) + self.t2(silu(self.t1(temb)))
    x = self.inp(x_t)
    for block in self.blocks:
      x = block(x, cond)
    shift, scale = jnp.split(self.final_ada(silu(cond)), 2, axis=-1)
    x = self.final_norm(x) * (1 + scale) + shift
    return self.out(x)


def flow_matching_loss(head: FlowHead, h, x1, mask, rng, batch_mul: int = 1):
  """Mean squared velocity error over masked slots.

  h [N, d_model] conditions, x1 [N, d_out] targets in [-1, 1], mask [N] bool.
  Each target gets `batch_mul` independent (t, x0) draws.
  """
  h = jnp.repeat(h, batch_mul, axis=0)
  x1 = jnp.repeat(x1, batch_mul, axis=0)
  mask = jnp.repeat(mask, batch_mul, axis=0)
  k_t, k_x = jax.random.split(rng)
  t = jax.random.uniform(k_t, x1.shape[:1], dtype=x1.dtype)
  x0 = jax.random.normal(k_x, x1.shape, dtype=x1.dtype)
  x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
  v = head(x_t, t, h)
  err = jnp.mean(jnp.square(v - (x1 - x0)).astype(jnp.float32), axis=-1)
  w = mask.astype(jnp.float32)
  return jnp.sum(err * w) / jnp.maximum(jnp.sum(w), 1.0)


def euler_sample(head: FlowHead, h, noise, num_steps: int):
  """Integrates from noise (t=0) to a sample (t=1) in `num_steps` Euler steps."""
  if num_steps < 1:
    raise ValueError(f"model.flow.num_steps: must be >= 1, got {num_steps}")
  dt = 1.0 / num_steps

  def step(x, i):
    t = jnp.full(x.shape[:-1], i * dt, dtype=x.dtype)
    return x + dt * head(x, t, h), None

  x, _ = jax.lax.scan(step, noise, jnp.arange(num_steps, dtype=noise.dtype))
  return x


def mel_to_unit(mel, lo: float, hi: float):
  """log10 mel in [lo, hi] -> [-1, 1] (clipped)."""
  mel = jnp.clip(mel, lo, hi)
  return (mel - (lo + hi) / 2) / ((hi - lo) / 2)


def unit_to_mel(x, lo: float, hi: float):
  return jnp.clip(x, -1.0, 1.0) * ((hi - lo) / 2) + (lo + hi) / 2
