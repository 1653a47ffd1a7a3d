"""One switch for how the model computes: default XLA ops or invariant kernels.

The model calls `matmul`, `rms_norm`, `attention`, `softmax` and `log_softmax`
from here with a `Numerics` value taken from `config.model.kernels`. In
'default' mode they are plain XLA ops: fastest, but their reduction order can
change with the number of rows (see pallas_kernels/README.md). In
'invariant' mode they go through the batch- and chunking-invariant kernels of
this package, on an XLA path or the Pallas path (`impl`, see IMPLS).

Attention convention (all modes): q [B, Sq, Hq, D] attends to k, v
[B, Skv, Hkv, D] (Hq a multiple of Hkv, grouped-query). Query i of batch row b
sits at cache index q_offset[b] + i; key j is visible to it iff
j <= q_offset[b] + i and j < kv_len[b]. Training is q_offset=0, kv_len=S.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

MODES = ("default", "invariant")
# 'xla': XLA ops, matmuls as one padded dot (invariant by measurement on
#   XLA:CPU, see batch_invariant.py); what runs on CPU.
# 'xla_blocked': XLA ops with every matmul in fixed row blocks (invariant by
#   construction, slower on CPU).
# 'pallas': Pallas kernels (compiled on GPU; on CPU only with interpret=True).
IMPLS = ("xla", "xla_blocked", "pallas")


def lowering_for_accelerator() -> bool:
  """True inside `jax.sharding.use_abstract_mesh` with an abstract GPU or TPU.

  That is how a CPU machine lowers for a device it does not have
  (pallas_kernels/gpu_lowering.py): the kernels are compiled there, not
  interpreted, so the CPU check below does not apply.
  """
  device = jax.sharding.get_abstract_mesh().abstract_device
  return device is not None and device.platform not in ("cpu", "interpreter")


def check_pallas_backend(interpret: bool, what: str) -> None:
  """Raises unless a Pallas kernel can run here: compiled, or interpreted.

  `interpret` is explicit (never "interpret when not on GPU"): a guess from
  the backend would also interpret a TPU kernel on a TPU. XLA:CPU cannot
  compile Pallas at all, so asking for it there without interpret mode is a
  configuration error, reported against the field that sets it.
  """
  if not isinstance(interpret, bool):
    raise ValueError(f"model.kernels.interpret: must be True or False, got "
                     f"{interpret!r}")
  if not interpret and lowering_for_accelerator():
    return  # traced for an abstract GPU/TPU (pallas_kernels/gpu_lowering.py)
  if not interpret and jax.default_backend() == "cpu":
    raise ValueError(f"model.kernels.interpret: {what} is a Pallas kernel and the "
                     "backend is CPU, which cannot compile it; set "
                     "model.kernels.interpret=True (interpret=True) to run it in "
                     "Pallas interpret mode, or use an XLA impl")


@dataclasses.dataclass(frozen=True)
class Numerics:
  mode: str = "default"
  impl: str = "xla"
  split_size: int = 64
  block_q: int = 8
  block_rows: int = 8
  # Run the Pallas kernels (impl 'pallas') in interpret mode: True for CPU
  # tests and CPU runs, False (compiled) on an accelerator.
  interpret: bool = False

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"model.kernels.mode: {self.mode!r} is not one of {MODES}")
    if self.impl not in IMPLS:
      raise ValueError(f"model.kernels.impl: {self.impl!r} is not one of {IMPLS}")
    for name in ("split_size", "block_q", "block_rows"):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"model.kernels.{name}: must be positive, got "
                         f"{getattr(self, name)}")
    if self.block_rows == 1 or self.block_q == 1:
      # A one-row block makes XLA pick its matrix-vector kernel, whose summation
      # order differs from the matrix-matrix one (pallas_kernels/README.md).
      raise ValueError("model.kernels.block_rows/block_q: must be >= 2 (a 1-row "
                       "block changes the CPU kernel and breaks invariance)")
    if self.split_size % 8:
      # The Pallas attention kernel walks a split in KV tiles of 8..128 slots.
      raise ValueError(f"model.kernels.split_size: {self.split_size} must be a "
                       "multiple of the KV block size 8")
    if not isinstance(self.interpret, bool):
      raise ValueError(f"model.kernels.interpret: must be True or False, got "
                       f"{self.interpret!r}")

  @classmethod
  def from_config(cls, kernels) -> "Numerics":
    """`config.model.kernels` -> Numerics; every field is read (none optional)."""
    return cls(mode=str(kernels.mode), impl=str(kernels.impl),
               split_size=int(kernels.split_size), block_q=int(kernels.block_q),
               block_rows=int(kernels.block_rows), interpret=kernels.interpret)

  @property
  def invariant(self) -> bool:
    return self.mode == "invariant"


DEFAULT = Numerics()


# ---------------------------------------------------------------------------
# Default (non-invariant) implementations: plain XLA.
# ---------------------------------------------------------------------------
def _rms_norm_default(x, scale, eps):
  xf = x.astype(jnp.float32)
  var = jnp.mean(xf * xf, axis=-1, keepdims=True)
  return (xf * jax.lax.rsqrt(var + eps) * scale.astype(jnp.float32)).astype(x.dtype)


def attention_mask(batch, sq, skv, q_offset, kv_len):
  """[B, Sq, Skv] bool visibility mask of the attention convention above.

  q_offset and kv_len are scalars or int32 [B].
  """
  q_offset = jnp.broadcast_to(jnp.asarray(q_offset, jnp.int32), (batch,))
  kv_len = jnp.broadcast_to(jnp.asarray(kv_len, jnp.int32), (batch,))
  qi = q_offset[:, None, None] + jnp.arange(sq)[None, :, None]
  kj = jnp.arange(skv)[None, None, :]
  return (kj <= qi) & (kj < kv_len[:, None, None])


def _attention_default(q, k, v, q_offset, kv_len):
  b, sq, hq, d = q.shape
  hkv = k.shape[2]
  g = hq // hkv
  qg = q.reshape(b, sq, hkv, g, d).astype(jnp.float32)
  s = jnp.einsum("bqhgd,bkhd->bhgqk", qg, k.astype(jnp.float32)) / jnp.sqrt(
      jnp.float32(d))
  mask = attention_mask(b, sq, k.shape[1], q_offset, kv_len)[:, None, None]
  s = jnp.where(mask, s, -jnp.inf)
  m = jnp.max(s, axis=-1, keepdims=True)
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  p = jnp.exp(s - m)
  l = jnp.sum(p, axis=-1, keepdims=True)
  o = jnp.einsum("bhgqk,bkhd->bqhgd", p / jnp.where(l == 0, 1.0, l),
                 v.astype(jnp.float32))
  return o.reshape(b, sq, hq, d).astype(q.dtype)


# ---------------------------------------------------------------------------
# Public entry points used by the model.
# ---------------------------------------------------------------------------
def matmul(x, w, numerics: Numerics = DEFAULT, w_layout: str = "kn"):
  """x [..., K] @ w with f32 accumulation; result in x.dtype.

  w is [K, N] ('kn') or [N, K] ('nk', x @ w.T: the layout Dense stores,
  which the invariant CPU path needs no padding for).
  """
  from pallas_kernels import batch_invariant
  if numerics.invariant:
    return batch_invariant.matmul(x, w, numerics, w_layout)
  batch_invariant.check_matmul_args(x, w, w_layout)
  # The default mode is the same single dot, without padding or barriers.
  return batch_invariant._matmul_block(x, w, w_layout)


def rms_norm(x, scale, eps: float, numerics: Numerics = DEFAULT):
  if not numerics.invariant:
    return _rms_norm_default(x, scale, eps)
  from pallas_kernels import batch_invariant
  return batch_invariant.rms_norm(x, scale, eps, numerics)


def softmax(x, numerics: Numerics = DEFAULT):
  if not numerics.invariant:
    return jax.nn.softmax(x.astype(jnp.float32), axis=-1).astype(x.dtype)
  from pallas_kernels import batch_invariant
  return batch_invariant.softmax(x, numerics)


def log_softmax(x, numerics: Numerics = DEFAULT):
  if not numerics.invariant:
    return jax.nn.log_softmax(x.astype(jnp.float32), axis=-1).astype(x.dtype)
  from pallas_kernels import batch_invariant
  return batch_invariant.log_softmax(x, numerics)


def attention(q, k, v, *, q_offset, kv_len, numerics: Numerics = DEFAULT):
  """Causal grouped-query attention against a (possibly partly filled) cache."""
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"attention: q, k, v must be [B, S, H, D], got {q.shape}, "
                     f"{k.shape}, {v.shape}")
  if k.shape != v.shape:
    raise ValueError(f"attention: k {k.shape} and v {v.shape} differ")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"attention: num q heads {q.shape[2]} is not a multiple of "
                     f"num kv heads {k.shape[2]}")
  if not numerics.invariant:
    return _attention_default(q, k, v, q_offset, kv_len)
  from pallas_kernels import split_kv_attention
  skv, split = k.shape[1], numerics.split_size
  ragged = False
  if skv == q.shape[1] and skv % split:
    # A whole sequence attending to itself (the training forward) is not a
    # cache, so its length need not be a multiple of the split: pad K/V with
    # masked slots. Masked slots are exact no-ops, so this gives the same
    # bits as a cache of the rounded-up capacity. A real cache of a bad
    # capacity still raises in split_kv_attention. The 'xla' path pads only
    # to RAGGED_ALIGN and folds a short last split (same bits, less work).
    ragged = numerics.impl == "xla"
    align = split_kv_attention.RAGGED_ALIGN if ragged else split
    pad = ((0, 0), (0, -skv % align), (0, 0), (0, 0))
    k, v = jnp.pad(k, pad), jnp.pad(v, pad)
  return split_kv_attention.attention(q, k, v, q_offset=q_offset, kv_len=kv_len,
                                      numerics=numerics, ragged_tail=ragged)
