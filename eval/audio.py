"""Wav input/output at the evaluation rate (16 kHz mono float32)."""

from __future__ import annotations

import math
import os

import numpy as np
import scipy.signal
import soundfile

SAMPLE_RATE = 16000


def resample(audio: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
  """Polyphase resampling (scipy), exact for integer-ratio rates like 48k->16k."""
  if sr_in == sr_out:
    return audio.astype(np.float32, copy=False)
  if sr_in <= 0:
    raise ValueError(f"sample rate must be positive, got {sr_in}")
  g = math.gcd(int(sr_in), int(sr_out))
  out = scipy.signal.resample_poly(audio, sr_out // g, sr_in // g)
  return out.astype(np.float32)


def load_wav(path: str, sr: int = SAMPLE_RATE) -> np.ndarray:
  """Reads any-rate wav as mono float32 in [-1, 1] at `sr`.

  Raises ValueError (naming the file) for a missing, unreadable or empty file.
  """
  if not os.path.exists(path):
    raise ValueError(f"audio file not found: {path}")
  try:
    data, file_sr = soundfile.read(path, dtype="float32", always_2d=True)
  except Exception as e:  # soundfile raises several types for bad files
    raise ValueError(f"cannot read audio file {path}: {e}") from None
  if data.shape[0] == 0:
    raise ValueError(f"audio file {path} is empty")
  return resample(data.mean(axis=1), file_sr, sr)


def wav_duration(path: str) -> float:
  """Duration in seconds from the header (cheap; no decode)."""
  if not os.path.exists(path):
    raise ValueError(f"audio file not found: {path}")
  try:
    info = soundfile.info(path)
  except Exception as e:
    raise ValueError(f"cannot read audio file {path}: {e}") from None
  if info.frames == 0:
    raise ValueError(f"audio file {path} is empty")
  return info.frames / info.samplerate


def write_wav(path: str, audio: np.ndarray, sr: int = SAMPLE_RATE) -> None:
  """Writes mono 16-bit PCM (the benchmarks' format)."""
  soundfile.write(path, np.clip(audio, -1.0, 1.0), sr, subtype="PCM_16")
