"""Child process of thread_count_test.py: computes and saves a fixed set of
invariant-mode outputs (the tiny model's training forward with perturbed
parameters, and large kernel calls whose work XLA splits across threads).

  python -m tests.interaction.thread_worker OUT.npz [--one-core]

--one-core pins the process to its first allowed CPU before JAX starts, so
XLA sizes its thread pools for one core (the caller also sets XLA_FLAGS).
"""

import os
import sys
import time


def main(out_path: str, one_core: bool):
  if one_core:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax
  import jax.numpy as jnp
  import numpy as np
  jax.config.update("jax_default_matmul_precision", "highest")

  from data_pipeline.pipeline import make_train_iter
  from experiments.configs import tiny
  from interaction.params import init_params, load_model
  from pallas_kernels import batch_invariant as bi
  from pallas_kernels import numerics as nm
  from tests.interaction.nontrivial import perturbed

  out = {}
  c = tiny.get_config()
  c.model.kernels.mode = "invariant"
  params = perturbed(init_params(c, 0))
  batch = {k: jnp.asarray(v) for k, v in next(make_train_iter(c)).items()}
  fwd = jax.jit(lambda p, b: load_model(c, p).forward(b))(params, batch)
  out["text_logits"] = np.asarray(fwd["text_logits"])
  out["audio_cond"] = np.asarray(fwd["audio_cond"])

  rng = np.random.default_rng(0)
  f32 = lambda *s: jnp.asarray(rng.standard_normal(s).astype(np.float32))
  for impl in ("xla", "xla_blocked"):
    num = nm.Numerics(mode="invariant", impl=impl, split_size=64)
    x, w = f32(1024, 256), f32(512, 256)
    out[f"{impl}_matmul"] = np.asarray(
        jax.jit(lambda x, w: bi.matmul(x, w, num, "nk"))(x, w))
    out[f"{impl}_rms_norm"] = np.asarray(
        jax.jit(lambda x: bi.rms_norm(x, jnp.ones(256), 1e-6, num))(x))
    q, k, v = f32(2, 512, 4, 32), f32(2, 512, 2, 32), f32(2, 512, 2, 32)
    out[f"{impl}_attention"] = np.asarray(jax.jit(lambda q, k, v: nm.attention(
        q, k, v, q_offset=0, kv_len=512, numerics=num))(q, k, v))

  # How parallel this process ran: CPU time over wall time of a large dot.
  big = f32(2048, 2048)
  dot = jax.jit(lambda a: a @ a)
  dot(big).block_until_ready()
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(5):
    dot(big).block_until_ready()
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  np.savez(out_path, **out, cpus=len(os.sched_getaffinity(0)),
           parallelism=cpu / wall, threads=len(os.listdir("/proc/self/task")))


if __name__ == "__main__":
  main(sys.argv[1], "--one-core" in sys.argv[2:])
