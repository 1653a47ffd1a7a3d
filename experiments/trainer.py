"""The training loop (big_vision style): shapes first, one pure update step,
workdir = run identity, JSON-lines + TensorBoard metrics, orbax checkpoints.

Resume precedence: an existing checkpoint in the workdir wins; otherwise the
run starts from scratch. Rerunning the same command therefore continues the
run, with the data iterator restored to the exact next batch.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from experiments import checkpointing
from interaction import params as params_lib
from interaction.model import validate_config
from interaction.objectives import compute_loss

TrainState = dict[str, Any]  # {"step", "params", "opt_state", "rng"}


# ---------------------------------------------------------------------------
# Optimizer and state
# ---------------------------------------------------------------------------
def make_optimizer(config) -> optax.GradientTransformation:
  tc = config.train
  if tc.warmup_steps >= tc.steps:
    raise ValueError(f"train.warmup_steps: {tc.warmup_steps} must be smaller "
                     f"than train.steps={tc.steps}")
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=tc.lr, warmup_steps=tc.warmup_steps,
      decay_steps=tc.steps, end_value=tc.lr * tc.end_lr_ratio)
  return optax.chain(
      optax.clip_by_global_norm(tc.grad_clip),
      optax.adamw(schedule, b1=tc.b1, b2=tc.b2, weight_decay=tc.weight_decay))


def _over_base_config(saved: dict) -> dict:
  """A saved config.json laid over today's base config.

  Fields added to the code since the run was saved (a new kernel switch, say)
  take their defaults, so an older workdir still loads; the saved values win.
  """
  from experiments.configs import common

  def merge(base, over):
    out = dict(base)
    for k, v in over.items():
      out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out
  return merge(common.base_config().to_dict(), saved)


def load_trained(workdir: str, step: int | None = None):
  """(config, params) of a training run's checkpoint (latest step by default)."""
  import ml_collections
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir}: no config.json; is this a training workdir?")
  with open(path) as f:
    config = ml_collections.ConfigDict(_over_base_config(json.load(f)))
  ckpt = checkpointing.Checkpointer(workdir)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f"{workdir}: no checkpoint in {ckpt.directory}")
  state, _ = ckpt.restore(abstract_train_state(config),
                          checkpointing.structure_meta(config), step=step)
  ckpt.close()
  return config, state["params"]


def create_train_state(config, rng: int | jax.Array = None) -> TrainState:
  """Initial train state. `rng`: int seed or PRNG key (default config.train.seed)."""
  seed = config.train.seed if rng is None else rng
  if not isinstance(seed, int):
    seed = int(jax.random.randint(seed, (), 0, 2**31 - 1))
  params = params_lib.init_params(config, seed)
  tx = make_optimizer(config)
  return {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params),
          "rng": jax.random.key_data(jax.random.key(seed))}


def abstract_train_state(config) -> TrainState:
  return jax.eval_shape(lambda: create_train_state(config, config.train.seed))


def make_train_step(config):
  """Returns a jitted `train_step(state, batch) -> (state, metrics)`.

  The state argument is donated: its buffers are reused for the new state.
  """
  bind = params_lib.ModelBinder(config)
  tx = make_optimizer(config)

  def loss_fn(params, batch, rng):
    model = bind(params)
    return compute_loss(model, batch, rng, config)

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], batch, rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics["grad_norm"] = optax.global_norm(grads)
    new_state = {"step": state["step"] + 1, "params": params,
                 "opt_state": opt_state, "rng": state["rng"]}
    return new_state, metrics

  return jax.jit(train_step, donate_argnums=0)


# ---------------------------------------------------------------------------
# Metrics sinks
# ---------------------------------------------------------------------------
class MetricWriter:
  """JSON lines (metrics.jsonl) plus TensorBoard event files (tb/)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.file = open(self.path, "a")
    from tensorboardX import SummaryWriter
    self.tb = SummaryWriter(os.path.join(workdir, "tb"))

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self.file.write(json.dumps(row) + "\n")
    self.file.flush()
    for k, v in metrics.items():
      self.tb.add_scalar(k, float(v), int(step))

  def close(self):
    if self.enabled:
      self.file.close()
      self.tb.close()


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------
def _prepare_episodes(config, workdir: str, is_main: bool):
  """source='episodes' with no path: use <workdir>/data, generating it once."""
  d = config.data
  if d.source != "episodes" or d.path:
    return
  path = os.path.join(workdir, "data")
  if not os.path.exists(os.path.join(path, "episodes", "manifest.json")):
    if jax.process_count() > 1:
      raise ValueError("data.path: multi-process runs need pre-generated episodes "
                       "(python -m experiments.generate --out=DIR)")
    if is_main:
      from data_pipeline import generate
      families = generate.parse_families(d.families or "all")
      logging.info("Generating %d episodes per family into %s", d.generate_per_family, path)
      generate.generate(families, int(d.generate_per_family), path, split="train",
                        seed=int(d.seed))
  d.path = path


def _to_device_batch(batch):
  return {k: jnp.asarray(v) for k, v in batch.items()}


def train_and_evaluate(config, workdir: str, *, data_iter=None,
                       stop_at_step: int | None = None, progress: bool = True):
  """Trains until config.train.steps (or `stop_at_step`, or max_minutes).

  Returns the final train state. `data_iter` overrides the configured
  pipeline (tests); it must offer get_state()/set_state().
  """
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0

  if data_iter is None:
    _prepare_episodes(config, workdir, is_main)
    from data_pipeline.pipeline import make_train_iter
    data_iter = make_train_iter(config, process_index=jax.process_index(),
                                process_count=jax.process_count())

  ckpt = checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  meta = checkpointing.structure_meta(config)
  if ckpt.latest_step() is not None:
    state, data_state = ckpt.restore(abstract_train_state(config), meta)
    data_iter.set_state(data_state)
    logging.warning("Resumed from step %d in %s", int(state["step"]), workdir)
  else:
    state = create_train_state(config)
    logging.info("Starting from scratch in %s", workdir)
  if is_main:  # only once the workdir's checkpoint accepted this config
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  train_step = make_train_step(config)
  writer = MetricWriter(workdir, enabled=is_main)
  tc = config.train
  last = tc.steps if stop_at_step is None else min(tc.steps, stop_at_step)
  step = int(state["step"])
  t_start = t_log = time.time()
  pending = []
  bar = None
  if progress and is_main:
    from tqdm import tqdm
    limit = f", stops after {tc.max_minutes:g} min" if tc.max_minutes > 0 else ""
    bar = tqdm(total=last, initial=step, desc=f"train {config.name}{limit}",
               unit="step")
  try:
    while step < last:
      batch = _to_device_batch(next(data_iter))
      state, metrics = train_step(state, batch)
      step += 1
      pending.append(metrics)
      if bar is not None:
        bar.update(1)
      out_of_time = (tc.max_minutes > 0
                     and time.time() - t_start > tc.max_minutes * 60)
      if step % tc.log_every == 0 or step == last or out_of_time:
        means = jax.tree_util.tree_map(lambda *x: float(np.mean(x)), *pending)
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
          raise FloatingPointError(
              f"non-finite {bad} in steps {step - len(pending) + 1}..{step}")
        now = time.time()
        means["steps_per_sec"] = len(pending) / max(now - t_log, 1e-9)
        t_log = now
        writer.write(step, means)
        if bar is not None:
          bar.set_postfix(loss=f"{means['loss']:.3f}",
                          text=f"{means['text_loss']:.3f}",
                          flow=f"{means['flow_loss']:.3f}")
        pending = []
      if step % tc.ckpt_every == 0 or step == last or out_of_time:
        ckpt.save(step, state, data_iter.get_state(), meta)
      if out_of_time:
        logging.info("train.max_minutes=%s reached at step %d", tc.max_minutes, step)
        break
  finally:
    if bar is not None:
      bar.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
  return state
