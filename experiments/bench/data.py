"""Loader throughput vs the demo training step's consumption (micro-turns/s).

  python -m experiments.bench data [--num=4] [--data=DIR] [--batches=12] [--steps=5]

Generates `--num` espeak episodes per family into a temp dir (or reads --data),
then, in one run on the demo config (batch 4 x 50 turns):
  loader_ms   wall time per batch of the episode loader alone (total / batches,
              after 2 warm-up batches, prefetch threads running as in training);
  step_ms     median time of the jitted demo train_step on a fixed batch;
  e2e_ms      median time per step of the real loop (next(loader) + step);
and the same loader figure for data.source='synthetic'.
micro-turns/s = batch_size * turns / time. Target: loader_vs_step_ratio >= 2.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import jax.numpy as jnp
from absl import flags

from experiments.bench import common

_NUM = flags.DEFINE_integer("num", 4, "Episodes per family to generate.")
_DATA = flags.DEFINE_string("data", "", "Existing episode dir (skips generation).")
_BATCHES = flags.DEFINE_integer("batches", 12, "Loader batches timed.")
_STEPS = flags.DEFINE_integer("steps", 5, "Train steps timed.")


def _loader_ms(config, batches: int) -> float:
  from data_pipeline.pipeline import make_train_iter
  it = make_train_iter(config)
  for _ in range(2):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return (time.perf_counter() - t0) * 1e3 / batches


def main(argv):
  del argv
  num, data, batches, steps = _NUM.value, _DATA.value, _BATCHES.value, _STEPS.value

  from data_pipeline import generate, generators
  from experiments.configs import demo
  from experiments import trainer

  config = demo.get_config()
  tmp = None
  if data:
    data_dir = data
  else:
    tmp = tempfile.TemporaryDirectory()
    data_dir = tmp.name
    t0 = time.perf_counter()
    generate.generate(list(generators.FAMILIES), num, data_dir, progress=False)
    gen_s = time.perf_counter() - t0
  config.data.path = data_dir
  b, t = int(config.data.batch_size), int(config.data.turns)

  loader_ms = _loader_ms(config, batches)
  synth = demo.get_config()
  synth.data.source = "synthetic"
  synthetic_ms = _loader_ms(synth, batches)

  from data_pipeline.pipeline import make_train_iter
  it = make_train_iter(config)
  batch = {k: jnp.asarray(v) for k, v in next(it).items()}
  holder = {"state": trainer.create_train_state(config, 0)}
  step = trainer.make_train_step(config)

  def one_step(bt):
    holder["state"], metrics = step(holder["state"], bt)
    return metrics

  step_ms = common.time_fn(lambda: one_step(batch), warmup=1, iters=steps)
  e2e = []
  for _ in range(steps):
    t0 = time.perf_counter()
    common.block(one_step({k: jnp.asarray(v) for k, v in next(it).items()}))
    e2e.append((time.perf_counter() - t0) * 1e3)
  e2e_ms = statistics.median(e2e)

  per_batch = b * t
  figures = {
      "bench": "data", "config": "demo", "batch_size": b, "turns": t,
      "loader_ms": round(loader_ms, 2), "synthetic_loader_ms": round(synthetic_ms, 2),
      "step_ms": round(step_ms, 1), "e2e_ms": round(e2e_ms, 1),
      "loader_turns_per_s": round(per_batch * 1e3 / loader_ms, 1),
      "synthetic_turns_per_s": round(per_batch * 1e3 / synthetic_ms, 1),
      "step_turns_per_s": round(per_batch * 1e3 / step_ms, 1),
      "loader_vs_step_ratio": round(step_ms / loader_ms, 2),
      "e2e_vs_step_ratio": round(e2e_ms / step_ms, 3),
      "loader_stats": it.stats(), **common.machine(),
  }
  if tmp is not None:
    figures["generate_s"] = round(gen_s, 1)
    figures["generated_episodes"] = num * len(generators.FAMILIES)
  print(f"loader {figures['loader_turns_per_s']} micro-turns/s vs demo step "
        f"{figures['step_turns_per_s']} micro-turns/s "
        f"(ratio {figures['loader_vs_step_ratio']}, target >= 2)")
  common.emit(figures)
  if tmp is not None:
    tmp.cleanup()
  return 0
