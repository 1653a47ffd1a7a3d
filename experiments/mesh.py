"""Training on a device mesh: sharded train state, batches and train step.

  mesh = sharding.make_mesh("data=2,fsdp=4")          # interaction/sharding.py
  runner = MeshTrainer(config, mesh)                  # checks the mesh fits the model
  state = runner.init_state()                         # created sharded (never whole on one device)
  state = runner.place_state(host_state)              # or: place an existing state
  state, metrics = runner.train_step(state, runner.place_batch(batch))
  metrics = runner.loss(state["params"], batch, rng)  # forward only

The train step is the trainer's own (`trainer.make_train_step`'s function,
re-jitted here with in/out shardings), so a mesh changes where arrays live and
which collectives XLA inserts (GSPMD, axes of type Auto), never the math: the
losses agree with a single device's within float reordering
(tests/experiments/mesh_sharding_test.py). Parameters follow their logical
sharding names plus fsdp (interaction/sharding.py); the AdamW moments follow
the parameter they mirror; step, rng and the metrics are replicated.

`restore_sharded` reads a trainer checkpoint straight into the mesh's
layout (orbax restores each shard where it belongs), so a run saved on one
mesh resumes on another.

With an `expert` axis > 1 the step and the loss are traced with the mesh as
the context mesh (`jax.set_mesh`), so the MoE layers exchange tokens
explicitly over `expert` (moe/expert_parallel.py) instead of leaving it to
GSPMD. `from_config` builds the runner of `config.mesh.shape` for the
trainer (experiments/trainer.py), refusing a mesh that does not fit with an
error naming mesh.shape.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments import trainer
from interaction import params as params_lib
from interaction import sharding as sh


def batch_shapes(config, batch_size: int | None = None) -> dict:
  """{key: shape} of one global training batch."""
  from data_pipeline.pipeline import batch_spec
  out = {k: tuple(s) for k, (s, _) in batch_spec(config).items()}
  if batch_size is not None:
    out = {k: (int(batch_size),) + s[1:] for k, s in out.items()}
  return out


def state_specs(config, sizes, abstract_state=None) -> dict:
  """PartitionSpecs of the whole train state for mesh `sizes`."""
  abstract = abstract_state or trainer.abstract_train_state(config)
  named_state = params_lib.ModelBinder(config).abstract
  pspecs = sh.param_specs(abstract["params"], sizes, named_state)
  flat, shapes = sh.flat_specs(pspecs, abstract["params"])
  return {"step": P(), "params": pspecs,
          "opt_state": sh.mirror_specs(abstract["opt_state"], flat, shapes),
          "rng": P()}


class _OnMesh:
  """A jitted function called (and traced, lowered) inside `context()`."""

  def __init__(self, jitted, context):
    self.jitted, self.context = jitted, context

  def __call__(self, *args):
    with self.context():
      return self.jitted(*args)

  def trace(self, *args):
    with self.context():
      return self.jitted.trace(*args)


class MeshTrainer:
  """The trainer's step, state and loss laid out on `mesh`.

  batch_size: the global batch (default config.data.batch_size).
  """

  def __init__(self, config, mesh, *, batch_size: int | None = None):
    self.config = config
    self.mesh = mesh
    self.sizes = sh.mesh_sizes(mesh)
    self.batch_size = int(config.data.batch_size if batch_size is None else batch_size)
    sh.check_model_fits(config, self.sizes, batch_size=self.batch_size)
    self.abstract = trainer.abstract_train_state(config)
    self.specs = state_specs(config, self.sizes, self.abstract)
    sh.check_specs_divide(self.specs, self.abstract, self.sizes, what="state")
    self.shardings = sh.named(mesh, self.specs)
    self.batch_shapes = batch_shapes(config, self.batch_size)
    self.batch_specs = sh.batch_specs(self.batch_shapes, self.sizes)
    self.batch_shardings = sh.named(mesh, self.batch_specs)
    self.replicated = NamedSharding(mesh, P())

  # ---- state ---------------------------------------------------------------
  def abstract_state(self):
    """ShapeDtypeStructs of the state with their shardings (orbax targets)."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        self.abstract, self.shardings)

  def init_state(self, seed: int | None = None):
    """The trainer's initial state, computed directly in its sharded layout."""
    seed = self.config.train.seed if seed is None else int(seed)
    config = self.config
    return jax.jit(lambda: trainer.create_train_state(config, seed),
                   out_shardings=self.shardings)()

  def place_state(self, state):
    """An existing (host or single-device) state, placed on the mesh."""
    return jax.device_put(state, self.shardings)

  def place_batch(self, batch: dict):
    """A batch on the mesh. One process: the global batch. Several: either
    the global batch (every process holds the same rows; each takes the
    slices of its own devices) or this process's rows only (process p's part
    of the global batch, as the data pipeline's per-process shards are)."""
    batch = {k: np.asarray(v) for k, v in batch.items()}
    if jax.process_count() == 1:
      return jax.device_put(batch, {k: self.batch_shardings[k] for k in batch})
    out = {}
    for k, v in batch.items():
      shape, sharding = self.batch_shapes[k], self.batch_shardings[k]
      if tuple(v.shape) == tuple(shape):
        out[k] = jax.make_array_from_callback(shape, sharding, lambda idx, v=v: v[idx])
      else:
        out[k] = jax.make_array_from_process_local_data(sharding, v, shape)
    return out

  # ---- compiled functions ----------------------------------------------------
  def mesh_context(self):
    """The context the compiled functions run in: the mesh set as context mesh
    when it has an expert axis (the MoE layers' expert-parallel path reads it
    at trace time), else nothing, so other meshes trace as before."""
    if self.sizes["expert"] <= 1:
      return contextlib.nullcontext()
    if isinstance(self.mesh, jax.sharding.AbstractMesh):
      return jax.sharding.use_abstract_mesh(self.mesh)
    return jax.set_mesh(self.mesh)

  @functools.cached_property
  def train_step(self):
    """jit(train_step, in/out shardings); the state argument is donated."""
    step_fn = trainer.make_train_step(self.config).__wrapped__
    return _OnMesh(jax.jit(step_fn, in_shardings=(self.shardings, self.batch_shardings),
                           out_shardings=(self.shardings, self.replicated),
                           donate_argnums=0), self.mesh_context)

  @functools.cached_property
  def loss(self):
    """jit(params, batch, rng key) -> metrics of the training loss (forward only)."""
    from interaction.objectives import compute_loss
    bind = params_lib.ModelBinder(self.config)
    config = self.config

    def loss_fn(params, batch, rng):
      return compute_loss(bind(params), batch, rng, config)[1]
    return _OnMesh(jax.jit(loss_fn, in_shardings=(self.shardings["params"],
                                                  self.batch_shardings, self.replicated),
                           out_shardings=self.replicated), self.mesh_context)

  def lower_train_step(self, platforms: tuple[str, ...] | None = None):
    """The train step lowered for this mesh from shapes alone (no arrays).

    platforms: e.g. ('cuda',), required on an AbstractMesh (a cluster this
    process does not see); None lowers for the mesh's own devices."""
    batch = {k: jax.ShapeDtypeStruct(s, np.dtype(d), sharding=self.batch_shardings[k])
             for k, (s, d) in _batch_dtypes(self.config, self.batch_size).items()}
    traced = self.train_step.trace(self.abstract_state(), batch)
    if platforms is None:
      return traced.lower()
    return traced.lower(lowering_platforms=tuple(platforms))


def _batch_dtypes(config, batch_size):
  from data_pipeline.pipeline import batch_spec
  return {k: ((int(batch_size),) + tuple(s)[1:], d) for k, (s, d) in batch_spec(config).items()}


def restore_sharded(workdir: str, config, runner: MeshTrainer, step: int | None = None):
  """(state on runner.mesh, data iterator state, step) of a trainer checkpoint.

  Each array is read into its sharding on this mesh, whatever mesh (or single
  device) wrote it; the structure is checked like the trainer's resume."""
  from experiments import checkpointing
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{workdir}: no checkpoint in {ckpt.directory}")
    state, data = ckpt.restore(runner.abstract_state(),
                               checkpointing.structure_meta(config), step=step)
  finally:
    ckpt.close()
  return state, data, int(step)


def from_config(config) -> MeshTrainer | None:
  """The MeshTrainer of `config.mesh.shape` over every device of every
  process, or None for '' (one device). Raises ValueError naming mesh.shape
  when the mesh does not divide the devices, the batch or the model, and
  naming data.batch_size when the processes cannot share the batch."""
  text = str(config.get("mesh", {}).get("shape", "") or "").strip()
  if not text:
    return None
  where = f"mesh.shape={text!r}"
  try:
    sizes = sh.parse_mesh(text, jax.device_count())
    sh.check_model_fits(config, sizes, mesh_text=text)
    runner = MeshTrainer(config, sh.make_mesh(sizes))
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None
  n = jax.process_count()
  if runner.batch_size % n:
    raise ValueError(f"data.batch_size={runner.batch_size} is not divisible by the {n} "
                     f"processes ({where}: each process reads its own rows)")
  return runner
