"""Tensor- and sequence-parallel decoder stack in `shard_map`, with fixed bits.

  out = parallel_forward(config, params, batch, mesh, deterministic=True)
  # the model's forward (text_logits, audio_cond), its decoder stack run
  # tensor-parallel over the mesh's `tensor` axis and sequence-parallel over
  # its `sequence` axis (either may be 1), the batch over `data`.

Every block is computed as `chunks` fixed pieces (default: the model's KV
head count): piece c holds query heads [c*H/C, (c+1)*H/C) with their KV heads
and d_ff units [c*F/C, (c+1)*F/C) of the SwiGLU. Each piece gives an f32
partial of the block's attention output and of its FFN output, and the
partials are added in piece order with `pallas_kernels.collectives`:

  tensor-parallel  device t computes pieces [t*C/tp, (t+1)*C/tp) on all of its
                   rows; the partials are all-gathered over `tensor` and
                   added in piece order (the deterministic all-reduce);
  sequence-parallel each device computes every piece on its own rows (its
                   slice of the sequence; K and V are all-gathered over
                   `sequence` so each query sees every earlier key, at its
                   global position) and adds them in the same order.

Because the partials and the order of the sum are the same, and the invariant
kernels (`model.kernels.mode='invariant'`) give a row the same bits whatever
rows share the call, both layouts, and any mix of them, give identical bits.
`deterministic=False` is the plain path for comparison: one matmul over each
device's whole shard and `psum` (tensor-parallel), or one matmul over the whole
dimension (sequence-parallel): the sums are associated differently and the
layouts differ in the low bits.

MoE blocks are split the same way over the experts' d_ff (every device routes
every one of its tokens, with the whole router; the routed experts run through
gather_gemv, whose per-token bits do not depend on the other tokens); the
expert-parallel layout (experts split over `expert`, tokens exchanged
explicitly) is moe/expert_parallel.py's, taken by the MoE layer under
experiments/mesh.py's MeshTrainer. Embeddings and heads run replicated around the stack
(their inputs and outputs are whole).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from interaction import params as params_lib
from interaction import sharding as sh
from interaction.config import ModelConfig
from interaction.layers import rope, silu
from interaction.layout import Stream
from pallas_kernels import collectives
from pallas_kernels import numerics as nm


def _rows(w, c, n):
  """Piece c of an [N, K] ('nk') weight cut into pieces of n rows."""
  return w[c * n:(c + 1) * n]


def _cols(w, c, n):
  return w[:, c * n:(c + 1) * n]


def _moe_partials(p, hn, cfg: ModelConfig, num: nm.Numerics, pieces, piece_f, piece_s):
  """Per-piece f32 partials of an MoE layer: every token routed (the router
  is whole on every device), piece c holding d_ff units [c*f/C, (c+1)*f/C)
  of every routed expert and of the shared experts. gather_gemv computes each
  token on its own with fixed shapes, so a token's bits do not depend on the
  rows beside it (the sequence-parallel slices)."""
  from moe import layer as moe_layer
  from moe import router as router_lib
  b, sl, d = hn.shape
  mcfg = cfg.moe
  dtype = jnp.dtype(cfg.dtype)
  x2d = hn.reshape(b * sl, d).astype(dtype)
  rdt = jnp.dtype(mcfg.router_dtype)
  logits = nm.matmul(x2d.astype(rdt), p["w_router"].astype(rdt), num)
  routing = router_lib.route(logits, mcfg.top_k, mcfg.gating, num)
  out = []
  for c in pieces:
    sl_f = slice(c * piece_f, (c + 1) * piece_f)
    y = moe_layer.ffn_gather_gemv(
        x2d, routing, p["w_gate"][:, :, sl_f].astype(dtype),
        p["w_up"][:, :, sl_f].astype(dtype), p["w_down"][:, sl_f, :].astype(dtype),
        kernel="xla")
    if "shared_gate" in p:
      sl_s = slice(c * piece_s, (c + 1) * piece_s)
      g = nm.matmul(x2d, p["shared_gate"][:, sl_s].astype(dtype), num).astype(jnp.float32)
      u = nm.matmul(x2d, p["shared_up"][:, sl_s].astype(dtype), num).astype(jnp.float32)
      hs = (jax.nn.silu(g) * u).astype(dtype)
      y = y + nm.matmul(hs, p["shared_down"][sl_s].astype(dtype), num).astype(jnp.float32)
    out.append(y.reshape(b, sl, d))
  return out


def _block_partials(p, x, positions, cfg: ModelConfig, num: nm.Numerics, pieces,
                    piece_heads, piece_ff, piece_moe, piece_shared, seq_axis, seq_size):
  """(attention partials, ffn function) of one block on local rows.

  p: the block's (local) parameters; x [B, Sl, d] local rows. pieces: the
  local piece indices (0..n-1 into the local weights; the plain path has
  one piece of all local heads and units).
  """
  b, sl, d = x.shape
  hd = cfg.head_dim
  g = cfg.num_heads // cfg.num_kv_heads
  xn = nm.rms_norm(x, p["attn_norm"]["scale"], cfg.norm_eps, num)
  wq, wk, wv, wo = (p["attn"][n]["weight"] for n in ("q", "k", "v", "o"))
  if seq_size > 1:
    q_offset = jax.lax.axis_index(seq_axis) * sl
  else:
    q_offset = 0
  skv = sl * seq_size
  parts = []
  for c in pieces:
    hq, hk = piece_heads, piece_heads // g
    q = rope(nm.matmul(xn, _rows(wq, c, hq * hd).astype(x.dtype), num, "nk")
             .reshape(b, sl, hq, hd), positions, cfg.rope_theta)
    k = rope(nm.matmul(xn, _rows(wk, c, hk * hd).astype(x.dtype), num, "nk")
             .reshape(b, sl, hk, hd), positions, cfg.rope_theta)
    v = nm.matmul(xn, _rows(wv, c, hk * hd).astype(x.dtype), num, "nk").reshape(b, sl, hk, hd)
    if seq_size > 1:  # every earlier key, in global order (exact: a concatenation)
      k = jax.lax.all_gather(k, seq_axis, axis=1, tiled=True)
      v = jax.lax.all_gather(v, seq_axis, axis=1, tiled=True)
    if num.invariant:
      # K/V as a cache of whole splits in every layout (the training
      # forward's ragged padding applies only when Sq == Skv, never to a
      # slice of the queries), so all layouts take the same kernel path.
      pad = -skv % num.split_size
      if pad:
        k = jnp.pad(k, ((0, 0), (0, pad), (0, 0), (0, 0)))
        v = jnp.pad(v, ((0, 0), (0, pad), (0, 0), (0, 0)))
    o = nm.attention(q, k, v, q_offset=q_offset, kv_len=skv, numerics=num)
    parts.append(nm.matmul(o.reshape(b, sl, hq * hd), _cols(wo, c, hq * hd).astype(x.dtype),
                           num, "nk").astype(jnp.float32))

  def ffn(h):
    hn = nm.rms_norm(h, p["ffn_norm"]["scale"], cfg.norm_eps, num)
    if "w_router" in p["ffn"]:
      return _moe_partials(p["ffn"], hn, cfg, num, pieces, piece_moe, piece_shared)
    wg, wu, wd = (p["ffn"][n]["weight"] for n in ("gate", "up", "down"))
    out = []
    for c in pieces:
      gg = nm.matmul(hn, _rows(wg, c, piece_ff).astype(h.dtype), num, "nk")
      uu = nm.matmul(hn, _rows(wu, c, piece_ff).astype(h.dtype), num, "nk")
      out.append(nm.matmul(silu(gg) * uu, _cols(wd, c, piece_ff).astype(h.dtype),
                           num, "nk").astype(jnp.float32))
    return out
  return parts, ffn


def _stack_fn(cfg: ModelConfig, num: nm.Numerics, chunks: int, tp: int, sp: int,
              deterministic: bool):
  """The per-device decoder stack for shard_map."""
  per_dev = chunks // tp

  def reduce(parts, dtype):
    if deterministic:
      local = jnp.stack(parts, axis=0)                         # [C/tp, B, Sl, d]
      if tp > 1:
        local = jax.lax.all_gather(local, "tensor", axis=0, tiled=True)  # [C, ...]
      return collectives.fixed_order_sum(local, dtype=dtype)
    (part,) = parts
    if tp > 1:
      part = collectives.all_reduce(part, "tensor", deterministic=False)
    return part.astype(dtype)

  def run(blocks, x, positions):
    n = chunks if deterministic else tp       # pieces of each dimension overall
    pieces = range(per_dev if deterministic else 1)
    piece_heads, piece_ff = cfg.num_heads // n, cfg.d_ff // n
    piece_moe = cfg.moe.d_ff // n
    piece_shared = cfg.moe.num_shared_experts * cfg.moe.d_ff // n
    for i in range(len(blocks)):
      p = blocks[i]
      attn, ffn = _block_partials(p, x, positions, cfg, num, pieces, piece_heads,
                                  piece_ff, piece_moe, piece_shared, "sequence", sp)
      x = x + reduce(attn, x.dtype)
      x = x + reduce(ffn(x), x.dtype)
    return x
  return run


def _block_specs(tp: int, moe: bool, shared: bool):
  t = "tensor" if tp > 1 else None
  dense_rows = {"weight": P(t, None)}       # [out, in]: the out rows are split
  dense_cols = {"weight": P(None, t)}       # [d, in]: the in columns are split
  if moe:
    ffn = {"w_router": P(), "w_gate": P(None, None, t), "w_up": P(None, None, t),
           "w_down": P(None, t, None)}
    if shared:
      ffn.update(shared_gate=P(None, t), shared_up=P(None, t), shared_down=P(t, None))
  else:
    ffn = {"gate": dense_rows, "up": dense_rows, "down": dense_cols}
  return {"attn_norm": {"scale": P()}, "ffn_norm": {"scale": P()},
          "attn": {"q": dense_rows, "k": dense_rows, "v": dense_rows, "o": dense_cols},
          "ffn": ffn}


def check_parallel_fits(cfg: ModelConfig, sizes, chunks: int, seq_len: int, batch: int):
  problems = []
  tp, sp = sizes.get("tensor", 1), sizes.get("sequence", 1)
  if chunks % tp:
    problems.append(f"chunks={chunks} is not divisible by tensor={tp}")
  dims = [("model.num_kv_heads", cfg.num_kv_heads), ("model.num_heads", cfg.num_heads)]
  if any(not cfg.is_moe_layer(i) for i in range(cfg.num_layers)):
    dims.append(("model.d_ff", cfg.d_ff))
  if cfg.use_moe:
    dims.append(("model.moe.d_ff", cfg.moe.d_ff))
  for what, n in dims:
    if n % chunks:
      problems.append(f"{what}={n} is not divisible by chunks={chunks}")
    if n % tp:
      problems.append(f"{what}={n} is not divisible by tensor={tp}")
  if seq_len % sp:
    problems.append(f"sequence length {seq_len} is not divisible by sequence={sp}")
  dp = sh.batch_size_divisor(sizes)
  if batch % dp:
    problems.append(f"batch {batch} is not divisible by data*fsdp*expert={dp}")
  if problems:
    raise ValueError(f"mesh {sh.mesh_string(sizes)!r}: " + "; ".join(problems))


def parallel_backbone(config, blocks, x, positions, mesh, *, deterministic: bool = True,
                      chunks: int | None = None):
  """The decoder stack (before the final norm) on `mesh`. blocks: the pure-dict
  parameters of the model's blocks (params['blocks']); x [B, S, d]."""
  cfg = ModelConfig.from_config(config.model)
  num = cfg.kernels
  sizes = sh.mesh_sizes(mesh)
  tp, sp = sizes["tensor"], sizes["sequence"]
  chunks = int(chunks or cfg.num_kv_heads)
  check_parallel_fits(cfg, sizes, chunks, x.shape[1], x.shape[0])
  bax = sh.batch_axes(sizes)
  s_ax = "sequence" if sp > 1 else None
  keys = sorted(blocks, key=int) if isinstance(blocks, dict) else range(len(blocks))
  blocks = [blocks[k] for k in keys]
  specs = [_block_specs(tp, cfg.is_moe_layer(i), cfg.moe.num_shared_experts > 0)
           for i in range(len(blocks))]
  fn = jax.shard_map(_stack_fn(cfg, num, chunks, tp, sp, deterministic), mesh=mesh,
                     in_specs=(specs, P(bax, s_ax, None), P(bax, s_ax)),
                     out_specs=P(bax, s_ax, None), check_vma=False)
  return fn(blocks, x, positions)


def parallel_forward(config, params, batch, mesh, *, deterministic: bool = True,
                     chunks: int | None = None):
  """The model's teacher-forced forward with its stack on `mesh` (jit it).

  Returns {'hidden' [B, S, d] (after the final norm), 'text_logits', 'audio_cond'}
  like InteractionModel.forward (without the MoE auxiliary losses)."""
  model = params_lib.ModelBinder(config)(params)
  x, positions = model.embed_episode(batch)
  h = parallel_backbone(config, params["blocks"], x, positions, mesh,
                        deterministic=deterministic, chunks=chunks)
  h = jax.lax.with_sharding_constraint(h, NamedSharding(mesh, P()))
  h = model.final_norm(h)
  t = batch["model_text"].shape[1]
  text_idx = model.spec.predictor_index(t, Stream.MODEL_TEXT)
  audio_idx = model.spec.predictor_index(t, Stream.MODEL_AUDIO)
  text_h = jnp.take(h, jnp.asarray(text_idx.reshape(-1)), axis=1)
  audio_h = jnp.take(h, jnp.asarray(audio_idx.reshape(-1)), axis=1)
  b, d = h.shape[0], h.shape[-1]
  return {"hidden": h,
          "text_logits": model.text_logits(text_h).reshape(b, t, text_idx.shape[1], -1),
          "audio_cond": audio_h.reshape(b, t, audio_idx.shape[1], d)}
