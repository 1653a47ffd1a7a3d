"""Replays the ground truth: the right words at the right times.

The plan is built from the sample's reference at `reset`, so the oracle needs
no input. It is exact up to the harness clock: nothing can be said before the
first output window (0.2 s with the default one-chunk lag).
"""

from __future__ import annotations

import math

from data_pipeline import words as words_lib
from eval import text as text_lib
from eval.agents.base import CHUNK_SAMPLES, CHUNK_SECONDS, CONTROL, Agent, OutputChunk
from eval.agents.speech import TTS, SpeechPlayer
from eval.events import TextEvent

_FILLER = ("so the plan for today is to walk through each step carefully and make sure "
           "everything is clear before we move on to the next part of the project").split()

# What FD-bench v1.5 counts as the desirable behaviour per task.
V15_DESIRED = {"user_interruption": "C_RESPOND", "user_backchannel": "C_RESUME",
               "talking_to_other": "C_RESUME", "background_speech": "C_RESUME"}


def _filler(seconds: float) -> str:
  n = max(4, math.ceil(seconds * 3.2))
  return " ".join(_FILLER[i % len(_FILLER)] for i in range(n))


def plan(sample) -> list[tuple[float, str, float | None]]:
  """[(start_time, text, stop_time_or_None)] the oracle says for this sample."""
  ref, b, task = sample.reference, sample.benchmark, sample.task
  if b == "fdb_v1":
    if task == "turn_taking":
      return [(ref["turn"][0][0], "Sure, let me answer that for you right now.", None)]
    if task == "user_interruption":
      # Yield, and take the turn up ("Sure, go ahead: another question."):
      # repeating it would be an echo, which the judges rate irrelevant. Short,
      # because the input (so the output) often ends ~2 s after the interruption.
      tail = [w for _, _, w in words_lib.split(ref["interrupt_text"])][-2:]
      return [(ref["interrupt"][1], "Sure, go ahead: " + " ".join(tail) + ".", None)]
    return []  # pause handling: keep quiet; backchannel: no ground-truth timing
  if b == "fdb_v1_5":
    s, e = ref["overlap"]
    start = max(0.0, s - 2.0)
    if V15_DESIRED.get(task) == "C_RESPOND":
      return [(start, _filler(2.5), s + 0.2),
              (e + 0.3, f"Sure. You said {ref['current_turn_text']}", None)]
    return [(start, _filler(e - start + 2.0), None)]
  if b == "proactive_videoqa":
    return [(a["reply_timespan"][0], a["content"], None) for a in ref["answer"]]
  if b == "repcount":
    count = ref["count"]
    if count == 0:
      return []
    video = sample.load_video()
    duration = sample.duration
    cycles = ref["cycles"]
    if video is not None and len(cycles) == count:
      times = [end / video.fps for _, end in cycles]
    else:  # CSV count and cycle pairs disagree: spread the count over the video
      times = [duration * (i + 1) / (count + 1) for i in range(count)]
    return [(t, text_lib.number_to_words(i + 1), None) for i, t in enumerate(times)]
  if b == "charades":
    s, e = ref["segment"]
    return [(s, "start", None), (e, "stop", None)]
  if b in ("timespeak", "cuespeak"):
    out = []
    for t in ref["targets"]:
      w0, w1 = t["window"]
      out.append((w0 + min(0.05, (w1 - w0) / 4), t["text"], None))
    return out
  if b == "delegation":
    w0, w1 = ref["answer_window"]
    return [(w0 + min(0.05, (w1 - w0) / 4), ref["answer"], None)]
  raise ValueError(f"oracle has no plan for benchmark {b!r}")


def control_plan(sample) -> list[tuple[float, str]]:
  """[(time, control token)] the oracle emits: `<delegate>` at the start of the
  delegation window (never before the question ends)."""
  ref = sample.reference
  if sample.benchmark == "delegation":
    return [(max(ref["delegate_window"][0], ref["question_end"]), "<delegate>")]
  return []


class OracleAgent(Agent):
  name = "oracle"

  def __init__(self, tts_backend: str = "auto"):
    self.tts = TTS(tts_backend)
    self.player = SpeechPlayer(self.tts)

  def reset(self, sample):
    self.player.reset()
    for at, text, stop in plan(sample):
      self.player.say(text, at)
      if stop is not None:
        self.player.stop(stop)
    self.controls = sorted(control_plan(sample))

  def step(self, chunk):
    audio, events = self.player.render(chunk.out_t, CHUNK_SAMPLES)
    t1 = chunk.out_t + CHUNK_SECONDS
    while self.controls and self.controls[0][0] < t1:
      at, token = self.controls.pop(0)
      events.append(TextEvent(at, at, token, CONTROL))
    return OutputChunk(audio, events)

  def describe(self):
    return {"name": self.name, "tts": self.tts.backend}
