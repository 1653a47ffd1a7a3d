"""Encoder-free input embedders: dMel bag of embeddings, hMLP patch stem, text.

Every slot's embedding is content + stream embedding + time embedding
(`SlotEmbedding.combine`), computed by the same code in training and in the
streaming session so that both see identical bits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from interaction.layers import Dense, RMSNorm, sinusoid
from interaction.layout import LayoutSpec, NUM_STREAMS
from pallas_kernels import numerics as nm


class DMelEmbed(nnx.Module):
  """Bag of embeddings over (stacked frame, mel channel, dMel bin).

  A slot holds `frames_per_position` x `n_mels` integer bins. Each
  (frame, channel, bin) triple has its own d_model vector and the slot's
  embedding is their sum. We compute the sum as one_hot(bins) @ table: the
  same result as a gather-and-sum, but one fixed-shape matmul, which keeps the
  reduction order under the numerics switch.
  """

  def __init__(self, spec: LayoutSpec, d_model: int, *, numerics: nm.Numerics,
               rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.spec = spec
    n_rows = spec.frames_per_position * spec.n_mels * spec.dmel_bins
    self.table = Dense(n_rows, d_model, numerics=numerics, rngs=rngs,
                       param_dtype=param_dtype)

  def __call__(self, bins, dtype=jnp.float32):
    """bins int [..., fpp * n_mels] -> [..., d_model]."""
    onehot = jax.nn.one_hot(bins, self.spec.dmel_bins, dtype=dtype)
    return self.table(onehot.reshape(bins.shape[:-1] + (-1,)))


class HMLPStem(nnx.Module):
  """Hierarchical per-patch MLP (Touvron et al. 2022) for 40x40 patches.

  The deit hMLP stem is a stack of convolutions whose kernel equals their
  stride, i.e. an MLP applied within a patch at growing scales with no mixing
  across patches. We factor the 40-pixel side into `factors` (default 4*2*5):
  stage 1 embeds 4x4 pixel blocks, stage 2 merges 2x2 of those, stage 3 merges
  the remaining 5x5 into one d_model vector. RMSNorm replaces BatchNorm so a
  frame's embedding never depends on its batch.
  """

  def __init__(self, patch: int, factors, d_model: int, *, numerics: nm.Numerics,
               rngs: nnx.Rngs, eps: float = 1e-6, param_dtype=jnp.float32):
    factors = tuple(int(f) for f in factors)
    prod = 1
    for f in factors:
      prod *= f
    if prod != patch:
      raise ValueError(f"model.hmlp_factors: {factors} multiply to {prod}, "
                       f"not the patch size {patch}")
    self.factors = factors
    self.patch = patch
    width = max(d_model // 4, 8)
    dims_in, dims_out = [], []
    d_in = factors[0] * factors[0] * 3
    for i, f in enumerate(factors):
      if i > 0:
        d_in = f * f * width
      d_out = d_model if i == len(factors) - 1 else width
      dims_in.append(d_in)
      dims_out.append(d_out)
    self.stages = nnx.List([
        Dense(a, b, numerics=numerics, rngs=rngs, use_bias=True,
              param_dtype=param_dtype) for a, b in zip(dims_in, dims_out)])
    self.norms = nnx.List([
        RMSNorm(b, eps=eps, numerics=numerics, param_dtype=param_dtype)
        for b in dims_out])

  def __call__(self, patches, dtype=jnp.float32):
    """patches [..., patch, patch, 3] (uint8 or float) -> [..., d_model]."""
    lead = patches.shape[:-3]
    x = patches.astype(dtype)
    if jnp.issubdtype(patches.dtype, jnp.integer):
      x = x / 255.0 - 0.5
    # Split each side into (outer ... inner) factors: y = ((a*f1 + b)*f0 + c).
    rev = self.factors[::-1]
    x = x.reshape(lead + rev + rev + (3,))
    n = len(rev)
    # Interleave y/x factors from outer to inner: (y_out, x_out, ..., y_in, x_in, c).
    base = len(lead)
    perm = list(range(base))
    for i in range(n):
      perm += [base + i, base + n + i]
    perm.append(base + 2 * n)
    x = jnp.transpose(x, perm)
    for i, (stage, norm) in enumerate(zip(self.stages, self.norms)):
      # Merge the innermost y/x factor pair (and channels) into features.
      shape = x.shape
      x = x.reshape(shape[:-3] + (shape[-3] * shape[-2] * shape[-1],))
      x = norm(stage(x))
      if i < len(self.stages) - 1:
        x = jax.nn.gelu(x)
    return x


class SlotEmbedding(nnx.Module):
  """Stream and time embeddings added to every slot's content embedding."""

  def __init__(self, d_model: int, time_dim: int, *, numerics: nm.Numerics,
               rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.stream = nnx.Embed(NUM_STREAMS, d_model, rngs=rngs,
                            param_dtype=param_dtype)
    self.time_proj = Dense(time_dim, d_model, numerics=numerics, rngs=rngs,
                           param_dtype=param_dtype)
    self.time_dim = time_dim

  def combine(self, content, stream_ids, seconds):
    """content [B, N, d]; stream_ids int [N] or [B, N]; seconds f32 [B, N]."""
    # Periods from 0.4 s (two micro-turns) to ~5.5 h, so a 2-hour session
    # still gets distinct, smoothly varying time features.
    feats = sinusoid(seconds, self.time_dim, 0.4, 20000.0)
    t = self.time_proj(feats.astype(content.dtype))
    s = self.stream(jnp.asarray(stream_ids)).astype(content.dtype)
    return content + s + t
