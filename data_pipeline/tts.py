"""espeak-ng speech with word timings, through the C library (ctypes).

Why not the `espeak-ng` command: it cannot report where words start, and the
ground truth of several families (CueSpeak cue words, the model's word-timed
text stream) needs exactly that. The library's synchronous mode hands back
audio plus WORD events with their sample positions, in-process and without a
fork per phrase. There is no maintained Python binding of libespeak-ng on PyPI
that exposes these events, hence this small wrapper. It is the one espeak front
end: the eval harness's scripted agents speak through it too
(`eval/agents/speech.py`).

Install: `apt-get install espeak-ng` (Debian/Ubuntu; it pulls libespeak-ng1).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import os
import pickle
import subprocess
import sys
import threading
import zlib

import librosa
import numpy as np

from data_pipeline import words as words_lib

INSTALL_HINT = ("espeak-ng is not installed (libespeak-ng.so.1 not found). "
                "Install it with `sudo apt-get install -y espeak-ng` (Debian/"
                "Ubuntu) or `brew install espeak-ng` (macOS), then retry.")

# Voice sets: training and held-out evaluation never share an accent+variant.
TRAIN_VOICES = tuple(f"{a}+{v}" for a in ("en-us", "en", "en-gb-x-rp", "en-029")
                     for v in ("m1", "m2", "m3", "m7", "f1", "f2", "f3"))
HELDOUT_VOICES = tuple(f"{a}+{v}" for a in ("en-gb-scotland", "en-us-nyc",
                                             "en-gb-x-gbclan", "en-gb-x-gbcwmd")
                       for v in ("m4", "m5", "m6", "f4", "f5"))


class EspeakNotFound(RuntimeError):
  pass


_EVENT_WORD, _EVENT_END_LIST = 1, 0
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7


class _Event(ctypes.Structure):
  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
              ("text_position", ctypes.c_int), ("length", ctypes.c_int),
              ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short),
                             ctypes.c_int, ctypes.POINTER(_Event))


@dataclasses.dataclass
class Speech:
  """Synthesized speech at `sample_rate`: wave trimmed to the first/last voiced sample."""
  wave: np.ndarray                 # f32 [n]
  sample_rate: int
  words: list                      # [{"text", "t_start", "t_end"}] seconds within `wave`
  text: str

  @property
  def duration(self) -> float:
    return len(self.wave) / self.sample_rate


class _Engine:
  """One libespeak-ng per process; calls are serialised (the library is not reentrant)."""

  def __init__(self):
    name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
      self.lib = ctypes.CDLL(name)
    except OSError:
      raise EspeakNotFound(INSTALL_HINT) from None
    self.lib.espeak_Initialize.restype = ctypes.c_int
    self.rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 200, None, 0)
    if self.rate <= 0:
      raise EspeakNotFound(INSTALL_HINT + " (espeak_Initialize failed: its "
                           "data files may be missing)")
    self.lock = threading.Lock()
    # espeak's noise sources (fricatives, breath) draw from libc rand(); seeding
    # it per phrase makes a phrase's audio independent of what was said before.
    self.libc = ctypes.CDLL(None)
    self._chunks: list[np.ndarray] = []
    self._words: list[tuple[int, int, int]] = []
    self._cb = _CALLBACK(self._on_audio)  # kept alive: the library holds the pointer
    self.lib.espeak_SetSynthCallback(self._cb)
    self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]

  def _on_audio(self, wav, n, events):
    if n > 0:
      self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
    i = 0
    while events[i].type != _EVENT_END_LIST:
      e = events[i]
      if e.type == _EVENT_WORD:
        self._words.append((e.text_position, e.length, e.sample))
      i += 1
    return 0

  def _synth_here(self, text, voice, rate, pitch, pitch_range):
    if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
      raise ValueError(f"espeak-ng voice {voice!r} is not available")
    for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range),
                         (_VOLUME, 100), (_WORDGAP, 0)):
      self.lib.espeak_SetParameter(param, int(value), 0)
    self._chunks, self._words = [], []
    data = text.encode("utf-8") + b"\0"
    self.libc.srand(zlib.crc32(data + f"{voice}|{rate}|{pitch}|{pitch_range}".encode()))
    err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                None, None)
    self.lib.espeak_Synchronize()
    if err != 0:
      raise RuntimeError(f"espeak_Synth failed ({err}) for {text!r}")
    wave = (np.concatenate(self._chunks) if self._chunks
            else np.zeros(0, np.int16)).astype(np.float32) / 32768.0
    return wave, list(self._words)

  def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int):
    """Synthesizes in a forked child of this (never-synthesizing) process.

    libespeak-ng keeps state across utterances (its pitch-flutter phase, among
    others), so the same phrase comes out a few samples different depending on
    what was said before, and espeak_Terminate/Initialize hangs in synchronous
    mode. A fork starts every phrase from the same pristine state: a phrase is
    a pure function of (text, voice, rate, pitch), whatever the worker order.
    Costs a few ms per phrase.
    """
    if not hasattr(os, "fork"):
      with self.lock:
        return self._synth_here(text, voice, rate, pitch, pitch_range)
    if _runtime_threads_started():
      return _server().synth(text, voice, rate, pitch, pitch_range)
    with self.lock:
      r, w = os.pipe()
      pid = os.fork()
      if pid == 0:  # child: synthesize, send, leave without cleanup handlers
        code = 0
        try:
          os.close(r)
          try:
            payload = pickle.dumps(("ok", self._synth_here(text, voice, rate, pitch,
                                                          pitch_range)))
          except BaseException as e:  # pylint: disable=broad-except
            payload = pickle.dumps(("error", e))
          with os.fdopen(w, "wb") as f:
            f.write(payload)
        except BaseException:  # pylint: disable=broad-except
          code = 1
        os._exit(code)  # pylint: disable=protected-access
      os.close(w)
      with os.fdopen(r, "rb") as f:
        payload = f.read()
      os.waitpid(pid, 0)
    if not payload:
      raise RuntimeError(f"espeak-ng child process failed for {text!r}")
    status, value = pickle.loads(payload)
    if status == "error":
      raise value
    return value


def _runtime_threads_started() -> bool:
  """True once JAX has started its backend in this process: its thread pools
  make a fork unsafe (a child can inherit a lock held by another thread)."""
  jax = sys.modules.get("jax")
  if jax is None:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
    return bool(xla_bridge._backends)  # pylint: disable=protected-access
  except Exception:  # pylint: disable=broad-except  # private API moved: be safe
    return True


class _SynthServer:
  """A fresh, single-threaded Python that forks per phrase on our behalf.

  Used when this process already runs JAX (an eval run with the model agent
  beside the scripted ones): there a fork could deadlock, so phrases are
  synthesised by `python -c "...tts._serve()"`, which never starts JAX.
  Requests and results are length-prefixed pickles over its stdin/stdout.
  """

  def __init__(self):
    self.lock = threading.Lock()
    self.proc = subprocess.Popen(
        [sys.executable, "-c", "from data_pipeline import tts; tts._serve()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

  def synth(self, *request):
    with self.lock:
      _send(self.proc.stdin, request)
      reply = _recv(self.proc.stdout)
    if reply is None:
      raise RuntimeError("espeak-ng synthesis process ended unexpectedly")
    status, value = reply
    if status == "error":
      raise value
    return value


def _send(f, obj) -> None:
  data = pickle.dumps(obj)
  f.write(len(data).to_bytes(8, "little") + data)
  f.flush()


def _recv(f):
  head = f.read(8)
  if len(head) < 8:
    return None
  return pickle.loads(f.read(int.from_bytes(head, "little")))


def _serve() -> None:
  """The synthesis server's loop (see _SynthServer)."""
  inp, out = sys.stdin.buffer, sys.stdout.buffer
  while (request := _recv(inp)) is not None:
    try:
      reply = ("ok", engine().synth(*request))
    except Exception as e:  # pylint: disable=broad-except  # sent back, raised there
      reply = ("error", e)
    _send(out, reply)


_SERVER: _SynthServer | None = None


def _server() -> _SynthServer:
  global _SERVER
  if _SERVER is None or _SERVER.proc.poll() is not None:
    _SERVER = _SynthServer()
  return _SERVER


_ENGINE: _Engine | None = None


def engine() -> _Engine:
  global _ENGINE
  if _ENGINE is None:
    _ENGINE = _Engine()
  return _ENGINE


def check_available() -> None:
  """Raises EspeakNotFound (with the install command) if espeak-ng is missing."""
  engine()


def _voiced_bounds(wave: np.ndarray, sr: int, thresh_db: float = -40.0):
  """First and last sample of 5 ms frames within thresh_db of the loudest frame."""
  hop = max(1, sr // 200)
  n = len(wave) // hop
  if n == 0:
    return 0, 0
  rms = np.sqrt(np.mean(wave[:n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
  on = np.nonzero(20 * np.log10(rms / rms.max()) > thresh_db)[0]
  if not len(on):
    return 0, 0
  return on[0] * hop, min(len(wave), (on[-1] + 1) * hop)


def _word_starts(text: str, events, lo: int, src: int, dur: float):
  """[(start_seconds, word)] for the words of `text` (data_pipeline.words).

  espeak's WORD events point into the text (1-based character positions) but
  not one per word: a number gets one event per spoken part ("156" -> three),
  and its lengths cut contractions and hyphenated words short ("don't" ->
  "don"). So the words come from the text and each starts at the first event
  inside it; a word with no event (rare) is placed by interpolating its
  character offset between its neighbours.
  """
  spans = words_lib.split(text)
  first = {}
  for pos, _, sample in events:
    i = next((k for k, (a, b, _) in enumerate(spans) if a <= pos - 1 < b), None)
    if i is not None and i not in first:
      first[i] = float(np.clip((sample - lo) / src, 0.0, dur))
  if not first:
    return []
  known = sorted(first)
  xs = [0] + [spans[i][0] for i in known] + [len(text)]
  ts = [0.0] + [first[i] for i in known] + [dur]
  return [(first[i] if i in first else float(np.interp(a, xs, ts)), w)
          for i, (a, _, w) in enumerate(spans)]


def synthesize(text: str, *, voice: str = "en-us", rate: int = 160, pitch: int = 50,
               pitch_range: int = 50, sample_rate: int = 16000,
               level: float = 0.3) -> Speech:
  """Speech for `text`, resampled to `sample_rate`, silence trimmed, peak at `level`.

  Word times come from espeak's WORD events; a word ends where the next one
  starts (or at the end of the trimmed wave), so they tile the phrase.
  """
  if not text.strip():
    raise ValueError("synthesize: text is empty")
  wave, events = engine().synth(text, voice, rate, pitch, pitch_range)
  src = engine().rate
  if not len(wave):
    raise RuntimeError(f"espeak-ng produced no audio for {text!r}")
  lo, hi = _voiced_bounds(wave, src)
  wave = wave[lo:hi]
  wave = librosa.resample(wave, orig_sr=src, target_sr=sample_rate,
                          res_type="soxr_hq").astype(np.float32)
  wave *= level / (np.abs(wave).max() + 1e-9)
  dur = len(wave) / sample_rate
  starts = _word_starts(text, events, lo, src, dur)
  out = []
  for i, (t0, w) in enumerate(starts):
    t1 = starts[i + 1][0] if i + 1 < len(starts) else dur
    out.append({"text": w, "t_start": round(t0, 4), "t_end": round(max(t0, t1), 4)})
  return Speech(wave=wave, sample_rate=sample_rate, words=out, text=text)
