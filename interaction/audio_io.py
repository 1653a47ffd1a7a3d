"""Waveforms in and out: the one loader, resampler and writer of the project.

Training episodes, streaming sessions and evaluation all read audio here, so a
48 kHz benchmark file is resampled exactly as a 48 kHz training file is
(soxr_hq through librosa).
"""

from __future__ import annotations

import io
import os
import wave as wave_module

import librosa
import numpy as np
import soundfile

SAMPLE_RATE = 16000  # the layout's default rate; every loader resamples to it


class AudioError(ValueError):
  """An audio input that cannot be used (missing, corrupt, empty, truncated, multi-channel)."""


def resample(audio: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
  """Mono float32 resampling with soxr_hq (the training data's resampler)."""
  audio = np.asarray(audio, np.float32)
  if int(sr_in) <= 0 or int(sr_out) <= 0:
    raise AudioError(f"resample: sample rates must be positive, got {sr_in} -> {sr_out}")
  if int(sr_in) == int(sr_out):
    return audio
  return librosa.resample(audio, orig_sr=int(sr_in), target_sr=int(sr_out),
                          res_type="soxr_hq").astype(np.float32)


def _check_wav_not_truncated(path) -> None:
  """libsndfile silently reads a WAV whose data chunk is cut short; we do not.

  A truncated file would give a shorter episode with its ground truth pointing
  past the end, so it is rejected like a corrupt one.
  """
  try:
    with wave_module.open(os.fspath(path), "rb") as w:
      expected = w.getnframes() * w.getnchannels() * w.getsampwidth()
      got = len(w.readframes(w.getnframes())) if expected else 0
  except Exception:  # pylint: disable=broad-except
    return  # Not a PCM WAV the stdlib parses (float wav, garbage...): libsndfile decides.
  if got < expected:
    raise AudioError(f"{path}: truncated WAV ({got} of {expected} data bytes)")


def load_audio(path_or_array, sample_rate: int | None = None,
               target_rate: int = SAMPLE_RATE, mix_down: bool = False) -> np.ndarray:
  """Loads mono audio as float32 in [-1, 1] at `target_rate`.

  path_or_array: a file path (any format libsndfile reads) or an array
    ([n] or [n, 1]; integer PCM is scaled to [-1, 1]). For an array,
    `sample_rate` is required; for a file it overrides nothing and must be None
    or equal to the file's rate.
  mix_down: average the channels of multi-channel input (benchmark files)
    instead of rejecting it (training data must be mono as recorded).
  Raises AudioError (a ValueError) for missing, corrupt, truncated, empty,
  non-finite or (without mix_down) multi-channel input, so callers can skip
  and count it.
  """
  if isinstance(path_or_array, (str, os.PathLike)):
    path = path_or_array
    if not os.path.exists(path):
      raise AudioError(f"audio file not found: {path}")
    if str(path).lower().endswith(".wav"):
      _check_wav_not_truncated(path)
    try:
      data, file_rate = soundfile.read(os.fspath(path), dtype="float32",
                                       always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
      raise AudioError(f"{path}: unreadable audio ({e})") from None
    if sample_rate is not None and int(sample_rate) != int(file_rate):
      raise AudioError(f"{path}: sample_rate={sample_rate} given but the file "
                       f"is {file_rate} Hz")
    rate, where = int(file_rate), str(path)
  else:
    if sample_rate is None:
      raise ValueError("load_audio: sample_rate is required for an array input")
    data = np.asarray(path_or_array)
    if data.ndim == 1:
      data = data[:, None]
    if data.ndim != 2:
      raise AudioError(f"load_audio: audio array must be [n] or [n, 1], got "
                       f"shape {data.shape}")
    if np.issubdtype(data.dtype, np.integer):
      data = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
    data = data.astype(np.float32)
    rate, where = int(sample_rate), "array"
  if data.shape[1] != 1 and mix_down:
    data = data.mean(axis=1, keepdims=True)
  if data.shape[1] != 1:
    raise AudioError(f"{where}: {data.shape[1]} channels; only mono audio is "
                     "accepted (mix down before use)")
  if data.shape[0] == 0:
    raise AudioError(f"{where}: empty audio")
  if not np.all(np.isfinite(data)):
    raise AudioError(f"{where}: audio has NaN or infinite samples")
  if rate <= 0:
    raise AudioError(f"{where}: bad sample rate {rate}")
  mono = resample(data[:, 0], rate, target_rate)
  return np.ascontiguousarray(mono, dtype=np.float32)


def write_wav(path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
  """Writes mono 16-bit PCM (clipped to [-1, 1])."""
  soundfile.write(os.fspath(path), np.clip(wave, -1.0, 1.0), int(sample_rate),
                  subtype="PCM_16", format="WAV")


def wav_bytes(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
  buf = io.BytesIO()
  soundfile.write(buf, np.clip(wave, -1.0, 1.0), int(sample_rate),
                  subtype="PCM_16", format="WAV")
  return buf.getvalue()


def wav_duration(path) -> float:
  """Duration in seconds from the header (cheap; no decode)."""
  if not os.path.exists(path):
    raise AudioError(f"audio file not found: {path}")
  try:
    info = soundfile.info(os.fspath(path))
  except Exception as e:  # pylint: disable=broad-except  # soundfile raises several types
    raise AudioError(f"{path}: unreadable audio ({e})") from None
  if info.frames == 0:
    raise AudioError(f"{path}: empty audio")
  return info.frames / info.samplerate
