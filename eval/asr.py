"""Speech recognition with word timestamps, for scoring what the listener hears.

Full-Duplex-Bench transcribes `output.wav` with NeMo parakeet-tdt-0.6b-v2.
Model downloads are not possible on this project's machines, so the built-in
recogniser is PocketSphinx 5 (PyPI `pocketsphinx`; its wheel carries the
en-us acoustic model, language model and dictionary): offline, CPU, nothing
fetched at run time. It is far weaker than parakeet (see `word_error_rate` in
the eval report), but its word *timings* are what the timing metrics need.

Public API (stable; other packages use it for word error rates):
  transcribe(wave_16k) -> [(t0, t1, word)]   seconds, lower-case words
  word_error_rate(ref_text, hyp_text) -> float
  Aligner / PocketSphinxAligner / make_aligner(name)

How a waveform is decoded (`PocketSphinxAligner.align`):
- Silero VAD (eval/vad.py) finds the speech regions; only those are decoded,
  each padded by `pad_s`. PocketSphinx, unlike parakeet, "hears" words in
  noise and silence; gating on the VAD keeps an agent whose output is noise
  from being credited with words (FD-bench's ASR would write none).
- Each region is brought to a fixed peak level and gets a faint seeded noise
  floor (-46 dB re the peak). PocketSphinx's front end was trained on real
  recordings; on clean synthetic speech with digital silence its word error
  rate on our TTS voice is ~0.7, with the floor ~0.25 (measured on sentences
  that are not in any suite).
- Words are PocketSphinx's segments without fillers (<s>, </s>, <sil>,
  [NOISE]); alternate pronunciations ("the(2)") lose their suffix.
"""

from __future__ import annotations

import abc
import functools
import re
import threading

import numpy as np

from eval import text as text_lib

SAMPLE_RATE = 16000
_FILLER = re.compile(r"^(<.*>|\[.*\]|\+.*\+)$")


class Aligner(abc.ABC):
  name = "aligner"

  @abc.abstractmethod
  def align(self, audio_16k) -> list[tuple[float, float, str]]:
    """[(t0, t1, word)] in seconds on the waveform's clock."""


class PocketSphinxAligner(Aligner):
  """PocketSphinx en-us on VAD-gated speech regions (see the module docstring)."""

  name = "pocketsphinx-5 en-us (Silero-gated)"

  def __init__(self, *, pad_s: float = 0.25, join_gap_s: float = 0.4, level: float = 0.6,
               floor: float = 3e-3, gate: bool = True, decoder_options: dict | None = None):
    self.pad_s, self.join_gap_s, self.level, self.floor = pad_s, join_gap_s, level, floor
    self.gate = gate
    # fwdflat off: a lower word error rate on our voice (0.25 vs 0.27) and 30%
    # faster; the other settings are PocketSphinx's defaults.
    self.options = {"fwdflat": False, **(decoder_options or {})}
    self._lock = threading.Lock()  # a decoder is not reentrant
    self._decoder = None

  def _dec(self):
    if self._decoder is None:
      try:
        from pocketsphinx import Decoder
      except ImportError:
        raise ValueError("PocketSphinx is not installed: pip install 'pocketsphinx>=5.0.4,<5.1' "
                         "(experiments/setup_env.sh does)") from None
      # The default model is the en-us one inside the wheel: no download.
      self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", **self.options)
    return self._decoder

  def regions(self, audio: np.ndarray) -> list[tuple[int, int]]:
    """Sample spans to decode: VAD speech, padded, joined over short gaps."""
    n = len(audio)
    if not self.gate:
      return [(0, n)] if n else []
    from eval import vad as vad_lib
    segs = vad_lib.silero_segments(audio, time_resolution=None)
    out: list[list[int]] = []
    pad, gap = int(self.pad_s * SAMPLE_RATE), int(self.join_gap_s * SAMPLE_RATE)
    for s, e in segs:
      a, b = max(0, int(s * SAMPLE_RATE) - pad), min(n, int(e * SAMPLE_RATE) + pad)
      if out and a - out[-1][1] <= gap:
        out[-1][1] = max(out[-1][1], b)
      else:
        out.append([a, b])
    return [(a, b) for a, b in out]

  def _decode(self, x: np.ndarray, offset: float):
    peak = float(np.abs(x).max()) if len(x) else 0.0
    if peak <= 0:
      return []
    x = x * (self.level / peak)
    # Seeded per region: the same audio always gives the same words.
    rng = np.random.default_rng(len(x))
    x = x + self.floor * rng.standard_normal(len(x))
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes()
    dec = self._dec()
    frate = int(dec.config["frate"])
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    words = []
    for seg in dec.seg():
      if _FILLER.match(seg.word):
        continue
      w = re.sub(r"\(\d+\)$", "", seg.word)
      words.append((round(offset + seg.start_frame / frate, 3),
                    round(offset + (seg.end_frame + 1) / frate, 3), w))
    return words

  def align(self, audio_16k):
    audio = np.asarray(audio_16k, np.float32).reshape(-1)
    if not np.all(np.isfinite(audio)):
      raise ValueError("audio has NaN or infinite samples")
    words = []
    with self._lock:
      for a, b in self.regions(audio):
        words += self._decode(audio[a:b].astype(np.float64), a / SAMPLE_RATE)
    return words


class UnavailableAligner(Aligner):
  """Placeholder that says clearly why there are no words."""

  name = "unavailable"

  def align(self, audio_16k):
    raise ValueError("no ASR aligner is configured; score with timing='events' or plug "
                     "an Aligner in")


ALIGNERS = ("pocketsphinx",)


@functools.lru_cache(maxsize=None)
def make_aligner(name: str = "pocketsphinx") -> Aligner:
  """The named recogniser, one per process (loading the model takes ~0.5 s)."""
  if name == "pocketsphinx":
    return PocketSphinxAligner()
  raise ValueError(f"unknown aligner {name!r}; known: {ALIGNERS}")


def transcribe(wave_16k) -> list[tuple[float, float, str]]:
  """Words with timestamps of 16 kHz mono float audio: [(t0, t1, word)] seconds."""
  return make_aligner("pocketsphinx").align(wave_16k)


def word_errors(ref_text: str, hyp_text: str) -> tuple[int, int]:
  """(substitutions + deletions + insertions, reference words), on normalised
  tokens (eval.text.tokens: lower case, no punctuation, number words as digits)."""
  ref, hyp = text_lib.tokens(ref_text), text_lib.tokens(hyp_text)
  d = list(range(len(hyp) + 1))
  for i in range(1, len(ref) + 1):
    prev, d[0] = d[:], i
    for j in range(1, len(hyp) + 1):
      d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (ref[i - 1] != hyp[j - 1]))
  return d[len(hyp)], len(ref)


def word_error_rate(ref_text: str, hyp_text: str) -> float:
  """Levenshtein word errors / reference words on normalised tokens. An empty
  reference gives 0.0 for an empty hypothesis and 1.0 otherwise (no division by 0)."""
  errors, n = word_errors(ref_text, hyp_text)
  if n == 0:
    return 0.0 if errors == 0 else 1.0
  return errors / n
