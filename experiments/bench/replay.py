"""Replay-harness speed in x real time, with a trivial (silent) agent.

  python -m experiments.bench replay [--samples=8] [--seconds=30] [--rounds=3]

Builds `samples` FD-bench-style turn-taking folders of `seconds` of audio in a
temp dir, then replays them end to end (load wav, 200 ms steps, write
output.wav + events.jsonl + meta.json) with the silent agent, with and
without the timeline picture, plus the VAD cascade for scale. Rounds are
interleaved so machine noise hits every mode alike; medians are reported.
Target: silent agent >= 50x real time (the harness must never dominate).

Then the cost of scoring from the audio (timing source `audio`: Silero VAD +
PocketSphinx on every output.wav) on the oracle's replies (espeak when
installed), against scoring the same folder from its events: seconds per
minute of output audio, and per minute of speech in it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import soundfile
from absl import flags

from eval import loaders
from eval import predictions as pred_lib
from eval.agents import make_agent
from eval.replay import ReplayConfig, replay
from eval.score import score_benchmark
from experiments.bench.common import emit, machine

_SAMPLES = flags.DEFINE_integer("samples", 8, "FD-bench-style samples.")
_SECONDS = flags.DEFINE_float("seconds", 30.0, "Audio per sample.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")


def _make_suite(root, n, seconds):
  rng = np.random.default_rng(0)
  base = os.path.join(root, "turn_taking")
  for i in range(n):
    d = os.path.join(base, f"s{i:03d}")
    os.makedirs(d)
    t = np.arange(int(seconds * 16000)) / 16000
    x = 0.2 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 0.2 * t) > 0)
    x += 0.01 * rng.standard_normal(len(t))
    soundfile.write(os.path.join(d, "input.wav"), x.astype(np.float32), 16000, subtype="PCM_16")
    with open(os.path.join(d, "turn_taking.json"), "w") as f:
      f.write('[{"text": "[TURN-TAKING]", "timestamp": [%.2f, %.2f]}]' % (seconds / 2, seconds / 2 + 0.4))
  return root


def _audio_scoring(suite, samples, out, rounds, audio_s) -> dict:
  from eval.asr import make_aligner
  oracle = make_agent("oracle")
  replay(oracle, samples, out, ReplayConfig(timeline=False, resume=False, progress=False))
  aligner = make_aligner()
  aligner.align(np.zeros(16000, np.float32))  # load the model outside the timing
  times = {"audio": [], "events": []}
  speech_s = 0.0
  for _ in range(rounds):
    for timing in times:
      pred_lib._heard.cache_clear()  # pylint: disable=protected-access  # time the decode
      t0 = time.perf_counter()
      res = score_benchmark("fdb_v1", suite, out, timing=timing, aligner=aligner)
      times[timing].append(time.perf_counter() - t0)
      assert not res.errors, res.errors
      if timing == "audio":
        speech_s = sum(v["audio_s"] for v in res.speech.values())
  t_audio, t_events = (statistics.median(times[t]) for t in ("audio", "events"))
  extra = max(0.0, t_audio - t_events)
  return {"score_audio_ms": round(t_audio * 1e3, 1), "score_events_ms": round(t_events * 1e3, 1),
          "scored_speech_s": round(speech_s, 1), "oracle_tts": oracle.describe()["tts"],
          "audio_scoring_s_per_audio_min": round(extra / (audio_s / 60), 3),
          "audio_scoring_s_per_speech_min": round(extra / (speech_s / 60), 3) if speech_s else None}


def main(argv):
  del argv
  n_samples, seconds, rounds = _SAMPLES.value, _SECONDS.value, _ROUNDS.value
  tmp = tempfile.mkdtemp(prefix="bench_replay_")
  try:
    suite = _make_suite(os.path.join(tmp, "fdb_v1"), n_samples, seconds)
    samples = loaders.load("fdb_v1", suite).samples
    audio_s = sum(s.duration for s in samples)
    modes = {
        "silent": (lambda: make_agent("silent"), False),
        "silent_timeline": (lambda: make_agent("silent"), True),
        "vad_cascade": (lambda: make_agent("vad_cascade", tts_backend="placeholder"), False),
    }
    times = {m: [] for m in modes}
    for r in range(rounds):
      for m, (make, pictures) in modes.items():
        out = os.path.join(tmp, f"out_{m}_{r}")
        cfg = ReplayConfig(timeline=pictures, resume=False, progress=False)
        t0 = time.perf_counter()
        summary = replay(make(), samples, out, cfg)
        times[m].append(time.perf_counter() - t0)
        assert summary["done"] == len(samples), summary["errors"]
        shutil.rmtree(out)
    med = {m: statistics.median(v) for m, v in times.items()}
    figures = {"audio_s": audio_s, "samples": len(samples), "rounds": rounds,
               "machine": machine()}
    for m, t in med.items():
      figures[f"{m}_ms"] = round(t * 1e3, 1)
      figures[f"{m}_realtime_ratio"] = round(audio_s / t, 1)
    figures["target_realtime_ratio"] = 50
    print(f"{len(samples)} samples x {seconds:g} s = {audio_s:.0f} s of audio; "
          f"median of {rounds} interleaved rounds")
    for m, t in med.items():
      print(f"  {m:16s} {t * 1e3:9.1f} ms  {audio_s / t:8.1f}x real time")
    figures.update(_audio_scoring(suite, samples, os.path.join(tmp, "oracle"), rounds, audio_s))
    print(f"  scoring from audio: {figures['audio_scoring_s_per_audio_min']:.2f} s per minute of "
          f"output ({figures['audio_scoring_s_per_speech_min']:.2f} s per minute of speech; "
          f"events: {figures['score_events_ms']:.0f} ms in all)")
    emit(figures)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return 0
