"""The training loop (big_vision style): shapes first, one pure update step,
workdir = run identity, JSON-lines + TensorBoard metrics, orbax checkpoints.

Start precedence (logged as one `start: ...` line):
  1. a checkpoint in the workdir: resume it (train state and the data
     iterator's position: the next batch is the one an uninterrupted run sees);
  2. `train.init_from`, another training workdir: its latest parameters only,
     with a fresh optimizer state, step 0 and the data stream from its start
     (a path without a checkpoint, or parameters whose names, shapes or dtypes
     differ from this config's model, is a ValueError);
  3. from scratch (`train.seed`).
Rerunning the same command therefore continues the run. Metric rows past the
step a run starts at (written by a run killed after its last checkpoint) are
dropped from metrics.jsonl, so it never repeats a step.

Where it runs: one device (`mesh.shape=''`, the default), or a device mesh
over every device of every process (`mesh.shape='data=2,fsdp=4'`, ...): then
`jax.distributed` is initialised first for a multi-process run
(experiments/distributed.py), the state, the step and the checkpoints are
experiments/mesh.py's MeshTrainer's (sharded save and restore: a run resumes
on another mesh), data.batch_size is the global batch and each process reads
its own rows of it (its shard of the data pipeline, batch_size / processes
rows a step). A mesh that does not fit fails before any work, naming
mesh.shape. The data iterator state saved is process 0's: every process has
read as many examples, so its position is every process's.

SIGTERM (SLURM preemption, `scancel`, `kill`) sets a flag the loop checks
after each step: the run logs its pending metrics, checkpoints the step it
reached, and `train` returns with `stopped_by='SIGTERM'` (the entry point then
exits with status 143, 128 + SIGTERM). Rerunning resumes from that step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import threading
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


def _load_checkpoint(workdir: str, step: int | None = None):
  """(config, params, step) of a training run's checkpoint (latest by default)."""
  import ml_collections
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir}: no config.json; is this a training workdir?")
  with open(path) as f:
    config = ml_collections.ConfigDict(_over_base_config(json.load(f)))
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"{workdir}: no checkpoint in {ckpt.directory}")
    step = ckpt.latest_step() if step is None else step
    state, _ = ckpt.restore(abstract_train_state(config),
                            checkpointing.structure_meta(config), step=step)
  finally:
    ckpt.close()
  return config, state["params"], int(step)


def load_trained(workdir: str, step: int | None = None):
  """(config, params) of a training run's checkpoint (latest step by default)."""
  config, params, _ = _load_checkpoint(workdir, step)
  return config, params


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


def init_from_workdir(config, path: str) -> tuple[TrainState, int]:
  """(train state, source step): the latest parameters of the training workdir
  `path` with a fresh optimizer state, step 0 and this config's train.seed.

  Raises ValueError when `path` holds no checkpoint or its parameters differ
  from this config's model in names, shapes or dtypes.
  """
  where = f"train.init_from={path!r}"
  if not os.path.isdir(path):
    raise ValueError(f"{where}: no such directory (expected a training workdir)")
  try:
    _, params, src_step = _load_checkpoint(path)
  except FileNotFoundError as e:
    raise ValueError(f"{where}: {e}") from None
  except ValueError as e:  # its checkpoint does not fit its own config.json
    raise ValueError(f"{where}: cannot load its checkpoint: {e}") from None
  target = abstract_train_state(config)["params"]
  checkpointing.check_state_tree(
      {"params": params}, {"params": target},
      what=f"{where}: its parameters do not match this config's model",
      advice="train.init_from needs the same parameter names and shapes")
  src = {checkpointing.leaf_name(p): leaf
         for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  paths, treedef = jax.tree_util.tree_flatten_with_path(target)
  leaves, bad = [], []
  for p, t in paths:
    name = checkpointing.leaf_name(p)
    leaf = src[name]
    if leaf.dtype != t.dtype:
      bad.append(f"  params.{name}: dtype {leaf.dtype} in {path}, {t.dtype} in this config")
    leaves.append(leaf)
  if bad:
    raise ValueError(f"{where}: its parameters do not match this config's model "
                     f"({len(bad)} dtype differences; model.param_dtype?):\n"
                     + "\n".join(bad[:12]))
  params = jax.tree_util.tree_unflatten(treedef, leaves)
  tx = make_optimizer(config)
  state = {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params),
           "rng": jax.random.key_data(jax.random.key(config.train.seed))}
  return state, src_step


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
def truncate_metrics(path: str, step: int) -> int:
  """Drops the rows of a metrics.jsonl past `step` (and a torn last line);
  returns how many rows were dropped. A run killed after its last checkpoint
  wrote rows that the resumed run writes again: without this the file would
  repeat those steps."""
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = f.read().splitlines()
  keep = []
  for line in lines:
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(row, dict) and int(row.get("step", 0)) <= step:
      keep.append(line)
  dropped = len(lines) - len(keep)
  if dropped:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.write("".join(line + "\n" for line in keep))
    os.replace(tmp, path)
  return dropped


class MetricWriter:
  """JSON lines (metrics.jsonl) plus TensorBoard event files (tb/).

  `start_step`: the step the run starts at; rows past it are dropped first."""

  def __init__(self, workdir: str, enabled: bool = True, start_step: int | None = None):
    self.enabled = enabled
    if not enabled:
      return
    self.path = os.path.join(workdir, "metrics.jsonl")
    if start_step is not None:
      dropped = truncate_metrics(self.path, start_step)
      if dropped:
        logging.warning("metrics.jsonl: dropped %d rows past step %d (a run stopped "
                        "after its last checkpoint)", dropped, start_step)
    self.file = open(self.path, "a")
    from tensorboardX import SummaryWriter
    # purge_step: TensorBoard hides the earlier events from this step on (those
    # of a run killed after its last checkpoint), as metrics.jsonl drops them.
    self.tb = SummaryWriter(os.path.join(workdir, "tb"),
                            purge_step=None if start_step is None else start_step + 1)

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


class OneDevice:
  """Where `train` runs without a mesh: the default device. The same methods
  as experiments/mesh.py's MeshTrainer, which `train` uses for a mesh."""

  def __init__(self, config):
    self.config = config

  def abstract_state(self):
    return abstract_train_state(self.config)

  def init_state(self):
    return create_train_state(self.config)

  def place_state(self, state):
    return state

  def place_batch(self, batch):
    return _to_device_batch(batch)

  @functools.cached_property
  def train_step(self):
    return make_train_step(self.config)


def _runner(config):
  """OneDevice, or the MeshTrainer of config.mesh.shape (jax.distributed
  initialised first when this is a multi-process run)."""
  if not str(config.get("mesh", {}).get("shape", "") or "").strip():
    return OneDevice(config)
  from experiments import distributed
  from experiments import mesh as mesh_lib
  distributed.maybe_initialize()
  return mesh_lib.from_config(config)


def _where(runner) -> str:
  if isinstance(runner, OneDevice):
    return ""
  from interaction import sharding as sh
  return (f" on mesh {sh.mesh_string(runner.sizes)} ({jax.device_count()} devices, "
          f"{jax.process_count()} processes)")


@dataclasses.dataclass
class TrainResult:
  """What `train` returns: the final state and how the run began and ended.

  start: 'resumed' | 'init_from' | 'scratch'; start_step: the step it began
  at; stopped_by: None (reached its last step), 'max_minutes' or 'SIGTERM'
  (checkpointed at the step reached); signal: the stop signal received during
  the run, even one that came with the last step (then stopped_by is None)."""
  state: TrainState
  start: str
  start_step: int
  stopped_by: str | None = None
  signal: str | None = None

  @property
  def step(self) -> int:
    return int(self.state["step"])


class _StopSignal:
  """Sets `.received` (the signal's name) when one of `signums` arrives.

  The handler only sets the flag; the loop checkpoints and stops (saving
  inside a signal handler could interrupt orbax mid-write). Installed only
  in the main thread (Python allows handlers nowhere else); `restore()`
  puts the previous handlers back."""

  def __init__(self, signums=(signal.SIGTERM,)):
    self.received = None
    self._previous = {}
    if threading.current_thread() is not threading.main_thread():
      return
    for s in signums:
      self._previous[s] = signal.signal(s, self._handle)

  def _handle(self, signum, frame):
    del frame
    if self.received is None:
      self.received = signal.Signals(signum).name

  def restore(self):
    for s, h in self._previous.items():
      signal.signal(s, h)
    self._previous = {}


def _start_state(config, workdir: str, ckpt, meta, data_iter, runner):
  """(state, start, message): the workdir's checkpoint, else train.init_from,
  else scratch (module docstring); placed by `runner`."""
  init_from = str(config.train.get("init_from", "") or "")
  if ckpt.latest_step() is not None:
    state, data_state = ckpt.restore(runner.abstract_state(), meta)
    data_iter.set_state(data_state)
    msg = f"start: resumed from step {int(state['step'])} in {workdir}"
    if init_from:
      msg += f" (train.init_from={init_from} ignored: the workdir has a checkpoint)"
    return state, "resumed", msg
  if init_from:
    state, src_step = init_from_workdir(config, init_from)
    return runner.place_state(state), "init_from", (
        f"start: step 0 from the parameters of {init_from} (its step {src_step}); "
        "fresh optimizer state")
  return runner.init_state(), "scratch", (
      f"start: from scratch (train.seed={config.train.seed}) in {workdir}")


def _log_stopped(signame: str, step: int, workdir: str):
  logging.warning("%s received: checkpointed step %d in %s and stopped; rerun "
                  "the same command to resume", signame, step, workdir)


def _plot(workdir: str):
  from experiments import plots
  try:
    plots.plot_curves(workdir)
  except Exception as e:  # a plot must never stop (or mask the error of) a run
    logging.warning("curves.png not written: %s: %s", type(e).__name__, e)


def train(config, workdir: str, *, data_iter=None, stop_at_step: int | None = None,
          progress: bool = True) -> TrainResult:
  """Trains until config.train.steps (or `stop_at_step`, max_minutes or SIGTERM).

  `data_iter` overrides the configured pipeline (tests); it must offer
  get_state()/set_state(). See the module docstring for the start precedence
  and SIGTERM.
  """
  validate_config(config)
  runner = _runner(config)  # a mesh that does not fit fails here, before any work
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  if isinstance(runner, OneDevice) and jax.process_count() > 1 and is_main:
    logging.warning("mesh.shape is empty: each of the %d processes trains on its own "
                    "device; set mesh.shape (e.g. data=-1) to train one model on all",
                    jax.process_count())

  if data_iter is None:
    _prepare_episodes(config, workdir, is_main)
    from data_pipeline.pipeline import make_train_iter
    rows = (None if isinstance(runner, OneDevice)
            else runner.batch_size // jax.process_count())
    data_iter = make_train_iter(config, process_index=jax.process_index(),
                                process_count=jax.process_count(), batch_size=rows)

  ckpt = checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                    cleanup_tmp=is_main)
  meta = checkpointing.structure_meta(config)
  try:
    state, start, message = _start_state(config, workdir, ckpt, meta, data_iter, runner)
  except BaseException:
    ckpt.close()
    raise
  logging.warning("%s%s", message, _where(runner))
  if is_main:  # only once the workdir's checkpoint accepted this config
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  train_step = runner.train_step
  tc = config.train
  step = start_step = int(state["step"])
  writer = MetricWriter(workdir, enabled=is_main, start_step=start_step)
  last = tc.steps if stop_at_step is None else min(tc.steps, stop_at_step)
  plot = bool(tc.get("plot_curves", True)) and is_main
  plotted_at = None
  t_start = t_log = time.time()
  t_first = None            # end of the first step (compilation excluded from rates)
  deadline = t_start + tc.max_minutes * 60 if tc.max_minutes > 0 else None
  pending = []
  stopped_by = None
  bar = None
  if progress and is_main:
    from tqdm import tqdm
    limit = f", stops after {tc.max_minutes:g} min" if deadline else ""
    bar = tqdm(total=last, initial=step, desc=f"train {config.name}{limit}",
               unit="step")
  stop = _StopSignal()

  def save(at, final):
    nonlocal plotted_at
    if final:
      # orbax skips a save while an earlier async one is still writing (its
      # is-saving-in-progress check): under load a SIGTERM's or the last
      # step's save was dropped. Wait for it, then force this one.
      ckpt.wait()
    ckpt.save(at, state, data_iter.get_state(), meta, force=final)
    if plot:
      _plot(workdir)
      plotted_at = at

  try:
    while step < last and stop.received is None:
      batch = runner.place_batch(next(data_iter))
      state, metrics = train_step(state, batch)
      step += 1
      pending.append(metrics)
      now = time.time()
      if t_first is None:
        t_first = now
      if bar is not None:
        if deadline and step > start_step + 1:
          # ETA against the effective end: the steps max_minutes leaves room for.
          rate = (step - start_step - 1) / max(now - t_first, 1e-9)
          end = min(last, step + int(rate * max(deadline - now, 0.0)))
          if end != bar.total:
            bar.total = max(end, step)
        bar.update(1)
      if step < last:  # reaching the last step is finishing, whatever else happened
        if stop.received is not None:
          stopped_by = stop.received
        elif deadline is not None and now > deadline:
          stopped_by = "max_minutes"
      stopping = stopped_by is not None
      if step % tc.log_every == 0 or step == last or stopping:
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
      if step % tc.ckpt_every == 0 or step == last or stopping:
        save(step, final=step == last or stopping)
      if stopping:
        if stopped_by == "max_minutes":
          logging.info("train.max_minutes=%s reached at step %d", tc.max_minutes, step)
        else:
          _log_stopped(stopped_by, step, workdir)
        break
    if stopped_by is None and stop.received is not None and step < last:
      # The signal came after this step's check (while its metrics were
      # written, say), or before the first step (nothing new to save).
      stopped_by = stop.received
      if step > start_step and ckpt.latest_step() != step:
        save(step, final=True)
        _log_stopped(stopped_by, step, workdir)
  finally:
    try:
      if bar is not None:
        bar.close()
      ckpt.wait()  # the last save is on disk before the process may exit
      ckpt.close()
      writer.close()
      if plot and plotted_at != step:
        _plot(workdir)
    finally:
      stop.restore()  # only now: a second SIGTERM must not kill the final save
  return TrainResult(state=state, start=start, start_step=start_step,
                     stopped_by=stopped_by, signal=stop.received)


def train_and_evaluate(config, workdir: str, *, data_iter=None,
                       stop_at_step: int | None = None, progress: bool = True):
  """`train(...)`'s final train state (the historical entry point)."""
  return train(config, workdir, data_iter=data_iter, stop_at_step=stop_at_step,
               progress=progress).state
