"""Device meshes and partition rules: where every array of the model lives.

One mesh, five named axes, always in this order (outermost first, so the
axes that talk most, `tensor` and `sequence`, are the innermost and stay
inside an NVLink node when the mesh is laid over several):

  data      pure data parallelism: the batch is split, parameters replicated.
  fsdp      data parallelism with parameters and optimizer state sharded
            (ZeRO-3): the batch is split over it too, and each parameter's
            largest dimension that it divides is split over it.
  expert    expert parallelism: the routed experts' leading E axis (the
            'expert' sharding name the MoE layer gives its weights) is split;
            the batch is split over it too, as in GShard.
  sequence  sequence (context) parallelism: the T micro-turn axis of the batch
            (and hence of every activation) is split.
  tensor    tensor (Megatron) parallelism: the 'tensor' sharding name the
            attention and SwiGLU projections carry (heads and d_ff) is split.

A mesh is written as a string, `"data=2,fsdp=4"`; axes left out have size 1
and one axis may be `-1` (whatever the device count leaves). `parse_mesh`
checks it against the device count; `check_model_fits` checks it against the
model and batch dimensions, and both raise a ValueError naming the axis and
the dimension that do not divide, before anything is compiled.

Parameters carry *logical* sharding names (interaction/layers.py, moe/layer.py):
`logical_rules(sizes)` maps them to mesh axes (through flax's
`nnx.logical_axis_rules` + `nnx.get_partition_spec`), and `param_specs` adds
the fsdp dimension. Optimizer state follows the parameter it mirrors
(`mirror_specs`). The batch is split over (data, fsdp, expert) on its first
axis and over `sequence` on its turn axis (`batch_specs`); the streaming KV
cache [B, C, Hkv, D] over the batch axes and `tensor` on Hkv
(`kv_cache_spec`).

Nothing here builds a concrete array: every function works on shapes, so the
same rules serve a real mesh (`make_mesh`) and an abstract one
(`abstract_mesh`, compile-only dry runs for clusters this machine is not).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "expert", "sequence", "tensor")
BATCH_AXES = ("data", "fsdp", "expert")
# Logical names used by the model's parameters -> the mesh axis they go on.
LOGICAL_TO_MESH = {"tensor": "tensor", "expert": "expert"}


# ---------------------------------------------------------------------------
# Mesh strings
# ---------------------------------------------------------------------------
def parse_mesh(text: str | Mapping[str, int] | None,
               num_devices: int | None = None) -> dict[str, int]:
  """'data=2,fsdp=4' -> {axis: size} over all of AXES (missing axes 1).

  '' / None / 'auto' is 'data=-1'. One axis may be -1: it takes what the
  others leave of `num_devices` (default jax.device_count()). The product
  must equal the device count. Errors name the mesh string and the problem.
  """
  if isinstance(text, Mapping):
    items = [(str(k), v) for k, v in text.items()]
    shown = ",".join(f"{k}={v}" for k, v in items)
  else:
    shown = (text or "").strip()
    if shown in ("", "auto"):
      shown = "data=-1"
    items = []
    for part in shown.split(","):
      part = part.strip()
      if not part:
        continue
      name, eq, value = part.partition("=")
      if not eq:
        raise ValueError(f"mesh {shown!r}: {part!r} is not AXIS=SIZE "
                         f"(axes: {', '.join(AXES)})")
      items.append((name.strip(), value.strip()))
  sizes: dict[str, int] = {}
  for name, value in items:
    if name not in AXES:
      raise ValueError(f"mesh {shown!r}: unknown axis {name!r} (axes: {', '.join(AXES)})")
    if name in sizes:
      raise ValueError(f"mesh {shown!r}: axis {name!r} given twice")
    try:
      size = int(value)
    except (TypeError, ValueError):
      raise ValueError(f"mesh {shown!r}: size {value!r} of axis {name!r} is not "
                       "an integer") from None
    if size == 0 or size < -1:
      raise ValueError(f"mesh {shown!r}: size {size} of axis {name!r} must be "
                       "positive (or -1: the rest of the devices)")
    sizes[name] = size
  if num_devices is None:
    num_devices = jax.device_count()
  free = [n for n, s in sizes.items() if s == -1]
  if len(free) > 1:
    raise ValueError(f"mesh {shown!r}: only one axis may be -1, got {free}")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if free:
    if num_devices % fixed:
      raise ValueError(f"mesh {shown!r}: the fixed axes ({fixed} devices) do not "
                       f"divide the {num_devices} devices")
    sizes[free[0]] = num_devices // fixed
  total = math.prod(sizes.values())
  if total != num_devices:
    raise ValueError(f"mesh {shown!r}: {total} devices in the mesh but "
                     f"{num_devices} devices available (jax.device_count()); the "
                     "axis sizes must multiply to the device count")
  return {a: int(sizes.get(a, 1)) for a in AXES}


def mesh_string(sizes: Mapping[str, int]) -> str:
  """{axis: size} -> 'data=2,fsdp=4' (axes of size 1 left out)."""
  out = ",".join(f"{a}={sizes[a]}" for a in AXES if sizes.get(a, 1) != 1)
  return out or "data=1"


def make_mesh(text: str | Mapping[str, int] | None = None,
              devices: Iterable | None = None) -> Mesh:
  """A concrete mesh over `devices` (default all of jax.devices()).

  Axis types are Auto: jit propagates shardings through the unchanged model
  (GSPMD) from the parameters' and the batch's placement.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = parse_mesh(text, len(devices))
  shape = tuple(sizes[a] for a in AXES)
  try:
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # pylint: disable=broad-except  # e.g. odd topologies
    grid = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(grid, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def abstract_mesh(text: str | Mapping[str, int], num_devices: int) -> AbstractMesh:
  """The mesh of a cluster this process does not see: names and sizes only."""
  sizes = parse_mesh(text, num_devices)
  return AbstractMesh(tuple(sizes[a] for a in AXES), AXES,
                      axis_types=(AxisType.Auto,) * len(AXES))


def mesh_sizes(mesh) -> dict[str, int]:
  return {a: int(mesh.shape[a]) for a in AXES}


# ---------------------------------------------------------------------------
# Logical rules and parameter specs
# ---------------------------------------------------------------------------
def logical_rules(sizes: Mapping[str, int]) -> tuple[tuple[str, str | None], ...]:
  """(logical name, mesh axis or None) for `nnx.logical_axis_rules`.

  A logical name whose mesh axis has size 1 maps to None (replicated), so
  the specs stay short and valid on any mesh.
  """
  return tuple((name, axis if sizes.get(axis, 1) > 1 else None)
               for name, axis in LOGICAL_TO_MESH.items())


def _pure(tree):
  """nnx State of PartitionSpecs -> nested dict (the trainer's param layout)."""
  return nnx.to_pure_dict(tree)


def logical_param_specs(abstract_state, sizes: Mapping[str, int]) -> dict:
  """PartitionSpecs from the parameters' own sharding names (no fsdp yet)."""
  with nnx.logical_axis_rules(logical_rules(sizes)):
    specs = nnx.get_partition_spec(abstract_state)
  return _pure(specs)


def _is_spec(x) -> bool:
  return isinstance(x, P)


def add_fsdp(spec: P, shape: tuple[int, ...], fsdp: int) -> P:
  """Splits the largest dimension not already split that `fsdp` divides
  (ties: the first); a parameter no dimension of which it divides stays as
  it was (replicated over fsdp)."""
  entries = list(spec) + [None] * (len(shape) - len(spec))
  if fsdp <= 1:
    return P(*entries)
  best = None
  for i, (n, e) in enumerate(zip(shape, entries)):
    if e is None and n % fsdp == 0 and (best is None or n > shape[best]):
      best = i
  if best is not None:
    entries[best] = "fsdp"
  return P(*entries)


def param_specs(abstract_params, sizes: Mapping[str, int], abstract_state=None) -> dict:
  """{param path: PartitionSpec} for a pure-dict parameter tree.

  `abstract_state`: the nnx State of nnx.Param variables that carries the
  sharding names (interaction.params.ModelBinder(config).abstract); without
  it only fsdp applies.
  """
  if abstract_state is not None:
    specs = logical_param_specs(abstract_state, sizes)
  else:
    specs = jax.tree_util.tree_map(lambda x: P(), abstract_params)
  return jax.tree_util.tree_map(
      lambda s, x: add_fsdp(s, tuple(x.shape), sizes.get("fsdp", 1)),
      specs, abstract_params, is_leaf=_is_spec)


def _key_names(path) -> tuple[str, ...]:
  out = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        out.append(str(getattr(k, attr)))
        break
    else:
      out.append(str(k))
  return tuple(out)


def mirror_specs(tree, named_specs: Mapping[tuple[str, ...], P],
                 shapes: Mapping[tuple[str, ...], tuple]) -> object:
  """Specs for a tree whose leaves mirror parameters (optimizer moments):
  a leaf whose key path ends with a parameter's path and has its shape gets
  that parameter's spec; every other leaf (counts, scalars) is replicated."""
  by_len = sorted({len(k) for k in named_specs}, reverse=True)

  def spec_of(path, leaf):
    names = _key_names(path)
    for n in by_len:
      if len(names) >= n:
        key = names[-n:]
        if key in named_specs and tuple(shapes[key]) == tuple(getattr(leaf, "shape", ())):
          return named_specs[key]
    return P()
  return jax.tree_util.tree_map_with_path(spec_of, tree)


def flat_specs(params_specs, params) -> tuple[dict, dict]:
  """({path: spec}, {path: shape}) of a parameter tree and its specs."""
  specs = {_key_names(p): s for p, s in
           jax.tree_util.tree_flatten_with_path(params_specs, is_leaf=_is_spec)[0]}
  shapes = {_key_names(p): tuple(x.shape) for p, x in
            jax.tree_util.tree_flatten_with_path(params)[0]}
  return specs, shapes


# ---------------------------------------------------------------------------
# Batch and KV cache
# ---------------------------------------------------------------------------
def batch_axes(sizes: Mapping[str, int]):
  """The mesh axes (of size > 1) the batch dimension is split over."""
  axes = tuple(a for a in BATCH_AXES if sizes.get(a, 1) > 1)
  if not axes:
    return None
  return axes if len(axes) > 1 else axes[0]


def batch_size_divisor(sizes: Mapping[str, int]) -> int:
  return math.prod(sizes.get(a, 1) for a in BATCH_AXES)


def batch_spec_for(shape: tuple[int, ...], sizes: Mapping[str, int]) -> P:
  """[B] -> batch axes; [B, T, ...] -> batch axes, then `sequence` on T."""
  if not shape:
    return P()
  seq = "sequence" if sizes.get("sequence", 1) > 1 and len(shape) >= 2 else None
  if len(shape) == 1:
    return P(batch_axes(sizes))
  return P(batch_axes(sizes), seq)


def batch_specs(shapes: Mapping[str, tuple], sizes: Mapping[str, int]) -> dict:
  """{key: PartitionSpec} of a training batch ({key: shape})."""
  return {k: batch_spec_for(tuple(s), sizes) for k, s in shapes.items()}


def kv_cache_spec(sizes: Mapping[str, int]) -> P:
  """A layer's K or V cache [B, C, Hkv, D]: sessions over the batch axes,
  KV heads over `tensor` (the cache stays whole along C: a session appends
  and evicts at any slot)."""
  return P(batch_axes(sizes), None, "tensor" if sizes.get("tensor", 1) > 1 else None, None)


# ---------------------------------------------------------------------------
# Checks: a mesh that does not divide the model fails here, naming both
# ---------------------------------------------------------------------------
def check_model_fits(config, sizes: Mapping[str, int], *, batch_size: int | None = None,
                     turns: int | None = None, mesh_text: str | None = None) -> None:
  """Raises ValueError listing every model or batch dimension a mesh axis
  does not divide (`batch_size`, `turns`: default config.data's)."""
  m = config.model
  shown = mesh_text or mesh_string(sizes)
  b = int(config.data.batch_size if batch_size is None else batch_size)
  t = int(config.data.turns if turns is None else turns)
  problems = []

  def need(axis_size, value, what, axis):
    if axis_size > 1 and value % axis_size:
      problems.append(f"{what}={value} is not divisible by {axis}={axis_size}")

  tp = sizes.get("tensor", 1)
  need(tp, int(m.num_heads), "model.num_heads", "tensor")
  need(tp, int(m.num_kv_heads), "model.num_kv_heads", "tensor")
  dense_layers = (int(m.num_layers) if m.ffn != "moe"
                  else min(int(m.first_dense_layers), int(m.num_layers)))
  if dense_layers:
    need(tp, int(m.d_ff), "model.d_ff", "tensor")
  if m.ffn == "moe" and int(m.num_layers) > int(m.first_dense_layers):
    need(sizes.get("expert", 1), int(m.moe.num_experts), "model.moe.num_experts", "expert")
  dp = batch_size_divisor(sizes)
  if dp > 1 and b % dp:
    problems.append(f"data.batch_size={b} is not divisible by data*fsdp*expert={dp}")
  need(sizes.get("sequence", 1), t, "data.turns", "sequence")
  if problems:
    raise ValueError(f"mesh {shown!r} does not fit the model: " + "; ".join(problems))


def check_specs_divide(specs, shapes, sizes: Mapping[str, int], what: str = "params") -> None:
  """Every split dimension is divisible by its mesh axes (else ValueError
  naming the array, the dimension and the axes)."""
  bad = []
  flat_s, _ = jax.tree_util.tree_flatten_with_path(specs, is_leaf=_is_spec)
  flat_x = jax.tree_util.tree_leaves(shapes)
  for (path, spec), x in zip(flat_s, flat_x):
    shape = tuple(x.shape)
    for dim, entry in enumerate(spec):
      if entry is None:
        continue
      axes = entry if isinstance(entry, tuple) else (entry,)
      n = math.prod(sizes.get(a, 1) for a in axes)
      if shape[dim] % n:
        bad.append(f"{what}.{'.'.join(_key_names(path))}: dim {dim} of {shape} "
                   f"is not divisible by {'*'.join(axes)}={n}")
  if bad:
    raise ValueError(f"mesh {mesh_string(sizes)!r}: " + "; ".join(bad[:8])
                     + (f" (and {len(bad) - 8} more)" if len(bad) > 8 else ""))


def named(mesh, specs):
  """PartitionSpecs -> NamedShardings on `mesh` (same tree)."""
  return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs, is_leaf=_is_spec)


def shard_bytes(shape: tuple[int, ...], dtype, spec: P, sizes: Mapping[str, int]) -> int:
  """Bytes one device holds of an array of `shape` split by `spec`."""
  n = int(np.prod(shape)) * np.dtype(dtype).itemsize
  split = 1
  for entry in spec:
    if entry is None:
      continue
    for a in (entry if isinstance(entry, tuple) else (entry,)):
      split *= sizes.get(a, 1)
  return n // split
