"""Subprocess of mesh_sharding_test.py: the tiny model's train steps on one mesh.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
    python -m tests.experiments.mesh_sharding_worker MESH OUT.npz

Places the trainer's initial state (seed 0) on MESH (experiments/mesh.py),
runs two train steps on the first two synthetic batches (8 examples of 6
turns; the first step's learning rate is 0 in warmup, so the second is the
one that sees updated parameters), prints one JSON object (losses, grad
norms, the layouts of a few arrays) and writes the final parameters to
OUT.npz (flattened 'a.b.c' names).
"""

import json
import sys
import time

import jax
import numpy as np

jax.config.update("jax_default_matmul_precision", "highest")

BATCH = 8
TURNS = 6
STEPS = 2


def tiny_config():
  from experiments.configs import tiny
  config = tiny.get_config()
  config.data.batch_size = BATCH
  config.data.turns = TURNS
  return config


def batches(config):
  from data_pipeline.pipeline import make_train_iter
  it = make_train_iter(config)
  return [{k: np.asarray(v) for k, v in next(it).items()} for _ in range(STEPS)]


def flat_params(params) -> dict:
  from experiments.checkpointing import leaf_name
  return {leaf_name(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def _mu_spec(opt_state):
  """Sharding of the AdamW first moment of blocks[0].attn.q.weight."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
    k = jax.tree_util.keystr(path)
    if "mu" in k and "['attn']['q']['weight']" in k and "[0]" in k:
      return str(leaf.sharding.spec)
  return "not found"


def main(text, out_path):
  from experiments import trainer
  from experiments.mesh import MeshTrainer
  from interaction import sharding as sh

  t0 = time.time()
  config = tiny_config()
  data = batches(config)
  host_state = jax.tree_util.tree_map(np.asarray, trainer.create_train_state(config))
  runner = MeshTrainer(config, sh.make_mesh(text))
  state = runner.place_state(host_state)
  losses, norms = [], []
  for batch in data:
    placed = runner.place_batch(batch)
    state, metrics = runner.train_step(state, placed)
    losses.append(float(metrics["loss"]))
    norms.append(float(metrics["grad_norm"]))
  np.savez(out_path, **flat_params(state["params"]))
  p = state["params"]
  print(json.dumps({
      "devices": jax.device_count(), "losses": losses, "grad_norms": norms,
      "w_gate_spec": str(p["blocks"][1]["ffn"]["w_gate"].sharding.spec),
      "q_spec": str(p["blocks"][0]["attn"]["q"]["weight"].sharding.spec),
      "mu_q_spec": _mu_spec(state["opt_state"]),
      "batch_spec": str(placed["user_audio"].sharding.spec),
      "seconds": time.time() - t0}))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
