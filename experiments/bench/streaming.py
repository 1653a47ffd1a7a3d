"""Streaming sessions vs re-prefill, and the demo model's real-time factor.

  python -m experiments.bench streaming [--config=demo] [--points=50,300,600]

(1) Per-micro-turn cost of a session (append the input block to the KV cache,
    generate the output block) against the re-prefill baseline (recompute the
    whole history, then generate), at 10 s, 60 s and 120 s into a session
    (50, 300, 600 micro-turns), interleaved in one run. Targets: the session
    >= 20x cheaper at 60 s; its cost at 120 s <= 1.5x its cost at 10 s.
(2) Real time on this machine: p50 / p99 wall time per micro-turn of the full
    host loop (mel front end, append, text and flow-head steps, vocoder) over
    `--rt_turns` micro-turns of a demo session. Target p99 <= 100 ms.
    `--vocoder=WORKDIR` speaks through the learned vocoder (default Griffin-Lim).
"""

from __future__ import annotations

import importlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments.bench import common
from interaction import params as params_lib
from interaction.params import ModelBinder, load_model
from interaction import streaming as st

_CONFIG = flags.DEFINE_string("config", "demo", "Config module in experiments/configs.")
_POINTS = flags.DEFINE_list("points", ["50", "300", "600"], "Session lengths in micro-turns.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")
_RT_TURNS = flags.DEFINE_integer("rt_turns", 150, "Micro-turns of the real-time run.")
_VOCODER = flags.DEFINE_string(
    "vocoder", "", "Audio out of the real-time run: '' = Griffin-Lim, else a trained "
    "vocoder (a workdir holding vocoder/, from experiments.train_vocoder), or "
    "'untrained' (the learned vocoder's network at its initial weights: the same cost).")


def _turn_inputs(streams, pick):
  """TurnInputs from batch-contract streams, `pick` applied to each present field."""
  fields = (streams["user_audio"], streams["user_text"], streams["background_text"],
            streams.get("video"), streams.get("video_present"))
  return st.TurnInputs(*[None if x is None else pick(x) for x in fields])


def session_vs_reprefill(config, params, points, rounds, reprefill_rounds=2):
  spec = load_model(config, params).spec
  scfg = st.SessionConfig.from_config(config.session)
  scfg = st.SessionConfig(capacity_turns=max(points) + rounds * 3 * len(points) + 8,
                          prefix_turns=scfg.prefix_turns)
  runner = st.SessionRunner(config, params, scfg)
  rng = np.random.default_rng(0)
  hist = common.random_batch(spec, 1, max(points) + 1, rng)
  graph = ModelBinder(config)
  reprefill = jax.jit(lambda p, h, i: st.reprefill_step(graph(p), scfg, h, i, [0]))

  results = {}
  state = runner.init(1, seeds=[0])
  done = 0
  for n in sorted(points):
    # Advance the session to n micro-turns (scan over the history's inputs).
    if n > done:
      seq = _turn_inputs(hist, lambda x: jnp.moveaxis(x[:, done:n], 1, 0))
      state, _ = runner.run(state, seq)
      done = n
    history = {k: v[:, :n] for k, v in hist.items()}
    inputs = _turn_inputs(hist, lambda x: x[:, n])
    jax.block_until_ready(reprefill(params, history, inputs))    # compile

    holder = {"state": state}

    def session_turn():
      holder["state"], out = runner.step(holder["state"], inputs)
      return out

    # Interleaved: each round times the session (3 turns) and, in the first
    # `reprefill_rounds` rounds, one re-prefill, so load hits both alike. The
    # re-prefill takes seconds at 2 minutes; a few samples of it are enough.
    common.block(session_turn())
    samples = {"session": [], "reprefill": []}
    for r in range(rounds):
      t0 = time.perf_counter()
      for _ in range(3):
        common.block(session_turn())
      samples["session"].append((time.perf_counter() - t0) * 1e3 / 3)
      if r < reprefill_rounds:
        t0 = time.perf_counter()
        common.block(reprefill(params, history, inputs))
        samples["reprefill"].append((time.perf_counter() - t0) * 1e3)
    times = {k: statistics.median(v) for k, v in samples.items()}
    state = holder["state"]
    done = int(state.turn[0])
    results[n] = times
  return results


def _vocoder(config, name):
  """The session's `vocoder` argument for --vocoder."""
  if not name:
    return True
  from interaction import learned_vocoder as lv
  if name == "untrained":
    from interaction.layout import LayoutSpec
    vc = lv.VocoderConfig.from_layout(LayoutSpec.from_config(config.layout))
    return lv.LearnedVocoder(vc, lv.init_params(vc, 0), source="untrained")
  return lv.load_vocoder(name)


def real_time(config, params, turns, vocoder=True):
  from interaction.session import Sessions
  sessions = Sessions(config, params, batch_size=1, vocoder=vocoder)
  spec = sessions.spec
  rng = np.random.default_rng(1)
  t = np.arange(turns * spec.samples_per_turn) / spec.sample_rate
  wave = (0.2 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)
          + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)
  chunks = wave.reshape(turns, spec.samples_per_turn)
  frame = (np.zeros((spec.video_height, spec.video_width, 3), np.uint8)
           if spec.video_enabled else None)
  for i in range(3):  # compile and warm up
    sessions.step(chunks[i], video=frame)
  times = []
  for c in chunks:
    t0 = time.perf_counter()
    sessions.step(c, video=frame)
    times.append((time.perf_counter() - t0) * 1e3)
  return {"p50_ms": statistics.median(times),
          "p99_ms": float(np.percentile(times, 99)),
          "max_ms": max(times), "turns": turns}


def main(argv):
  del argv
  name = _CONFIG.value
  config = importlib.import_module(f"experiments.configs.{name}").get_config()
  params = params_lib.init_params(config, int(config.train.seed))
  points = [int(x) for x in _POINTS.value]
  print(f"machine: {common.machine()}")
  print(f"config {name}: session vs re-prefill at {points} micro-turns")
  res = session_vs_reprefill(config, params, points, _ROUNDS.value)
  figures = {}
  for n in points:
    s, r = res[n]["session"], res[n]["reprefill"]
    secs = int(n * 0.2)
    print(f"  {secs:4d} s ({n} turns): session {s:8.2f} ms  re-prefill {r:9.2f} ms"
          f"  ratio {r / s:6.1f}x")
    figures[f"session_{secs}s_ms"] = round(s, 3)
    figures[f"reprefill_{secs}s_ms"] = round(r, 3)
    figures[f"reprefill_over_session_{secs}s_ratio"] = round(r / s, 2)
  lo, hi = min(points), max(points)
  figures["session_growth_ratio"] = round(res[hi]["session"] / res[lo]["session"], 3)
  print(f"  session cost {int(hi * 0.2)} s / {int(lo * 0.2)} s: "
        f"{figures['session_growth_ratio']:.2f}x")
  vocoder = _vocoder(config, _VOCODER.value)
  rt = real_time(config, params, _RT_TURNS.value, vocoder)
  which = "Griffin-Lim" if vocoder is True else f"learned vocoder {vocoder.source}"
  print(f"real time ({name}, full host loop incl. front end, flow steps and "
        f"{which}, {rt['turns']} turns): p50 {rt['p50_ms']:.1f} ms, "
        f"p99 {rt['p99_ms']:.1f} ms, max {rt['max_ms']:.1f} ms per 200 ms micro-turn")
  figures.update({"rt_p50_ms": round(rt["p50_ms"], 2), "rt_p99_ms": round(rt["p99_ms"], 2),
                  "real_time_factor_ratio": round(rt["p50_ms"] / 200.0, 3)})
  common.emit(figures)
  return 0
