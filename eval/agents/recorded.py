"""Replays recorded outputs (a previous replay, or any model's files).

Reads `<dir>/<sample key>/output.wav` (any rate) and `events.jsonl`, or an
FD-bench `output.json` (word chunks) when there is no events.jsonl.
"""

from __future__ import annotations

import os

import numpy as np

from interaction import audio_io
from eval.agents.base import CHUNK_SAMPLES, SAMPLE_RATE, Agent, OutputChunk
from eval.predictions import read_prediction


class RecordedAgent(Agent):
  name = "recorded"

  def __init__(self, recorded_dir: str):
    if not recorded_dir or not os.path.isdir(recorded_dir):
      raise ValueError(f"recorded_dir must be an existing folder, got {recorded_dir!r}")
    self.root = recorded_dir

  def reset(self, sample):
    pred = read_prediction(self.root, sample)  # raises ValueError naming the files
    self.events = sorted(pred.events, key=lambda e: e.t_start)
    self.audio = (audio_io.load_audio(pred.audio_path, mix_down=True) if pred.audio_path
                  else np.zeros(0, np.float32))
    self.next_event = 0

  def step(self, chunk):
    a = int(round(chunk.out_t * SAMPLE_RATE))
    out = np.zeros(CHUNK_SAMPLES, np.float32)
    seg = self.audio[a:a + CHUNK_SAMPLES]
    out[:len(seg)] = seg
    t1 = chunk.out_t + CHUNK_SAMPLES / SAMPLE_RATE
    events = []
    while self.next_event < len(self.events) and self.events[self.next_event].t_start < t1:
      events.append(self.events[self.next_event])
      self.next_event += 1
    return OutputChunk(out, events)

  def describe(self):
    return {"name": self.name, "recorded_dir": self.root}
