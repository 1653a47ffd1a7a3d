"""The late-session column: a sample replayed after minutes of earlier conversation.

An agent that takes turns well on a fresh session may not two minutes in (a
full KV cache evicting, a VAD drifting, state leaking between turns). For the
FD-bench v1 turn-taking and pause-handling samples, `late_samples` builds per
sample a prefix of at least `late_s` seconds of earlier conversation in the
same session: the input.wav of the suite's *other* turn-taking samples (in key
order, cycled until long enough), each followed by `gap_s` of silence (time for
an answer) and padded to whole 200 ms chunks, so the sample itself starts on
the harness's chunk grid. The agent hears prefix + sample as one session (one
`reset`): it keeps its state across the prefix.

The replay keeps only what the agent did during the sample's own part, on the
sample's clock (`to_sample_clock`): output.wav is cut to the sample's part,
events that start in the prefix are dropped and the rest are shifted back by
the prefix's length. The cut outputs score against the sample's own
references, as a plain replay does (from the audio too: the VAD and the
recogniser hear only the cut output.wav). The whole session's events are kept
in `session_events.jsonl` beside them.

Deterministic: the same suite and `late_s` give the same prefix for every
agent. The agent sees a reference shifted onto the session clock (the oracle
answers the sample's turn; the cascade's perfect-ASR transcript covers the
prefix's turns too).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from eval.agents.base import CHUNK_SAMPLES, SAMPLE_RATE
from eval.events import TextEvent
from eval.samples import Sample

# FD-bench v1 tasks replayed late, and the label suffix of their results.
LATE_TASKS = ("turn_taking", "pause_handling")
SUFFIX = "@late"
# Silence after each earlier clip: room for an answer (the cascade's longest
# scripted reply ends ~4 s after a turn), so no reply runs into the next clip.
ANSWER_GAP_S = 4.0


def label(benchmark: str) -> str:
  """The results label of a benchmark's late column: 'fdb_v1@late'."""
  return benchmark + SUFFIX


def base_benchmark(label_: str) -> str:
  """'fdb_v1@late' -> 'fdb_v1' (a plain name is returned as is)."""
  return label_.split("@", 1)[0]


def folder(late_s: float) -> str:
  """The replay folder of the late column (per agent): distinct from the plain
  replay and per prefix length, so resuming never mixes outputs of different runs."""
  return f"fdb_v1{SUFFIX}_{late_s:g}s"


@dataclasses.dataclass
class LateSample(Sample):
  """`base` heard after `clips` (the prefix) in one session; the reference is
  the base's, shifted by `prefix_s` onto the session clock."""
  base: Sample | None = None
  clips: tuple = ()          # ((offset in samples, Sample), ...) in order
  prefix_s: float = 0.0
  prefix_samples: int = 0
  cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  @functools.cached_property
  def duration(self) -> float:
    return self.prefix_s + self.base.duration

  def _audio_of(self, s: Sample) -> np.ndarray:
    if s.key not in self.cache:
      self.cache[s.key] = s.load_audio()
    return self.cache[s.key]

  def load_audio(self) -> np.ndarray:
    own = self.base.load_audio()
    x = np.zeros(self.prefix_samples + len(own), np.float32)
    ends = [off for off, _ in self.clips[1:]] + [self.prefix_samples]
    for (off, clip), end in zip(self.clips, ends):
      a = self._audio_of(clip)[:end - off]
      x[off:off + len(a)] = a
    x[self.prefix_samples:] = own
    return x

  def describe(self) -> dict:
    return {"prefix_s": round(self.prefix_s, 4), "clips": [c.key for _, c in self.clips]}


def _shift_reference(ref: dict, shift: float, clips) -> dict:
  out = dict(ref)
  for k in ("pause", "turn"):
    if k in ref:
      out[k] = [(a + shift, b + shift) for a, b in ref[k]]
  # The perfect-ASR stand-in of the cascade: every clip's words at their session times.
  trans = []
  for off_s, r in [(off / SAMPLE_RATE, c.reference) for off, c in clips] + [(shift, ref)]:
    for spk in r.get("transcription") or []:
      if not isinstance(spk, dict):
        continue
      items = []
      for item in spk.get("item", []):
        ts = (item.get("timestamp") if isinstance(item, dict) else None) or [None, None]
        if ts[0] is not None:
          items.append({**item, "timestamp": [ts[0] + off_s,
                                              None if ts[1] is None else ts[1] + off_s]})
      trans.append({**spk, "item": items})
  if trans:
    out["transcription"] = trans
  return out


def _slot(s: Sample, gap_n: int) -> int:
  """Samples one earlier clip takes in the prefix: its audio and the gap, in whole chunks."""
  n = int(round(s.duration * SAMPLE_RATE)) + gap_n
  return max(CHUNK_SAMPLES, math.ceil(n / CHUNK_SAMPLES) * CHUNK_SAMPLES)


def late_samples(samples, late_s: float, gap_s: float = ANSWER_GAP_S) -> list[LateSample]:
  """A LateSample for each FD-bench v1 turn-taking / pause-handling sample.

  The prefix: the other turn-taking samples in key order, cycled until at least
  `late_s` seconds (with only one turn-taking sample: the other late-task
  samples; with none either: the sample itself, heard once before).
  """
  if late_s <= 0:
    return []
  if gap_s < 0:
    raise ValueError(f"gap_s must be >= 0, got {gap_s}")
  usable = sorted((s for s in samples if s.benchmark == "fdb_v1" and s.task in LATE_TASKS
                   and not s.media_error), key=lambda s: s.key)
  turns = [s for s in usable if s.task == "turn_taking"]
  targets = [s for s in samples if s.benchmark == "fdb_v1" and s.task in LATE_TASKS]
  gap_n = int(round(gap_s * SAMPLE_RATE))
  want = int(math.ceil(late_s * SAMPLE_RATE - 1e-6))
  cache: dict = {}
  out = []
  for s in targets:
    pool = ([p for p in turns if p.key != s.key] or [p for p in usable if p.key != s.key]
            or [s])
    clips, n = [], 0
    while n < want:
      clip = pool[len(clips) % len(pool)]
      clips.append((n, clip))
      n += _slot(clip, gap_n)
    shift = n / SAMPLE_RATE
    out.append(LateSample(
        id=s.id, benchmark=s.benchmark, task=s.task, path=s.path,
        reference=_shift_reference(s.reference, shift, clips), audio_path=s.audio_path,
        user_text=[(t + shift, x) for t, x in s.user_text],
        background_text=[(t + shift, x) for t, x in s.background_text],
        question=s.question, media_error=s.media_error, group=s.group,
        base=s, clips=tuple(clips), prefix_s=shift, prefix_samples=n, cache=cache))
  return out


def to_sample_clock(audio: np.ndarray, events, prefix_s: float, *, shift: bool = True):
  """(audio, events) of a late replay's sample part, on the sample's clock.

  audio: the session's output cut at the prefix's end; events: those starting
  at or after it, moved back by `prefix_s`. `shift=False` keeps the session
  times (wrong: for tests that show the shift matters).
  """
  n0 = int(round(prefix_s * SAMPLE_RATE))
  d = prefix_s if shift else 0.0
  kept = [TextEvent(e.t_start - d, e.t_end - d, e.text, e.stream) for e in events
          if e.t_start >= prefix_s - 1e-9]
  return np.asarray(audio)[n0:], kept
