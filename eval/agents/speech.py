"""Speech output for the scripted agents: TTS and a timeline player.

TTS: espeak-ng (Debian package `espeak-ng`) when it is on PATH, otherwise a
speech-like placeholder (a harmonic buzz with syllable-rate amplitude
modulation) of a plausible length, so audio-based metrics still see speech.
espeak-ng gives no word timings here, so the words share the utterance's span
in proportion to their length; the text events carry those timings.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess

import numpy as np
import soundfile

from interaction import audio_io
from eval.agents.base import SAMPLE_RATE
from eval.events import SPOKEN, TextEvent

_WORD_SECONDS_PER_CHAR = 0.065  # placeholder speaking rate (~170 wpm)


def espeak_available() -> bool:
  return shutil.which("espeak-ng") is not None


def _word_spans(words: list[str], duration: float) -> list[tuple[float, float, str]]:
  weights = [len(w) + 1 for w in words]
  total = sum(weights)
  spans, t = [], 0.0
  for w, k in zip(words, weights):
    dt = duration * k / total
    spans.append((t, t + dt, w))
    t += dt
  return spans


def _placeholder(words: list[str]) -> np.ndarray:
  n = int(SAMPLE_RATE * _WORD_SECONDS_PER_CHAR * sum(len(w) + 1 for w in words))
  t = np.arange(n) / SAMPLE_RATE
  f0 = 140.0
  buzz = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
  envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t)  # ~4 syllables per second
  x = buzz * envelope
  return (0.3 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


@functools.lru_cache(maxsize=512)
def _espeak(text: str) -> np.ndarray | None:
  try:
    res = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "175", "--stdout", text],
                         capture_output=True, timeout=30, check=True)
    data, sr = soundfile.read(io.BytesIO(res.stdout), dtype="float32", always_2d=True)
  except (OSError, subprocess.SubprocessError, RuntimeError):
    return None
  x = audio_io.resample(data.mean(axis=1), sr)
  voiced = np.nonzero(np.abs(x) > 1e-3)[0]
  if len(voiced) == 0:
    return None
  x = x[voiced[0]:voiced[-1] + 1]
  return (0.6 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


class TTS:
  """`synthesize(text) -> (audio, [(t0, t1, word)])`, times relative to the start."""

  def __init__(self, backend: str = "auto"):
    if backend not in ("auto", "espeak", "placeholder"):
      raise ValueError(f"tts backend must be auto|espeak|placeholder, got {backend!r}")
    if backend == "espeak" and not espeak_available():
      raise ValueError("tts backend 'espeak' requested but espeak-ng is not on PATH "
                       "(apt-get install espeak-ng)")
    self.backend = "espeak" if backend == "auto" and espeak_available() else backend
    if self.backend == "auto":
      self.backend = "placeholder"

  def synthesize(self, text: str):
    words = text.split()
    if not words:
      return np.zeros(0, np.float32), []
    audio = _espeak(text) if self.backend == "espeak" else None
    if audio is None:
      audio = _placeholder(words)
    return audio, _word_spans(words, len(audio) / SAMPLE_RATE)


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
