"""Decoder blocks: RMSNorm, RoPE, grouped-query attention, SwiGLU or MoE.

Attention reads and writes an optional KV cache so the same block serves the
teacher-forced training forward (no cache) and the streaming session (append
a chunk to a preallocated cache). Positions passed to RoPE are global slot
indices; cache indices are separate, so a session can evict old slots and
keep going without re-rotating anything.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from interaction.config import ModelConfig
from interaction.layers import Dense, RMSNorm, rope, silu
from moe.layer import MoE
from pallas_kernels import numerics as nm


class Attention(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, numerics: nm.Numerics, rngs: nnx.Rngs):
    d, h, hkv, hd = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    pd = cfg.param_dtype
    self.q = Dense(d, h * hd, numerics=numerics, rngs=rngs, param_dtype=pd,
                   sharding=(None, "tensor"))
    self.k = Dense(d, hkv * hd, numerics=numerics, rngs=rngs, param_dtype=pd,
                   sharding=(None, "tensor"))
    self.v = Dense(d, hkv * hd, numerics=numerics, rngs=rngs, param_dtype=pd,
                   sharding=(None, "tensor"))
    self.o = Dense(h * hd, d, numerics=numerics, rngs=rngs, param_dtype=pd,
                   sharding=("tensor", None))
    self.h, self.hkv, self.hd = h, hkv, hd
    self.theta = cfg.rope_theta
    self.numerics = numerics

  def __call__(self, x, positions, cache=None, cache_offset=None):
    """x [B, S, d]; positions int [B, S].

    cache: None (attend within x) or {"k", "v": [B, C, Hkv, D]}; the chunk is
    written at cache_offset (int32 [B]) and attends to everything before it.
    Returns (y [B, S, d], new_cache or None).
    """
    b, s, _ = x.shape
    q = rope(self.q(x).reshape(b, s, self.h, self.hd), positions, self.theta)
    k = rope(self.k(x).reshape(b, s, self.hkv, self.hd), positions, self.theta)
    v = self.v(x).reshape(b, s, self.hkv, self.hd)
    if cache is None:
      out = nm.attention(q, k, v, q_offset=0, kv_len=s, numerics=self.numerics)
      new_cache = None
    else:
      offset = jnp.broadcast_to(jnp.asarray(cache_offset, jnp.int32), (b,))
      write = jax.vmap(lambda c, u, o: jax.lax.dynamic_update_slice(
          c, u.astype(c.dtype), (o, 0, 0)))
      ck = write(cache["k"], k, offset)
      cv = write(cache["v"], v, offset)
      out = nm.attention(q, ck.astype(q.dtype), cv.astype(q.dtype),
                         q_offset=offset, kv_len=offset + s,
                         numerics=self.numerics)
      new_cache = {"k": ck, "v": cv}
    return self.o(out.reshape(b, s, self.h * self.hd)), new_cache


class SwiGLU(nnx.Module):

  def __init__(self, d_model: int, d_ff: int, *, numerics: nm.Numerics,
               rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.gate = Dense(d_model, d_ff, numerics=numerics, rngs=rngs,
                      param_dtype=param_dtype, sharding=(None, "tensor"))
    self.up = Dense(d_model, d_ff, numerics=numerics, rngs=rngs,
                    param_dtype=param_dtype, sharding=(None, "tensor"))
    self.down = Dense(d_ff, d_model, numerics=numerics, rngs=rngs,
                      param_dtype=param_dtype, sharding=("tensor", None))

  def __call__(self, x):
    return self.down(silu(self.gate(x)) * self.up(x))


class Block(nnx.Module):
  """Pre-norm decoder block; the FFN is dense SwiGLU or an MoE layer."""

  def __init__(self, cfg: ModelConfig, *, use_moe: bool, numerics: nm.Numerics,
               rngs: nnx.Rngs):
    pd = cfg.param_dtype
    self.attn_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, numerics=numerics,
                             param_dtype=pd)
    self.attn = Attention(cfg, numerics=numerics, rngs=rngs)
    self.ffn_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps, numerics=numerics,
                            param_dtype=pd)
    self.use_moe = use_moe
    if use_moe:
      self.ffn = MoE(cfg.d_model, cfg.moe, numerics=numerics, rngs=rngs,
                     dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(pd))
    else:
      self.ffn = SwiGLU(cfg.d_model, cfg.d_ff, numerics=numerics, rngs=rngs,
                        param_dtype=pd)

  def __call__(self, x, positions, cache=None, cache_offset=None):
    h, new_cache = self.attn(self.attn_norm(x), positions, cache, cache_offset)
    x = x + h
    if self.use_moe:
      f, aux = self.ffn(self.ffn_norm(x))
    else:
      f, aux = self.ffn(self.ffn_norm(x)), {}
    return x + f, new_cache, aux
