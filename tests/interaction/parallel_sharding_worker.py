"""Subprocess of parallel_sharding_test.py: tensor- vs sequence-parallel bits.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
    python -m tests.interaction.parallel_sharding_worker

The tiny model (a dense block and an MoE block) with invariant kernels, its
decoder stack run by interaction.parallel on several layouts of 8 CPU devices, with the deterministic collectives and with plain psum. Prints one
JSON object: per path and layout, a digest of the output bits and the largest
difference from the first layout.
"""

import hashlib
import json
import sys

import jax
import numpy as np

jax.config.update("jax_default_matmul_precision", "highest")

LAYOUTS = ("data=4,tensor=2", "data=4,sequence=2", "data=2,tensor=2,sequence=2")
PLAIN_LAYOUTS = ("data=4,tensor=2", "data=4,sequence=2")


def tiny_invariant():
  from experiments.configs import tiny
  config = tiny.get_config()                     # a dense block, then an MoE block
  config.model.kernels.mode = "invariant"
  config.data.batch_size = 8
  config.data.turns = 4
  return config


def digest(x) -> str:
  return hashlib.sha256(np.ascontiguousarray(np.asarray(x)).tobytes()).hexdigest()[:16]


def main(layouts):
  from data_pipeline.pipeline import make_train_iter
  from interaction import parallel, sharding
  from interaction.params import init_params, load_model

  config = tiny_invariant()
  params = init_params(config, 0)
  batch = {k: np.asarray(v) for k, v in next(make_train_iter(config)).items()}
  model_out = jax.jit(lambda p, b: load_model(config, p).forward(b))(params, batch)
  out = {"devices": jax.device_count()}
  for path, det, names in (("deterministic", True, layouts), ("psum", False, PLAIN_LAYOUTS)):
    res, first = {}, None
    for text in names:
      mesh = sharding.make_mesh(text)
      f = jax.jit(lambda p, b, mesh=mesh: parallel.parallel_forward(
          config, p, b, mesh, deterministic=det))
      o = f(params, batch)
      logits = np.asarray(o["text_logits"])
      cond = np.asarray(o["audio_cond"])
      if first is None:
        first = (logits, cond)
      res[text] = {"logits": digest(logits), "cond": digest(cond),
                   "max_diff": float(max(np.max(np.abs(logits - first[0])),
                                         np.max(np.abs(cond - first[1])))),
                   "model_diff": float(np.max(np.abs(logits - np.asarray(
                       model_out["text_logits"]))))}
    out[path] = res
  print(json.dumps(out))


if __name__ == "__main__":
  main(sys.argv[1:] or LAYOUTS)
