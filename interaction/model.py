"""The micro-turn interaction model: embedders, decoder stack, text and flow heads.

`forward(batch)` is the teacher-forced training pass over whole episodes.
The streaming session (interaction/streaming.py) drives the same modules one
block or slot at a time through `embed_slots` and `backbone` with a KV cache;
both paths build each slot's embedding with the same code, so with the
invariant kernels they agree bit for bit.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from interaction import layout as lo
from interaction.config import ModelConfig
from interaction.embedders import DMelEmbed, HMLPStem, SlotEmbedding
from interaction.flow_head import FlowHead
from interaction.layers import Dense, RMSNorm
from interaction.layout import LayoutSpec, Stream
from interaction.transformer import Block


def validate_config(config) -> LayoutSpec:
  """Checks the model and layout sections before any work starts (the typed
  constructors hold the checks); returns the layout."""
  spec = LayoutSpec.from_config(config.layout)
  ModelConfig.from_config(config.model)
  return spec


class InteractionModel(nnx.Module):

  def __init__(self, config, spec: LayoutSpec | None = None, *, rngs: nnx.Rngs):
    """config: a ModelConfig with its `spec`, or the whole ConfigDict (its
    model and layout sections are converted here, once)."""
    if isinstance(config, ModelConfig):
      if spec is None:
        raise ValueError("InteractionModel: a ModelConfig needs its LayoutSpec "
                         "(spec=LayoutSpec.from_config(config.layout))")
      cfg = config
    else:
      if spec is not None:
        raise ValueError("InteractionModel: pass spec only with a ModelConfig; "
                         "a ConfigDict carries its own layout")
      spec = LayoutSpec.from_config(config.layout)
      cfg = ModelConfig.from_config(config.model)
    self.spec = spec
    self.numerics = cfg.kernels
    self.dtype = jnp.dtype(cfg.dtype)
    d = cfg.d_model
    pd = jnp.dtype(cfg.param_dtype)
    num = self.numerics
    self.dmel = DMelEmbed(spec, d, numerics=num, rngs=rngs, param_dtype=pd)
    n_video = spec.count(Stream.VIDEO)
    if n_video:
      self.hmlp = HMLPStem(spec.patch, cfg.hmlp_factors, d, numerics=num,
                           rngs=rngs, eps=cfg.norm_eps, param_dtype=pd)
      init = nnx.initializers.normal(0.02)
      self.patch_pos = nnx.Param(init(rngs.params(), (n_video, d), pd))
      self.video_empty = nnx.Param(init(rngs.params(), (n_video, d), pd))
    else:
      self.hmlp = None
      self.patch_pos = None
      self.video_empty = None
    self.text = nnx.Embed(cfg.vocab_size, d, rngs=rngs, param_dtype=pd)
    self.slot = SlotEmbedding(d, cfg.time_embed_dim, numerics=num, rngs=rngs,
                              param_dtype=pd)
    self.blocks = nnx.List([
        Block(cfg, use_moe=cfg.is_moe_layer(i), numerics=num, rngs=rngs)
        for i in range(cfg.num_layers)])
    self.final_norm = RMSNorm(d, eps=cfg.norm_eps, numerics=num, param_dtype=pd)
    self.unembed = Dense(d, cfg.vocab_size, numerics=num, rngs=rngs,
                         param_dtype=pd)
    self.flow = FlowHead(d, spec.frames_per_position * spec.n_mels, cfg.flow,
                         numerics=num, rngs=rngs, param_dtype=pd)
    self.flow_steps = cfg.flow.num_steps

  # ---- embeddings ----------------------------------------------------------
  def content(self, streams: dict) -> dict:
    """Content embeddings {Stream: [B, T, n, d]} from raw per-turn stream arrays.

    `streams` holds any subset of the batch-contract keys (see layout.py).
    """
    spec, dt = self.spec, self.dtype
    out = {}
    if "user_audio" in streams:
      out[Stream.USER_AUDIO] = self.dmel(
          lo.stack_audio_frames(spec, streams["user_audio"]), dt)
    if "model_audio" in streams:
      out[Stream.MODEL_AUDIO] = self.dmel(
          lo.stack_audio_frames(spec, streams["model_audio"]), dt)
    if spec.count(Stream.VIDEO) and "video" in streams:
      out[Stream.VIDEO] = self.embed_video(streams["video"],
                                           streams["video_present"])
    for key, stream in (("user_text", Stream.USER_TEXT),
                        ("background_text", Stream.BACKGROUND_TEXT),
                        ("model_text", Stream.MODEL_TEXT)):
      if key in streams:
        out[stream] = self.text(streams[key]).astype(dt)
    return out

  def embed_video(self, frames, present):
    """frames [B, T, H, W, 3], present bool [B, T] -> [B, T, P, d]."""
    spec = self.spec
    p = spec.patch
    b, t, h, w, c = frames.shape
    if (h, w) != (spec.video_height, spec.video_width):
      raise ValueError(f"video frames are {h}x{w}, the layout says "
                       f"{spec.video_height}x{spec.video_width}")
    x = frames.reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
    x = x.reshape(b, t, (h // p) * (w // p), p, p, c)
    emb = self.hmlp(x, self.dtype) + self.patch_pos[...].astype(self.dtype)
    empty = jnp.broadcast_to(self.video_empty[...].astype(self.dtype), emb.shape)
    return jnp.where(present[:, :, None, None], emb, empty)

  def embed_slots(self, content, stream_ids, seconds):
    """content [B, N, d] + stream and time embeddings. seconds [B, N]."""
    return self.slot.combine(content, stream_ids, seconds)

  def embed_episode(self, batch, first_turn=None):
    """Input sequence [B, T*slots, d] and RoPE positions [B, S] of a window.

    The window's first micro-turn is the session turn `first_turn` (int or
    int [B]; default the batch's "first_turn" key, else 0), so a crop keeps
    the elapsed times and positions it has in its session: training sees the
    same time embeddings and RoPE positions a live session reaches. Seconds
    are (turn as float32) * float32(turn_seconds), the streaming step's
    formula, so a crop embeds bit for bit like the same turns of the whole.
    """
    spec = self.spec
    x = lo.interleave(spec, self.content(batch))
    b, t = batch["model_text"].shape[:2]
    if first_turn is None:
      first_turn = batch.get("first_turn", 0)
    first = jnp.broadcast_to(jnp.asarray(first_turn, jnp.int32), (b,))
    meta = spec.slot_meta(t, 0)
    turn = first[:, None] + jnp.asarray(meta["turn_index"])[None, :]
    seconds = turn.astype(jnp.float32) * jnp.float32(spec.turn_seconds)
    x = self.embed_slots(x, jnp.asarray(meta["stream_ids"]), seconds)
    positions = first[:, None] * spec.slots_per_turn + jnp.asarray(meta["positions"])[None, :]
    return x, positions

  # ---- trunk and heads -----------------------------------------------------
  def backbone(self, x, positions, cache=None, cache_offset=None):
    """Runs the decoder stack. Returns (normed hidden, new cache, aux losses)."""
    new_cache = [] if cache is not None else None
    aux = {"load_balance_loss": jnp.float32(0), "z_loss": jnp.float32(0)}
    for i, block in enumerate(self.blocks):
      layer_cache = cache[i] if cache is not None else None
      x, c, a = block(x, positions, layer_cache, cache_offset)
      if new_cache is not None:
        new_cache.append(c)
      for k, v in a.items():
        aux[k] = aux[k] + v
    return self.final_norm(x), new_cache, aux

  def text_logits(self, h):
    return self.unembed(h)

  def forward(self, batch):
    """Teacher-forced pass. Returns text logits and the flow head's conditions.

    text_logits [B, T, n_text, V]: the prediction of each model_text slot;
    audio_cond [B, T, n_audio, d]: the hidden state that conditions the flow
    head for each model_audio slot (the previous slot's output).
    """
    x, positions = self.embed_episode(batch)
    h, _, aux = self.backbone(x, positions)
    t = batch["model_text"].shape[1]
    text_idx = self.spec.predictor_index(t, Stream.MODEL_TEXT)
    audio_idx = self.spec.predictor_index(t, Stream.MODEL_AUDIO)
    text_h = jnp.take(h, jnp.asarray(text_idx.reshape(-1)), axis=1)
    audio_h = jnp.take(h, jnp.asarray(audio_idx.reshape(-1)), axis=1)
    b, d = h.shape[0], h.shape[-1]
    logits = self.text_logits(text_h).reshape(b, t, text_idx.shape[1], -1)
    return {"text_logits": logits,
            "audio_cond": audio_h.reshape(b, t, audio_idx.shape[1], d),
            "aux": aux}

  def init_cache(self, batch_size: int, capacity: int, dtype=None):
    """Zeroed KV cache for `capacity` slots (a multiple of the split size)."""
    cfg_dtype = dtype or self.dtype
    blk = self.blocks[0].attn
    shape = (batch_size, capacity, blk.hkv, blk.hd)
    return [{"k": jnp.zeros(shape, cfg_dtype), "v": jnp.zeros(shape, cfg_dtype)}
            for _ in self.blocks]
