"""Training objective: text cross-entropy + flow matching + MoE auxiliary losses.

Cross-entropy is taken on model_text slots, flow matching on model_audio slots,
nothing on user slots (interaction/layout.py). Padding turns (turn_mask False)
carry no loss.
"""

from __future__ import annotations

import jax.numpy as jnp

from interaction import layout as lo
from interaction.config import FlowConfig
from interaction.flow_head import flow_matching_loss, mel_to_unit
from moe.config import MoEConfig
from pallas_kernels import numerics as nm


def compute_loss(model, batch, rng, config):
  """Returns (total loss, metrics dict of scalars).

  `config` is the whole ConfigDict: the loss weights live in config.train and
  config.model.moe, and are read at each call (typed once per trace).
  """
  flow_cfg = FlowConfig.from_config(config.model.flow)
  moe_cfg = MoEConfig.from_config(config.model.moe)
  spec = model.spec
  out = model.forward(batch)
  turn_mask = batch["turn_mask"].astype(jnp.float32)           # [B, T]

  logits = out["text_logits"]                                   # [B, T, n, V]
  logp = nm.log_softmax(logits.astype(jnp.float32), model.numerics)
  targets = batch["model_text"]
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  text_w = jnp.broadcast_to(turn_mask[..., None], nll.shape)
  denom = jnp.maximum(jnp.sum(text_w), 1.0)
  text_loss = jnp.sum(nll * text_w) / denom
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  text_acc = jnp.sum(correct * text_w) / denom

  cond = out["audio_cond"]                                      # [B, T, n, d]
  x1 = mel_to_unit(lo.stack_audio_frames(spec, batch["model_mel"]),
                   spec.dmel_min, spec.dmel_max)                # [B, T, n, fpp*mels]
  audio_w = jnp.broadcast_to(turn_mask[..., None], cond.shape[:-1])
  flow_loss = flow_matching_loss(
      model.flow, cond.reshape(-1, cond.shape[-1]),
      x1.reshape(-1, x1.shape[-1]).astype(cond.dtype),
      audio_w.reshape(-1) > 0, rng, batch_mul=flow_cfg.batch_mul)

  tc = config.train
  aux = out["aux"]
  total = (tc.text_loss_weight * text_loss + tc.flow_loss_weight * flow_loss
           + moe_cfg.load_balance_weight * aux["load_balance_loss"]
           + moe_cfg.z_loss_weight * aux["z_loss"])
  metrics = {"loss": total, "text_loss": text_loss, "text_acc": text_acc,
             "flow_loss": flow_loss,
             "load_balance_loss": aux["load_balance_loss"],
             "z_loss": aux["z_loss"]}
  return total, metrics
