r"""Compile-only dry run for a cluster: lower the train and streaming steps on
an abstract mesh and print per-device memory, before any job is queued.

  python -m experiments.compile_only --config=experiments/configs/tml_small.py \
      --devices=64 --mesh=fsdp=8,expert=8

Nothing is allocated and no accelerator is needed: the train state comes from
`jax.eval_shape`, the mesh is a `jax.sharding.AbstractMesh` of --devices
devices, and the train step (experiments/mesh.py, the trainer's own step with
in/out shardings) and the streaming session step are traced and lowered to
StableHLO for it, which checks that every sharding is legal and divides its
array. A mesh that does not fit the model or the batch is refused first, with
the dimension named (interaction/sharding.py).

The table (per device, GiB): parameters, gradients (same layout as the
parameters), AdamW moments (the parameters' dtype and layout), activations
saved for the backward pass (an estimate: `activation_bytes_per_token`, no
rematerialisation), and the streaming KV cache of --sessions sessions of
`session.capacity_turns`. The last line is one JSON object of the figures.
"""

from __future__ import annotations

import json
import math
import time

from absl import flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Model config file.",
                                          lock_config=True)
_DEVICES = flags.DEFINE_integer("devices", 64, "Devices of the target cluster.")
_MESH = flags.DEFINE_string("mesh", "fsdp=8,expert=8",
                            "Mesh, e.g. 'fsdp=8,expert=8' (interaction/sharding.py).")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Global batch (0: data.batch_size).")
_TURNS = flags.DEFINE_integer("turns", 0, "Micro-turns per example (0: data.turns).")
_SESSIONS = flags.DEFINE_integer("sessions", 0,
                                 "Streaming sessions for the KV-cache row (0: one per "
                                 "batch shard).")
_HBM = flags.DEFINE_float("device_memory_gib", 141.0, "Memory per device (H200: 141 GB).")
_LOWER = flags.DEFINE_bool("lower", True, "Also trace and lower the steps (the check "
                           "that the program partitions on this mesh).")
_PLATFORM = flags.DEFINE_string("platform", "cuda", "Platform to lower for (cuda, tpu, cpu).")

GIB = 2 ** 30


def activation_bytes_per_token(config, sizes) -> dict:
  """Bytes one token keeps per layer for the backward pass, by part, on one
  device (tensor parallelism splits the head and d_ff parts).

  Attention: the block input and its norm (2d), q k v before and after RoPE
  (2 (H + 2 Hkv) hd), the attention output (H hd) and its f32 log-sum-exp (H),
  the residual sum and the FFN norm (2d). MoE: router logits and
  probabilities (2E, f32), the top-k gates, and per routed slot the gathered
  input and the gate, up and gated products (k (d + 3 f)); the shared experts
  3 S f. Dense SwiGLU: 3 d_ff. Plus the block output (d)."""
  m = config.model
  act = 2 if m.dtype == "bfloat16" else 4
  tp = sizes.get("tensor", 1)
  d, h, hkv, hd = int(m.d_model), int(m.num_heads), int(m.num_kv_heads), int(m.head_dim)
  attn = (4 * d + (2 * (h + 2 * hkv) * hd + h * hd) / tp) * act + 4 * h / tp
  if m.ffn == "moe":
    e, k, f = int(m.moe.num_experts), int(m.moe.top_k), int(m.moe.d_ff)
    s = int(m.moe.num_shared_experts)
    ffn = 8 * e + 8 * k + k * (d + 3 * f) * act / tp + 3 * s * f * act / tp
  else:
    ffn = 3 * int(m.d_ff) * act / tp
  return {"attention": attn, "ffn": ffn, "output": d * act,
          "total": attn + ffn + d * act}


def memory_table(config, sizes, *, batch_size: int, turns: int, sessions: int) -> dict:
  """Per-device bytes of every part (see the module docstring)."""
  import jax
  from experiments import mesh as mesh_lib
  from experiments import trainer
  from interaction import sharding as sh
  from interaction.layout import LayoutSpec
  from interaction import streaming
  from interaction.layout import Stream

  abstract = trainer.abstract_train_state(config)
  specs = mesh_lib.state_specs(config, sizes, abstract)
  sh.check_specs_divide(specs, abstract, sizes, what="state")

  def total(tree, spec_tree):
    leaves = jax.tree_util.tree_leaves(tree)
    spec_leaves = jax.tree_util.tree_leaves(spec_tree, is_leaf=lambda x: isinstance(
        x, jax.sharding.PartitionSpec))
    return sum(sh.shard_bytes(x.shape, x.dtype, s, sizes)
               for x, s in zip(leaves, spec_leaves))

  def whole(tree):
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))

  spec = LayoutSpec.from_config(config.layout)
  m = config.model
  tokens = batch_size * turns * spec.slots_per_turn
  per_dev_tokens = tokens / (sh.batch_size_divisor(sizes) * sizes.get("sequence", 1))
  act = activation_bytes_per_token(config, sizes)
  n_layers = int(m.num_layers)
  scfg = streaming.SessionConfig.from_config(config.session)
  cap = streaming.capacity_slots(spec, scfg, int(m.kernels.split_size))
  kv_dtype = 2 if m.dtype == "bfloat16" else 4
  kv_whole = n_layers * 2 * sessions * cap * int(m.num_kv_heads) * int(m.head_dim) * kv_dtype
  kv_split = min(sh.batch_size_divisor(sizes), sessions) * sizes.get("tensor", 1)
  rows = {
      "params": total(abstract["params"], specs["params"]),
      "grads": total(abstract["params"], specs["params"]),
      "opt_state": total(abstract["opt_state"], specs["opt_state"]),
      "activations": int(per_dev_tokens * n_layers * act["total"]),
      "kv_cache": int(kv_whole / kv_split),
  }
  return {"rows": rows, "train_total": rows["params"] + rows["grads"] + rows["opt_state"]
          + rows["activations"],
          "serve_total": rows["params"] + rows["kv_cache"],
          "whole": {"params": whole(abstract["params"]), "opt_state": whole(abstract["opt_state"]),
                    "kv_cache": kv_whole},
          "tokens_per_step": tokens, "tokens_per_device": per_dev_tokens,
          "activation_bytes_per_token_layer": act, "kv_capacity_slots": cap,
          "sessions": sessions}


def lower_steps(config, text: str, devices: int, *, batch_size: int, sessions: int,
                platform: str = "cuda") -> dict:
  """Traces and lowers the train step and the streaming step on an abstract
  mesh of `devices`; returns the seconds each took."""
  import jax
  import numpy as np
  from jax.sharding import NamedSharding, PartitionSpec as P
  from experiments.mesh import MeshTrainer
  from interaction import params as params_lib
  from interaction import sharding as sh
  from interaction import streaming
  from interaction.layout import Stream

  amesh = sh.abstract_mesh(text, devices)
  out = {}
  t0 = time.time()
  runner = MeshTrainer(config, amesh, batch_size=batch_size)
  runner.lower_train_step((platform,))
  out["train_step_lower_s"] = time.time() - t0

  t0 = time.time()
  sizes = sh.mesh_sizes(amesh)
  scfg = streaming.SessionConfig.from_config(config.session)
  binder = params_lib.ModelBinder(config)
  model = params_lib.abstract_model(config)
  state = jax.eval_shape(lambda: streaming.init_state(model, scfg, sessions, 0))
  bax = sh.batch_axes(sizes) if sessions % sh.batch_size_divisor(sizes) == 0 else None
  kv = NamedSharding(amesh, P(bax, None, "tensor" if sizes["tensor"] > 1 else None, None))
  row = NamedSharding(amesh, P(bax))

  def shard_state(path, x):
    name = jax.tree_util.keystr(path)
    s = kv if ("cache" in name and x.ndim == 4) else (row if x.ndim >= 1 else
                                                      NamedSharding(amesh, P()))
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
  state = jax.tree_util.tree_map_with_path(shard_state, state)
  spec = model.spec
  inputs = streaming.TurnInputs(
      user_audio=jax.ShapeDtypeStruct((sessions, spec.frames_per_turn, spec.n_mels),
                                      np.int32, sharding=row),
      user_text=jax.ShapeDtypeStruct((sessions, spec.count(Stream.USER_TEXT)),
                                     np.int32, sharding=row),
      background_text=jax.ShapeDtypeStruct(
          (sessions, spec.count(Stream.BACKGROUND_TEXT)), np.int32, sharding=row),
      video=(jax.ShapeDtypeStruct((sessions, spec.video_height, spec.video_width, 3),
                                  np.uint8, sharding=row) if spec.video_enabled else None),
      video_present=(jax.ShapeDtypeStruct((sessions,), np.bool_, sharding=row)
                     if spec.video_enabled else None))
  params = runner.abstract_state()["params"]

  def step(p, st, inp):
    return streaming.step(binder(p), scfg, st, inp, None)
  jax.jit(step).trace(params, state, inputs).lower(lowering_platforms=(platform,))
  out["streaming_step_lower_s"] = time.time() - t0
  return out


def format_table(result: dict, hbm_gib: float) -> str:
  r = result["rows"]
  lines = [f"{'per device':<34}{'GiB':>10}{'MiB':>12}"]
  names = {"params": "parameters", "grads": "gradients", "opt_state": "AdamW moments",
           "activations": "activations (estimate)", "kv_cache": "KV cache (streaming)"}
  for k, label in names.items():
    lines.append(f"{label:<34}{r[k] / GIB:>10.2f}{r[k] / 2**20:>12.1f}")
  lines.append(f"{'train total':<34}{result['train_total'] / GIB:>10.2f}"
               f"{result['train_total'] / 2**20:>12.1f}   {'fits' if result['train_total'] <= hbm_gib * GIB else 'DOES NOT FIT'}"
               f" in {hbm_gib:g} GiB")
  lines.append(f"{'serve total (params + KV)':<34}{result['serve_total'] / GIB:>10.2f}"
               f"{result['serve_total'] / 2**20:>12.1f}   {'fits' if result['serve_total'] <= hbm_gib * GIB else 'DOES NOT FIT'}"
               f" in {hbm_gib:g} GiB")
  return "\n".join(lines)


def main(argv):
  del argv
  import jax
  jax.config.update("jax_platforms", "cpu")
  from interaction import sharding as sh
  config = _CONFIG.value
  t_start = time.time()
  devices = int(_DEVICES.value)
  sizes = sh.parse_mesh(_MESH.value, devices)
  batch = int(_BATCH.value or config.data.batch_size)
  turns = int(_TURNS.value or config.data.turns)
  if _TURNS.value:
    config.data.turns = turns
  sessions = int(_SESSIONS.value or sh.batch_size_divisor(sizes))
  sh.check_model_fits(config, sizes, batch_size=batch, turns=turns, mesh_text=_MESH.value)
  result = memory_table(config, sizes, batch_size=batch, turns=turns, sessions=sessions)
  timing = {}
  if _LOWER.value:
    timing = lower_steps(config, _MESH.value, devices, batch_size=batch, sessions=sessions,
                         platform=_PLATFORM.value)
  print(f"{config.name} on {devices} devices, mesh {sh.mesh_string(sizes)}: batch {batch} x "
        f"{turns} turns ({result['tokens_per_step']:,} tokens, "
        f"{result['tokens_per_device']:,.0f} per device); {sessions} sessions x "
        f"{config.session.capacity_turns} turns of KV cache")
  print(format_table(result, _HBM.value))
  if timing:
    print("lowered: train step in {train_step_lower_s:.1f} s, streaming step in "
          "{streaming_step_lower_s:.1f} s".format(**timing))
  summary = {"config": config.name, "devices": devices, "mesh": sh.mesh_string(sizes),
             **{f"{k}_gib": round(v / GIB, 3) for k, v in result["rows"].items()},
             "train_total_gib": round(result["train_total"] / GIB, 3),
             "serve_total_gib": round(result["serve_total"] / GIB, 3),
             **{k: round(v, 2) for k, v in timing.items()},
             "seconds": round(time.time() - t_start, 1)}
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  cli.run(main)
