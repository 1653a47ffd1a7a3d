"""One process of the multi-process test (distributed_test.py::test_two_processes...).

  python -m tests.experiments.distributed_worker WORKDIR FIRST LAST TAG

Joins the run through experiments.distributed (the launcher's JAX_* variables;
none: a single process), lays the tiny model data-parallel over every device
of every process (mesh data=-1), starts from scratch (FIRST=1) or from
WORKDIR's checkpoint (orbax, restored into this mesh's layout), trains steps
FIRST..LAST on the deterministic synthetic batches (each process holds the
global batch and feeds its own devices' rows), saves a checkpoint at LAST and
writes the losses to WORKDIR/losses-TAG.json (process 0).
"""

import json
import os
import sys

import jax
import numpy as np

jax.config.update("jax_default_matmul_precision", "highest")


def tiny_config():
  from experiments.configs import tiny
  config = tiny.get_config()
  config.data.batch_size = 4
  config.data.turns = 4
  return config


def main(workdir, first, last, tag):
  from experiments import checkpointing, distributed
  from experiments.mesh import MeshTrainer, restore_sharded
  from interaction import sharding
  from data_pipeline.pipeline import make_train_iter

  distributed.maybe_initialize(timeout_s=120)
  config = tiny_config()
  runner = MeshTrainer(config, sharding.make_mesh("data=-1"))
  it = make_train_iter(config)                       # the same global batches everywhere
  if first == 1:
    state = runner.init_state()
  else:
    state, _, step = restore_sharded(workdir, config, runner)
    assert step == first - 1, (step, first)
    for _ in range(step):
      next(it)
  losses = {}
  for step in range(first, last + 1):
    state, metrics = runner.train_step(state, runner.place_batch(next(it)))
    losses[step] = float(metrics["loss"])
  ckpt = checkpointing.Checkpointer(workdir, keep=3)
  ckpt.save(last, state, {"step": last}, checkpointing.structure_meta(config))
  ckpt.wait()
  ckpt.close()
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f"losses-{tag}.json"), "w") as f:
      json.dump({"losses": losses, "processes": jax.process_count(),
                 "devices": jax.device_count()}, f)
  print("done", jax.process_index(), losses, flush=True)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
