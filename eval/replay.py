"""The replay harness: drives an agent through benchmark samples, 200 ms per step.

Per sample it writes, under `<out>/<sample key>/`:
  output.wav    the agent's audio, 16 kHz, exactly the input's length
  events.jsonl  one line per word/phrase: {"t_start","t_end","text","stream"}
  timeline.png  who spoke when, with the reference windows shaded
  session_events.jsonl  late-session samples only (eval/late.py): the whole
                session's events; output.wav and events.jsonl hold the
                sample's part on the sample's clock
  meta.json     written last: status ("done" | "error"), agent settings,
                clamped_events, wall time. A folder with meta.json is finished
                and skipped on the next run (resume); errors are retried.

Clock: simulated (default; deterministic, as fast as the agent runs) or
`pace="wall"` (each step waits for its 200 ms of wall time, like a live
microphone; steps that overrun are counted).

The command lines are `python -m experiments.replay` (one benchmark) and
`python -m experiments.evaluate` (a suite, several agents, scored).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

import numpy as np
import tqdm

from interaction import audio_io
from eval import late as late_lib
from eval import timeline
from eval.agents.base import (CHUNK_SAMPLES, CHUNK_SECONDS, OUTPUT_LAG_CHUNKS, InputChunk,
                              OutputChunk)
from eval.events import TextEvent, write_events


@dataclasses.dataclass
class ReplayConfig:
  pace: str = "simulated"          # 'simulated' | 'wall'
  lag_chunks: int = OUTPUT_LAG_CHUNKS
  timeline: bool = True
  resume: bool = True
  progress: bool = True

  def __post_init__(self):
    if self.pace not in ("simulated", "wall"):
      raise ValueError(f"pace must be 'simulated' or 'wall', got {self.pace!r}")
    if self.lag_chunks < 0:
      raise ValueError(f"lag_chunks must be >= 0, got {self.lag_chunks}")


def _texts_by_chunk(user_text, n_chunks):
  by = {}
  for t, text in user_text:
    k = min(max(0, int(math.floor(t / CHUNK_SECONDS + 1e-9))), n_chunks - 1)
    by[k] = (by[k] + "\n" + text) if k in by else text
  return by


def replay_sample(agent, sample, cfg: ReplayConfig):
  """Runs one sample; returns (output audio, events, stats). Raises ValueError on bad media."""
  if sample.media_error:
    raise ValueError(sample.media_error)
  user = sample.load_audio()
  video = sample.load_video()
  n = len(user)
  n_chunks = max(1, math.ceil(n / CHUNK_SAMPLES))
  padded = np.zeros(n_chunks * CHUNK_SAMPLES, np.float32)
  padded[:n] = user
  out = np.zeros((n_chunks + cfg.lag_chunks) * CHUNK_SAMPLES, np.float32)
  texts = _texts_by_chunk(sample.user_text, n_chunks)
  background = _texts_by_chunk(sample.background_text, n_chunks)
  events, clamped, overruns = [], 0, 0
  duration = n / audio_io.SAMPLE_RATE
  agent.reset(sample)
  start_wall = time.perf_counter()
  for k in range(n_chunks):
    t = k * CHUNK_SECONDS
    if cfg.pace == "wall":
      wait = start_wall + t - time.perf_counter()
      if wait > 0:
        time.sleep(wait)
      elif k:
        overruns += 1
    frame = None
    if video is not None:
      frame = video.frames[min(int(t * video.fps + 1e-9), len(video.frames) - 1)]
    out_t = (k + cfg.lag_chunks) * CHUNK_SECONDS
    chunk = InputChunk(k, t, padded[k * CHUNK_SAMPLES:(k + 1) * CHUNK_SAMPLES], out_t,
                       frame=frame, user_text=texts.get(k),
                       background_text=background.get(k))
    o = agent.step(chunk)
    if not isinstance(o, OutputChunk):
      raise ValueError(f"agent.step returned {type(o).__name__}, expected OutputChunk")
    a = np.asarray(o.audio, np.float32).reshape(-1)
    if a.shape != (CHUNK_SAMPLES,):
      raise ValueError(f"agent returned {a.shape[0]} audio samples at step {k}; "
                       f"expected {CHUNK_SAMPLES}")
    j = k + cfg.lag_chunks
    out[j * CHUNK_SAMPLES:(j + 1) * CHUNK_SAMPLES] = a
    for e in o.events:
      if e.t_start < out_t - 1e-9:  # words cannot be back-dated before the window
        e = TextEvent(out_t, max(out_t, e.t_end), e.text, e.stream)
        clamped += 1
      if e.t_start < duration:
        events.append(e)
  stats = {"steps": n_chunks, "clamped_events": clamped, "overruns": overruns,
           "wall_s": time.perf_counter() - start_wall, "audio_s": duration}
  return out[:n], events, stats


def replay_to_dir(agent, sample, out_dir: str, cfg: ReplayConfig) -> dict:
  """Runs one sample and writes output.wav, events.jsonl (and timeline.png) into
  `out_dir` itself; returns the stats. Raises ValueError on bad media or agent output.

  A late-session sample (eval.late.LateSample) is replayed whole, prefix and
  all, in one session; output.wav and events.jsonl hold the sample's part on
  the sample's clock, session_events.jsonl the whole session's events."""
  audio, events, stats = replay_sample(agent, sample, cfg)
  os.makedirs(out_dir, exist_ok=True)
  shown, title = sample, f"{agent.name}: {sample.benchmark} {sample.key}"
  if isinstance(sample, late_lib.LateSample):
    write_events(os.path.join(out_dir, "session_events.jsonl"), events)
    audio, events = late_lib.to_sample_clock(audio, events, sample.prefix_s)
    stats["late_session"] = sample.describe()
    shown = sample.base
    title += f" after {sample.prefix_s:.1f} s"
  audio_io.write_wav(os.path.join(out_dir, "output.wav"), audio)
  write_events(os.path.join(out_dir, "events.jsonl"), events)
  if cfg.timeline:
    timeline.draw(os.path.join(out_dir, "timeline.png"), shown.load_audio(), audio, events,
                  title=title, windows=timeline.reference_windows(shown))
  return {**stats, "events": len(events)}


def replay(agent, samples, out_dir: str, cfg: ReplayConfig | None = None, load_errors=()):
  """Replays every sample; returns a summary dict (done / skipped / errors)."""
  cfg = cfg or ReplayConfig()
  os.makedirs(out_dir, exist_ok=True)
  summary = {"agent": agent.describe(), "done": 0, "skipped": 0, "errors": [],
             "audio_s": 0.0, "wall_s": 0.0}
  for err in load_errors:
    summary["errors"].append(err.to_json())
  bar = tqdm.tqdm(samples, desc=f"replay {agent.name}", disable=not cfg.progress,
                  file=sys.stderr)
  for sample in bar:
    d = os.path.join(out_dir, sample.key)
    meta_path = os.path.join(d, "meta.json")
    if cfg.resume and os.path.exists(meta_path):
      try:
        with open(meta_path) as f:
          if json.load(f).get("status") == "done":
            summary["skipped"] += 1
            continue
      except (json.JSONDecodeError, OSError):
        pass  # a broken meta.json: redo the sample
    meta = {"key": sample.key, "benchmark": sample.benchmark, "agent": agent.describe(),
            "clock": cfg.pace, "lag_chunks": cfg.lag_chunks}
    try:
      stats = replay_to_dir(agent, sample, d, cfg)
      meta.update(status="done", **stats)
      summary["done"] += 1
      summary["audio_s"] += stats["audio_s"]
      summary["wall_s"] += stats["wall_s"]
    except ValueError as e:
      os.makedirs(d, exist_ok=True)
      meta.update(status="error", error=str(e))
      summary["errors"].append({"key": sample.key, "benchmark": sample.benchmark,
                                "error": str(e)})
    tmp = meta_path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(meta, f, indent=1)
    os.replace(tmp, meta_path)
  return summary

