"""Orbax checkpoints in the workdir: train state + data iterator state + structure.

A checkpoint holds three items: `state` (step, params, optimizer state, rng),
`data` (the grain iterator's JSON state, so a resumed run sees exactly the
batches an uninterrupted run would) and `meta` (the structure-defining config:
layout and model). Restoring into a different structure fails with a per-field
diff instead of an opaque reshape error (orbax#648-style failures): first the
config fields, then the saved arrays' names and shapes against the model's
(which catches a code change that renames or reshapes parameters).
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp


def structure_meta(config) -> dict:
  """Config fields that define parameter shapes or the slot layout."""
  return {"layout": json.loads(config.layout.to_json()),
          "model": json.loads(config.model.to_json())}


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


# Fields that may change across a resume without changing any parameter shape.
_RUNTIME_FIELDS = ("model.kernels.", "model.moe.impl", "model.moe.auto_threshold",
                   "model.moe.gemv_kernel", "model.flow.num_steps", "model.dtype")


def check_structure(saved: dict, current: dict):
  a, b = _flatten(saved), _flatten(current)
  diffs = [f"  {k}: checkpoint={a.get(k)!r} config={b.get(k)!r}"
           for k in sorted(set(a) | set(b))
           if a.get(k) != b.get(k) and not k.startswith(_RUNTIME_FIELDS)]
  if diffs:
    raise ValueError("checkpoint structure does not match the config; use a new "
                     "--workdir or restore the old fields:\n" + "\n".join(diffs))


def _key_name(key) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def leaf_name(path) -> str:
  """'a.b.0.c': the dotted name of a pytree key path."""
  return ".".join(_key_name(k) for k in path)


def _leaf_shapes(tree) -> dict:
  """'a.b.0.c' -> shape for every array leaf (checkpoint metadata or target)."""
  return {leaf_name(path): tuple(getattr(leaf, "shape", ()))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


_WHAT = ("checkpoint arrays do not match the model", "the code or the config changed "
         "since it was written")
_ADVICE = "use a new --workdir or the code that wrote it"


def check_state_tree(saved_tree, target_tree, max_lines: int = 12, *,
                     what: str | None = None, advice: str = _ADVICE):
  """Raises ValueError naming the arrays that differ in name or shape.

  what/advice: the message's head and its advice (default: a resume's)."""
  a, b = _leaf_shapes(saved_tree), _leaf_shapes(target_tree)
  diffs = []
  # Parameters first: the optimizer state repeats their names.
  for k in sorted(set(a) | set(b), key=lambda k: (not k.startswith("params."), k)):
    if k not in b:
      diffs.append(f"  {k}: in the checkpoint {a[k]}, not in the model")
    elif k not in a:
      diffs.append(f"  {k}: in the model {b[k]}, not in the checkpoint")
    elif a[k] != b[k]:
      diffs.append(f"  {k}: checkpoint shape {a[k]}, model shape {b[k]}")
  if diffs:
    more = (f"\n  ... and {len(diffs) - max_lines} more"
            if len(diffs) > max_lines else "")
    head = (f"{_WHAT[0]} ({len(diffs)} differences; {_WHAT[1]})" if what is None
            else f"{what} ({len(diffs)} differences)")
    raise ValueError(f"{head}: {advice}:\n" + "\n".join(diffs[:max_lines]) + more)


class Checkpointer:

  def __init__(self, workdir: str, keep: int = 2, *, cleanup_tmp: bool = False):
    """cleanup_tmp: remove unfinished saves (tmp dirs) left by a killed run. Only
    the training run that owns the workdir sets it: a reader (evaluation, a
    session) must not remove the save a live run has in flight."""
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             cleanup_tmp_directories=cleanup_tmp),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": ocp.JsonCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, meta: dict, force=False):
    self.manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                data=ocp.args.JsonSave(data_state),
                                meta=ocp.args.JsonSave(meta)),
        force=force)

  def restore(self, abstract_state, meta: dict, step=None):
    """Restores (state, data_state) of `step` (default latest) into the abstract
    target: onto the default device, or into the leaves' NamedShardings where
    the target has them (a mesh, experiments/mesh.py)."""
    step = self.manager.latest_step() if step is None else step
    saved_meta = self.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    check_structure(saved_meta, meta)

    def leaf(x):
      s = getattr(x, "sharding", None)
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=(
          s if isinstance(s, jax.sharding.NamedSharding) else None))
    target = jax.tree_util.tree_map(leaf, abstract_state)
    saved_state = self.manager.item_metadata(step)["state"]
    check_state_tree(getattr(saved_state, "tree", saved_state), target)
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                      data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def restore_data(self, step=None) -> dict:
    """The data iterator state saved with `step` (default latest)."""
    step = self.manager.latest_step() if step is None else step
    return self.manager.restore(
        step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()
