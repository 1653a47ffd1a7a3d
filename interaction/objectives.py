"""Training objective: text cross-entropy + flow matching + MoE auxiliary losses.

Cross-entropy is taken on model_text slots, flow matching on model_audio slots,
nothing on user slots (interaction/layout.py). Padding turns (turn_mask False)
carry no loss. Most model_text targets are <pad> (the model is silent);
train.pad_weight lowers their weight so onsets and spoken bytes count.
train.audio_input_noise corrupts the model's own audio input stream the way
a live session's fed-back flow samples are imperfect; train.self_feed goes
further and feeds some examples the flow head's own samples (scheduled
sampling), which is what a live session feeds back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from interaction import layout as lo
from interaction.config import FlowConfig
from interaction import mel as mel_lib
from interaction.flow_head import euler_sample, flow_matching_loss, mel_to_unit, unit_to_mel
from interaction.tokenizer import TOKENIZER
from moe.config import MoEConfig
from pallas_kernels import numerics as nm


def noisy_model_audio(model_mel, spec, rng, max_std: float):
  """dMel bins of the model's speech seen through Gaussian noise of a std
  drawn per example from U[0, max_std] (log10 mel units)."""
  k_std, k_noise = jax.random.split(rng)
  b = model_mel.shape[0]
  std = jax.random.uniform(k_std, (b,) + (1,) * (model_mel.ndim - 1)) * max_std
  noisy = model_mel + std * jax.random.normal(k_noise, model_mel.shape)
  return mel_lib.dmel_quantize(jnp.clip(noisy, spec.dmel_min, spec.dmel_max), spec, xp=jnp)


def self_fed_model_audio(model, batch, rng, prob: float, temperature: float = 1.0):
  """model_audio input bins where a fraction `prob` of the examples (drawn
  per example) hear the flow head's own samples instead of their truth.

  The samples come from a teacher-forced pass of the same parameters (no
  gradient through it), one per model_audio slot from that slot's condition,
  and are quantized as a live session quantizes what it feeds back
  (interaction/streaming.py, step 3): so the text and audio streams learn to
  go on from audio as the model makes it, not only from clean speech. Turns
  past an episode's end (turn_mask False) keep their inputs.
  """
  spec = model.spec
  k_noise, k_pick = jax.random.split(rng)
  cond = jax.lax.stop_gradient(model.forward(batch)["audio_cond"])     # [B, T, n, d]
  b, t, n, d = cond.shape
  width = spec.frames_per_position * spec.n_mels
  noise = jax.random.normal(k_noise, (b * t * n, width), cond.dtype) * temperature
  x1 = euler_sample(model.flow, cond.reshape(-1, d), noise, model.flow_steps)
  mel = unit_to_mel(x1.astype(jnp.float32), spec.dmel_min, spec.dmel_max)
  mel = lo.unstack_audio_frames(spec, mel.reshape(b, t, n, width))     # [B, T, F, mels]
  bins = jax.lax.stop_gradient(mel_lib.dmel_quantize(mel, spec, xp=jnp)).astype(
      batch["model_audio"].dtype)
  pick = (jax.random.uniform(k_pick, (b, 1)) < prob) & (batch["turn_mask"] > 0)
  return jnp.where(pick[:, :, None, None], bins, batch["model_audio"])


def compute_loss(model, batch, rng, config):
  """Returns (total loss, metrics dict of scalars).

  `config` is the whole ConfigDict: the loss weights live in config.train and
  config.model.moe, and are read at each call (typed once per trace).
  """
  flow_cfg = FlowConfig.from_config(config.model.flow)
  moe_cfg = MoEConfig.from_config(config.model.moe)
  spec = model.spec
  tc = config.train
  noise_std = float(tc.get("audio_input_noise", 0.0))
  if noise_std < 0:
    raise ValueError(f"train.audio_input_noise: {noise_std} must be >= 0")
  pad_weight = float(tc.get("pad_weight", 1.0))
  if pad_weight < 0:
    raise ValueError(f"train.pad_weight: {pad_weight} must be >= 0")
  self_feed = float(tc.get("self_feed", 0.0))
  if not 0.0 <= self_feed <= 1.0:
    raise ValueError(f"train.self_feed: {self_feed} must be in [0, 1]")
  if noise_std > 0:  # without noise the flow's draws stay those of older runs
    rng, noise_rng = jax.random.split(rng)
    batch = dict(batch, model_audio=noisy_model_audio(batch["model_mel"], spec,
                                                       noise_rng, noise_std))
  if self_feed > 0:  # likewise: 0 leaves the draws (and the cost) as they were
    rng, feed_rng = jax.random.split(rng)
    temp = float(config.get("session", {}).get("flow_temperature", 1.0))
    batch = dict(batch, model_audio=self_fed_model_audio(model, batch, feed_rng,
                                                         self_feed, temp))
  out = model.forward(batch)
  turn_mask = batch["turn_mask"].astype(jnp.float32)           # [B, T]

  logits = out["text_logits"]                                   # [B, T, n, V]
  logp = nm.log_softmax(logits.astype(jnp.float32), model.numerics)
  targets = batch["model_text"]
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  valid = jnp.broadcast_to(turn_mask[..., None], nll.shape)
  text_w = valid * jnp.where(targets == TOKENIZER.pad_id, jnp.float32(pad_weight), 1.0)
  text_loss = jnp.sum(nll * text_w) / jnp.maximum(jnp.sum(text_w), 1e-6)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  text_acc = jnp.sum(correct * valid) / jnp.maximum(jnp.sum(valid), 1.0)
  speech = valid * (targets != TOKENIZER.pad_id)
  speech_acc = jnp.sum(correct * speech) / jnp.maximum(jnp.sum(speech), 1.0)

  cond = out["audio_cond"]                                      # [B, T, n, d]
  x1 = mel_to_unit(lo.stack_audio_frames(spec, batch["model_mel"]),
                   spec.dmel_min, spec.dmel_max)                # [B, T, n, fpp*mels]
  audio_w = jnp.broadcast_to(turn_mask[..., None], cond.shape[:-1])
  flow_loss = flow_matching_loss(
      model.flow, cond.reshape(-1, cond.shape[-1]),
      x1.reshape(-1, x1.shape[-1]).astype(cond.dtype),
      audio_w.reshape(-1) > 0, rng, batch_mul=flow_cfg.batch_mul)

  aux = out["aux"]
  total = (tc.text_loss_weight * text_loss + tc.flow_loss_weight * flow_loss
           + moe_cfg.load_balance_weight * aux["load_balance_loss"]
           + moe_cfg.z_loss_weight * aux["z_loss"])
  metrics = {"loss": total, "text_loss": text_loss, "text_acc": text_acc,
             "speech_acc": speech_acc,
             "flow_loss": flow_loss,
             "load_balance_loss": aux["load_balance_loss"],
             "z_loss": aux["z_loss"]}
  return total, metrics
