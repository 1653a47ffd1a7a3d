"""Speech output for the scripted agents: TTS and a timeline player.

TTS: espeak-ng through `data_pipeline.tts` (the generators' front end, with
espeak's own word timings) when libespeak-ng is installed, otherwise a
speech-like placeholder (`data_pipeline.synthetic.babble`, the training
stand-in voice) of a plausible length, so audio-based metrics still see speech;
the placeholder's words share its span in proportion to their length
(`data_pipeline.words.spread`). The text events carry those timings.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np

from data_pipeline import synthetic
from data_pipeline import tts as tts_lib
from data_pipeline import words as words_lib
from eval.agents.base import SAMPLE_RATE
from eval.events import SPOKEN, TextEvent

_WORD_SECONDS_PER_CHAR = 0.065  # placeholder speaking rate (~170 wpm)
# The agents' voice: one fixed voice, a little faster than the generators'
# default, peak at 0.6 (these settings predate the move to libespeak).
_VOICE = {"voice": "en-us", "rate": 175}
_LEVEL = 0.6


def espeak_available() -> bool:
  try:
    tts_lib.check_available()
  except tts_lib.EspeakNotFound:
    return False
  return True


def _placeholder(words: list[str]) -> np.ndarray:
  """Buzz-speech of the words' plausible length, the same for the same words."""
  seconds = _WORD_SECONDS_PER_CHAR * sum(len(w) + 1 for w in words)
  rng = np.random.default_rng(zlib.crc32(" ".join(words).encode()))
  # babble peaks at 0.1 (training-data level); the agents speak up, at 0.3.
  return 3.0 * synthetic.babble(seconds, rng, SAMPLE_RATE)


@functools.lru_cache(maxsize=512)
def _espeak(text: str):
  """(audio, [(t0, t1, word)]) from espeak, or None when it says nothing."""
  try:
    speech = tts_lib.synthesize(text, sample_rate=SAMPLE_RATE, level=_LEVEL, **_VOICE)
  except (RuntimeError, ValueError):  # no audio (punctuation only, ...): placeholder
    return None
  spans = [(w["t_start"], w["t_end"], w["text"]) for w in speech.words]
  speech.wave.setflags(write=False)  # cached: shared by every utterance of `text`
  return (speech.wave, spans) if spans else None


class TTS:
  """`synthesize(text) -> (audio, [(t0, t1, word)])`, times relative to the start."""

  def __init__(self, backend: str = "auto"):
    if backend not in ("auto", "espeak", "placeholder"):
      raise ValueError(f"tts backend must be auto|espeak|placeholder, got {backend!r}")
    if backend == "espeak" and not espeak_available():
      raise ValueError("tts backend 'espeak' requested but libespeak-ng is not "
                       "installed (apt-get install espeak-ng)")
    if backend == "auto":
      backend = "espeak" if espeak_available() else "placeholder"
    self.backend = backend

  def synthesize(self, text: str):
    words = [w for _, _, w in words_lib.split(text)]
    if not words:
      return np.zeros(0, np.float32), []
    out = _espeak(text) if self.backend == "espeak" else None
    if out is None:
      audio = _placeholder(words)
      out = audio, words_lib.spread(words, 0.0, len(audio) / SAMPLE_RATE)
    return out


class SpeechPlayer:
  """Utterances placed on the sample's absolute timeline, rendered chunk by chunk."""

  def __init__(self, tts: TTS):
    self.tts = tts
    self._utts: list[dict] = []

  def reset(self):
    self._utts = []

  def say(self, text: str, at: float) -> float:
    """Schedules `text` to start at `at` seconds; returns its end time."""
    audio, spans = self.tts.synthesize(text)
    start = int(round(at * SAMPLE_RATE))
    words = [{"t0": at + a, "t1": at + b, "text": w, "emitted": False} for a, b, w in spans]
    self._utts.append({"start": start, "audio": audio, "words": words})
    return at + len(audio) / SAMPLE_RATE

  def busy_until(self) -> float:
    return max(((u["start"] + len(u["audio"])) / SAMPLE_RATE for u in self._utts), default=0.0)

  def speaking(self, t0: float, t1: float) -> bool:
    """True when some scheduled audio overlaps [t0, t1)."""
    a, b = t0 * SAMPLE_RATE, t1 * SAMPLE_RATE
    return any(u["start"] < b and u["start"] + len(u["audio"]) > a for u in self._utts)

  def stop(self, at: float) -> None:
    """Cuts everything scheduled from `at` on (barge-in)."""
    cut = int(round(at * SAMPLE_RATE))
    for u in self._utts:
      keep = max(0, cut - u["start"])
      u["audio"] = u["audio"][:keep]
      u["words"] = [dict(w, t1=min(w["t1"], at)) for w in u["words"] if w["t0"] < at]
    self._utts = [u for u in self._utts if len(u["audio"]) or any(not w["emitted"] for w in u["words"])]

  def render(self, t0: float, n_samples: int):
    """Audio for [t0, t0 + n) and events for words not yet emitted that start before its end."""
    out = np.zeros(n_samples, np.float32)
    a = int(round(t0 * SAMPLE_RATE))
    b = a + n_samples
    t1 = b / SAMPLE_RATE
    events = []
    for u in self._utts:
      s, e = u["start"], u["start"] + len(u["audio"])
      lo, hi = max(a, s), min(b, e)
      if hi > lo:
        out[lo - a:hi - a] += u["audio"][lo - s:hi - s]
      for w in u["words"]:
        if not w["emitted"] and w["t0"] < t1:
          w["emitted"] = True
          events.append(TextEvent(w["t0"], w["t1"], w["text"], SPOKEN))
    # Utterances wholly in the past are done.
    self._utts = [u for u in self._utts
                  if u["start"] + len(u["audio"]) > b or any(not w["emitted"] for w in u["words"])]
    return out, events
