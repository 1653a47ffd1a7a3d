"""Speech segments of a waveform, for the audio-based metrics.

Full-Duplex-Bench runs Silero VAD (`get_speech_timestamps(wav, model,
return_seconds=True)`, default settings) on `output.wav`. We run the same
model without torch: the PyPI package `silero-vad` ships its ONNX files, and
`experiments/setup_env.sh` installs it with `--no-deps` (its only hard
dependency is torch, which the ONNX path never touches). We never import the
package (its `__init__` imports torch): we only locate its `data/` folder and
load the ONNX file with onnxruntime. Nothing is downloaded at run time.

- `silero_probabilities`: per-32 ms-frame speech probabilities. Default: the
  package's "sequence" export (one ONNX call per 16 s block, the same numbers
  as the streaming model's frame loop; `stream=True` runs that loop).
- `silero_segments`: Silero's `get_speech_timestamps_from_probs` ported
  line by line (threshold 0.5, neg_threshold = threshold - 0.15, min speech
  250 ms, min silence 100 ms, pad 30 ms; seconds rounded to 0.1 s as
  `return_seconds=True` does). `max_speech_duration_s` is inf in FD-bench and
  its branch is not ported.
- `webrtc_segments`: webrtcvad (30 ms frames) with the same post-processing
  idea, kept as an option (`vad="webrtc"`).
- `segments_from_words`: speech where an agent's words are (timing source
  `events`).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

from interaction.audio_io import SAMPLE_RATE

VADS = ("silero", "webrtc")
SILERO_FRAME = 512     # samples per frame at 16 kHz (32 ms)
SILERO_CONTEXT = 64    # samples of the previous frame the model sees
SILERO_BLOCK = 512     # frames per ONNX call of the sequence model (~16 s)
_WEBRTC_FRAME_S = 0.03


# --------------------------------------------------------------------------- #
# Silero


def silero_model_dir() -> str:
  """The `data/` folder of the installed `silero-vad` package (not imported)."""
  spec = importlib.util.find_spec("silero_vad")
  if spec is None or not spec.submodule_search_locations:
    raise ValueError("Silero VAD is not installed: run experiments/setup_env.sh (it "
                     "installs the PyPI package silero-vad with --no-deps), or use "
                     "vad='webrtc'")
  return os.path.join(list(spec.submodule_search_locations)[0], "data")


@functools.lru_cache(maxsize=None)
def _session(name: str):
  import onnxruntime
  path = os.path.join(silero_model_dir(), name)
  if not os.path.exists(path):
    raise ValueError(f"Silero VAD model file missing: {path} (reinstall silero-vad)")
  opts = onnxruntime.SessionOptions()
  # One thread: scoring runs beside replays on shared 2-core machines, and the
  # model is tiny (the package sets the same).
  opts.inter_op_num_threads = 1
  opts.intra_op_num_threads = 1
  opts.log_severity_level = 3
  return onnxruntime.InferenceSession(path, sess_options=opts,
                                      providers=["CPUExecutionProvider"])


def _frames_with_context(audio: np.ndarray) -> np.ndarray:
  """[n_frames, 64 + 512]: each frame prefixed with the previous frame's last
  64 samples (zeros first), the last frame zero-padded, as the package does."""
  n = max(1, -(-len(audio) // SILERO_FRAME)) if len(audio) else 0
  frames = np.zeros((n, SILERO_FRAME), np.float32)
  frames.reshape(-1)[:len(audio)] = audio
  ctx = np.zeros((n, SILERO_CONTEXT), np.float32)
  if n > 1:
    ctx[1:] = frames[:-1, -SILERO_CONTEXT:]
  return np.concatenate([ctx, frames], axis=1)


def silero_probabilities(audio: np.ndarray, *, stream: bool = False) -> np.ndarray:
  """Speech probability per 512-sample frame of 16 kHz mono float audio.

  stream=False: the sequence export, a few ONNX calls; stream=True: the
  streaming model one frame at a time, exactly the package's `OnnxWrapper`
  loop (the reference the fast path is tested against).
  """
  audio = np.ascontiguousarray(audio, np.float32).reshape(-1)
  x = _frames_with_context(audio)
  if not len(x):
    return np.zeros(0, np.float32)
  if stream:
    sess = _session("silero_vad.onnx")
    state = np.zeros((2, 1, 128), np.float32)
    sr = np.array(SAMPLE_RATE, np.int64)
    out = np.empty(len(x), np.float32)
    for i in range(len(x)):
      p, state = sess.run(None, {"input": x[i:i + 1], "state": state, "sr": sr})
      out[i] = p[0, 0]
    return out
  sess = _session("silero_vad_16k_sequence.onnx")
  h = np.zeros((1, 1, 128), np.float32)
  c = np.zeros((1, 1, 128), np.float32)
  probs = []
  for i in range(0, len(x), SILERO_BLOCK):
    p, h, c = sess.run(["speech_probs", "hn", "cn"], {"input": x[i:i + SILERO_BLOCK],
                                                       "h": h, "c": c})
    probs.append(p)
  return np.concatenate(probs).reshape(-1).astype(np.float32)


class SileroStream:
  """Silero probabilities of audio fed in pieces (a live VAD): `feed(x)` returns
  the probabilities of the 512-sample frames completed by x. The same numbers
  as `silero_probabilities` on the whole signal; a new stream per sample
  (the model is recurrent: its state is the previous audio)."""

  def __init__(self):
    self._sess = _session("silero_vad_16k_sequence.onnx")
    self._h = np.zeros((1, 1, 128), np.float32)
    self._c = np.zeros((1, 1, 128), np.float32)
    self._ctx = np.zeros(SILERO_CONTEXT, np.float32)
    self._buf = np.zeros(0, np.float32)

  def feed(self, audio: np.ndarray) -> np.ndarray:
    self._buf = np.concatenate([self._buf, np.asarray(audio, np.float32).reshape(-1)])
    n = len(self._buf) // SILERO_FRAME
    if n == 0:
      return np.zeros(0, np.float32)
    frames = self._buf[:n * SILERO_FRAME].reshape(n, SILERO_FRAME)
    self._buf = self._buf[n * SILERO_FRAME:]
    ctx = np.empty((n, SILERO_CONTEXT), np.float32)
    ctx[0] = self._ctx
    ctx[1:] = frames[:-1, -SILERO_CONTEXT:]
    self._ctx = frames[-1, -SILERO_CONTEXT:].copy()
    p, self._h, self._c = self._sess.run(
        ["speech_probs", "hn", "cn"],
        {"input": np.concatenate([ctx, frames], axis=1), "h": self._h, "c": self._c})
    return np.asarray(p, np.float32).reshape(-1)


def timestamps_from_probs(probs, n_samples: int, *, threshold: float = 0.5,
                          min_speech_ms: float = 250, min_silence_ms: float = 100,
                          speech_pad_ms: float = 30, neg_threshold: float | None = None):
  """Silero's `get_speech_timestamps_from_probs` (max speech = inf): [(start, end)]
  in samples."""
  sr = SAMPLE_RATE
  min_speech = sr * min_speech_ms / 1000
  pad = sr * speech_pad_ms / 1000
  min_silence = sr * min_silence_ms / 1000
  if neg_threshold is None:
    neg_threshold = max(threshold - 0.15, 0.01)
  triggered, speeches, cur, temp_end = False, [], {}, 0
  for i, p in enumerate(probs):
    sample = SILERO_FRAME * i
    if p >= threshold and temp_end:
      temp_end = 0
    if p >= threshold and not triggered:
      triggered = True
      cur["start"] = sample
      continue
    if p < neg_threshold and triggered:
      if not temp_end:
        temp_end = sample
      if sample - temp_end < min_silence:
        continue
      cur["end"] = temp_end
      if cur["end"] - cur["start"] > min_speech:
        speeches.append(cur)
      cur, temp_end, triggered = {}, 0, False
  if cur and n_samples - cur["start"] > min_speech:
    cur["end"] = n_samples
    speeches.append(cur)
  for i, s in enumerate(speeches):
    if i == 0:
      s["start"] = int(max(0, s["start"] - pad))
    if i != len(speeches) - 1:
      gap = speeches[i + 1]["start"] - s["end"]
      if gap < 2 * pad:
        s["end"] += int(gap // 2)
        speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - gap // 2))
      else:
        s["end"] = int(min(n_samples, s["end"] + pad))
        speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - pad))
    else:
      s["end"] = int(min(n_samples, s["end"] + pad))
  return [(s["start"], s["end"]) for s in speeches]


def silero_segments(audio: np.ndarray, *, threshold: float = 0.5, time_resolution: int | None = 1,
                    **kwargs) -> list[tuple[float, float]]:
  """[(start, end)] seconds, as `get_speech_timestamps(..., return_seconds=True)`
  (rounded to `time_resolution` decimals; None keeps sample precision)."""
  probs = silero_probabilities(audio)
  spans = timestamps_from_probs(probs, len(audio), threshold=threshold, **kwargs)
  dur = len(audio) / SAMPLE_RATE
  if time_resolution is None:
    return [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in spans]
  return [(max(round(a / SAMPLE_RATE, time_resolution), 0),
           min(round(b / SAMPLE_RATE, time_resolution), dur)) for a, b in spans]


# --------------------------------------------------------------------------- #
# webrtcvad


def webrtc_segments(audio: np.ndarray, *, aggressiveness: int = 2, min_speech_s: float = 0.25,
                    min_silence_s: float = 0.1, pad_s: float = 0.03) -> list[tuple[float, float]]:
  """webrtcvad 30 ms frames, then min speech / min silence / padding as Silero."""
  import webrtcvad
  sr = SAMPLE_RATE
  vad = webrtcvad.Vad(aggressiveness)  # per call: webrtcvad keeps state across frames
  n = int(_WEBRTC_FRAME_S * sr)
  pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
  runs, start = [], None
  n_frames = len(pcm) // n
  for k in range(n_frames):
    frame = pcm[k * n:(k + 1) * n]
    # webrtcvad calls digital silence speech-free quickly; skip the call for it.
    speech = bool(np.any(frame)) and vad.is_speech(frame.tobytes(), sr)
    if speech and start is None:
      start = k
    elif not speech and start is not None:
      runs.append([start * _WEBRTC_FRAME_S, k * _WEBRTC_FRAME_S])
      start = None
  if start is not None:
    runs.append([start * _WEBRTC_FRAME_S, n_frames * _WEBRTC_FRAME_S])
  merged = []
  for s, e in runs:
    if merged and s - merged[-1][1] < min_silence_s:
      merged[-1][1] = e
    else:
      merged.append([s, e])
  duration = len(audio) / sr
  kept = [(max(0.0, s - pad_s), min(duration, e + pad_s))
          for s, e in merged if e - s >= min_speech_s]
  return [(round(s, 3), round(e, 3)) for s, e in kept]


def speech_segments(audio: np.ndarray, sr: int = SAMPLE_RATE, *, vad: str = "silero",
                    **kwargs) -> list[tuple[float, float]]:
  """[(start, end)] seconds of speech in a 16 kHz mono float waveform."""
  if sr != SAMPLE_RATE:
    raise ValueError(f"speech_segments expects {SAMPLE_RATE} Hz audio, got {sr}")
  if vad == "silero":
    return silero_segments(audio, **kwargs)
  if vad == "webrtc":
    return webrtc_segments(audio, **kwargs)
  raise ValueError(f"vad must be one of {VADS}, got {vad!r}")


def describe(vad: str) -> str:
  return {"silero": "Silero VAD (ONNX, default settings)",
          "webrtc": "webrtcvad(2) + Silero-style post-processing"}.get(vad, vad)


# --------------------------------------------------------------------------- #
# Segment utilities


def segments_from_words(words, min_silence_s: float = 0.1) -> list[tuple[float, float]]:
  """Speech segments where an agent's words are: (t0, t1|None, text) triples."""
  segs = []
  for t0, t1, _ in sorted(words, key=lambda w: w[0]):
    t1 = t0 if t1 is None else t1
    if segs and t0 - segs[-1][1] < min_silence_s:
      segs[-1][1] = max(segs[-1][1], t1)
    else:
      segs.append([t0, t1])
  return [(s, e) for s, e in segs]


def merge(segs, gap: float) -> list[tuple[float, float]]:
  """FD-bench v1.5 `_merge`: joins segments whose gap is <= `gap` seconds."""
  if not segs:
    return []
  segs = sorted(segs)
  out = [tuple(segs[0])]
  for s, e in segs[1:]:
    ps, pe = out[-1]
    if s - pe <= gap:
      out[-1] = (ps, max(pe, e))
    else:
      out.append((s, e))
  return out


def sound_seconds(audio: np.ndarray, level: float = 0.01, frame: int = SILERO_FRAME) -> float:
  """Seconds of 32 ms frames whose RMS is above `level` (-40 dBFS): sound of any
  kind, speech or not (an untrained vocoder's noise is sound, not speech)."""
  n = len(audio) // frame
  if n == 0:
    return 0.0
  rms = np.sqrt(np.mean(np.square(audio[:n * frame].reshape(n, frame), dtype=np.float64), axis=1))
  return float(np.sum(rms > level) * frame / SAMPLE_RATE)


def total(segs) -> float:
  return float(sum(e - s for s, e in segs))


def overlap_seconds(a, b) -> float:
  """Seconds covered by both segment lists."""
  out = 0.0
  for s0, e0 in a:
    for s1, e1 in b:
      out += max(0.0, min(e0, e1) - max(s0, s1))
  return out
