"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def block(x):
  return jax.tree_util.tree_map(
      lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def time_fn(fn, *args, warmup: int = 2, iters: int = 10, min_seconds: float = 0.0):
  """Median wall time of `fn(*args)` in milliseconds (results blocked on).

  Runs at least `iters` times and at least `min_seconds` in total.
  """
  for _ in range(warmup):
    block(fn(*args))
  times = []
  start = time.perf_counter()
  while len(times) < iters or time.perf_counter() - start < min_seconds:
    t0 = time.perf_counter()
    block(fn(*args))
    times.append((time.perf_counter() - t0) * 1e3)
  return statistics.median(times)


def interleaved_medians(fns: dict, *, rounds: int = 7, inner: int = 3):
  """Times several callables round-robin so machine noise hits them alike.

  fns: name -> zero-arg callable. Returns name -> median ms per call.
  """
  for fn in fns.values():
    block(fn())
  samples = {k: [] for k in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      for _ in range(inner):
        block(fn())
      samples[name].append((time.perf_counter() - t0) * 1e3 / inner)
  return {k: statistics.median(v) for k, v in samples.items()}


def machine() -> dict:
  mem_gib = None
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemTotal"):
          mem_gib = round(int(line.split()[1]) / 2**20, 1)
  except OSError:
    pass
  return {"cores": os.cpu_count(), "mem_gib": mem_gib,
          "cpu": platform.processor() or platform.machine(),
          "jax": jax.__version__, "backend": jax.default_backend()}


def emit(figures: dict):
  """Prints the figures as the benchmark's last line (one JSON object)."""
  print(json.dumps(figures, sort_keys=True), flush=True)


def random_batch(spec, b, t, rng):
  """A training batch by the layout contract (interaction/layout.py)."""
  from interaction.tokenizer import TOKENIZER
  f, mels = spec.frames_per_turn, spec.n_mels
  vocab = TOKENIZER.vocab_size
  batch = {
      "user_audio": rng.integers(0, spec.dmel_bins, (b, t, f, mels)),
      "model_audio": rng.integers(0, spec.dmel_bins, (b, t, f, mels)),
      "model_mel": rng.standard_normal((b, t, f, mels)).astype(np.float32),
      "user_text": rng.integers(0, vocab, (b, t, 2)),
      "background_text": rng.integers(0, vocab, (b, t, 2)),
      "model_text": rng.integers(0, vocab, (b, t, 2)),
      "turn_mask": np.ones((b, t), bool),
  }
  if spec.video_enabled:
    batch["video"] = rng.integers(0, 256, (b, t, spec.video_height,
                                           spec.video_width, 3)).astype(np.uint8)
    batch["video_present"] = np.ones((b, t), bool)
  return {k: jnp.asarray(v.astype(np.int32) if v.dtype == np.int64 else v)
          for k, v in batch.items()}
