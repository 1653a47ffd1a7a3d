"""Audio and video features: waveform loading, log-mel, dMel bins, 40x40 patches.

The mel recipe follows dMel (Bai et al. 2024, apple/dmel `LogMelFbank`): Hann
window, centred STFT magnitude, librosa (Slaney) mel filters over
[fmin, fmax], floor 1e-10, log10. dMel then clips to [dmel_min, dmel_max] and
maps each value to the nearest of `dmel_bins` linearly spaced values.

Every function takes the `LayoutSpec`; the STFT window, FFT size and mel band
edges live in `config.layout` but not (yet) in `LayoutSpec`, so they are read
from the spec when it has them and from `layout_config()`'s defaults otherwise,
or passed explicitly (`MelParams.from_layout(config.layout)`).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import wave as wave_module

import librosa
import numpy as np
import scipy.sparse
import soundfile

from interaction.layout import LayoutSpec

_LOG_FLOOR = 1e-10


class AudioError(ValueError):
  """An audio input that cannot be used (corrupt, empty, truncated, multi-channel)."""


class VideoError(ValueError):
  """A video input that cannot be used (unreadable frames, bad shape)."""


@dataclasses.dataclass(frozen=True)
class MelParams:
  """STFT and filter-bank settings that `LayoutSpec` does not carry."""
  n_fft: int = 1024
  win_ms: float = 50.0
  fmin: float = 80.0
  fmax: float = 7600.0

  @classmethod
  def from_layout(cls, layout) -> "MelParams":
    return cls(n_fft=int(layout.n_fft), win_ms=float(layout.mel_win_ms),
               fmin=float(layout.fmin), fmax=float(layout.fmax))

  @classmethod
  def from_spec(cls, spec) -> "MelParams":
    d = cls()
    return cls(n_fft=int(getattr(spec, "n_fft", d.n_fft)),
               win_ms=float(getattr(spec, "mel_win_ms", d.win_ms)),
               fmin=float(getattr(spec, "fmin", d.fmin)),
               fmax=float(getattr(spec, "fmax", d.fmax)))


# ---- waveforms ---------------------------------------------------------------

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
               target_rate: int = 16000) -> np.ndarray:
  """Loads mono audio as float32 in [-1, 1] at `target_rate`.

  path_or_array: a file path (any format libsndfile reads) or an array
    ([n] or [n, 1]; integer PCM is scaled to [-1, 1]). For an array,
    `sample_rate` is required; for a file it overrides nothing and must be None
    or equal to the file's rate.
  Raises AudioError (a ValueError) for corrupt, truncated, empty, non-finite or
  multi-channel input, so callers can skip and count it.
  """
  if isinstance(path_or_array, (str, os.PathLike)):
    path = path_or_array
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
  if data.shape[1] != 1:
    raise AudioError(f"{where}: {data.shape[1]} channels; only mono audio is "
                     "accepted (mix down before use)")
  if data.shape[0] == 0:
    raise AudioError(f"{where}: empty audio")
  if not np.all(np.isfinite(data)):
    raise AudioError(f"{where}: audio has NaN or infinite samples")
  if rate <= 0:
    raise AudioError(f"{where}: bad sample rate {rate}")
  mono = data[:, 0]
  if rate != target_rate:
    mono = librosa.resample(mono, orig_sr=rate, target_sr=target_rate,
                            res_type="soxr_hq").astype(np.float32)
  return np.ascontiguousarray(mono, dtype=np.float32)


def write_wav(path, wave: np.ndarray, sample_rate: int) -> None:
  """Writes mono 16-bit PCM (clipped to [-1, 1])."""
  soundfile.write(os.fspath(path), np.clip(wave, -1.0, 1.0), int(sample_rate),
                  subtype="PCM_16", format="WAV")


def wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
  buf = io.BytesIO()
  soundfile.write(buf, np.clip(wave, -1.0, 1.0), int(sample_rate),
                  subtype="PCM_16", format="WAV")
  return buf.getvalue()


# ---- log-mel and dMel --------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
  # Sparse on purpose: a dense BLAS matmul here spins up OpenBLAS threads that
  # fight grain's reader threads (measured 30 ms vs 0.2 ms per call on 2 cores);
  # each filter touches only a few FFT bins, so CSR is as fast and thread-free.
  return scipy.sparse.csr_matrix(librosa.filters.mel(
      sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32))


def _win_samples(spec: LayoutSpec, params: MelParams) -> int:
  win = int(round(params.win_ms * spec.sample_rate / 1000.0))
  if not 0 < win <= params.n_fft:
    raise ValueError(f"layout.mel_win_ms: {params.win_ms} ms is {win} samples, "
                     f"need 0 < window <= layout.n_fft={params.n_fft}")
  return win


def log_mel(wave: np.ndarray, spec: LayoutSpec,
            params: MelParams | None = None) -> np.ndarray:
  """f32 [num_samples // hop, n_mels] log10 mel magnitudes of a 16 kHz wave.

  The centred STFT gives one more frame than that; the last is dropped so a
  micro-turn of audio always maps to exactly `frames_per_turn` frames.
  """
  wave = np.asarray(wave, dtype=np.float32)
  if wave.ndim != 1:
    raise ValueError(f"log_mel: wave must be 1-D, got shape {wave.shape}")
  return log_mel_window(wave, 0, len(wave), spec, params)


def log_mel_window(wave: np.ndarray, start: int, length: int, spec: LayoutSpec,
                   params: MelParams | None = None) -> np.ndarray:
  """The frames of `log_mel(wave)` for samples [start, start + length), exactly.

  Frame k is centred on sample start + k * hop and sees the real signal on
  both sides (zeros only outside the wave), so a crop's features equal the
  same frames of the whole episode: cropping never changes the data.
  """
  params = params or MelParams.from_spec(spec)
  n_frames = length // spec.hop_samples
  if n_frames <= 0:
    return np.zeros((0, spec.n_mels), np.float32)
  half = params.n_fft // 2
  lo = start - half
  hi = start + (n_frames - 1) * spec.hop_samples + half
  seg = np.zeros(hi - lo, np.float32)
  a, b = max(lo, 0), min(hi, len(wave))
  if b > a:
    seg[a - lo:b - lo] = wave[a:b]
  mag = np.abs(librosa.stft(seg, n_fft=params.n_fft, hop_length=spec.hop_samples,
                            win_length=_win_samples(spec, params), window="hann",
                            center=False))
  mel = _mel_basis(spec.sample_rate, params.n_fft, spec.n_mels, params.fmin,
                   params.fmax) @ mag[:, :n_frames]
  return np.log10(np.maximum(np.asarray(mel), _LOG_FLOOR)).T.astype(np.float32)


def streaming_log_mel_window(wave: np.ndarray, start: int, length: int,
                             spec: LayoutSpec,
                             params: MelParams | None = None) -> np.ndarray:
  """`log_mel_window` as a live session computes it: no look-ahead past a micro-turn.

  A streaming session featurises a micro-turn when its last sample arrives
  (interaction.audio_stream.StreamingMelFrontend), so the last frames of each
  turn, whose centred windows reach into the next turn, see zeros there. User
  audio is featurised this way for training too, so the model's inputs in
  training and in a session are the same bits. `start` must be a turn boundary.
  """
  params = params or MelParams.from_spec(spec)
  mel = log_mel_window(wave, start, length, spec, params)
  spt, hop, half = spec.samples_per_turn, spec.hop_samples, params.n_fft // 2
  if start % spt:
    raise ValueError(f"streaming_log_mel_window: start={start} is not a multiple "
                     f"of the micro-turn ({spt} samples)")
  centres = start + np.arange(mel.shape[0]) * hop
  late = np.nonzero(centres % spt + half > spt)[0]
  if late.size == 0:
    return mel
  bufs = np.zeros((late.size, params.n_fft), np.float32)
  for j, k in enumerate(late):
    c = int(centres[k])
    lo, end = c - half, (c // spt + 1) * spt     # zeros from the turn's end on
    a, b = max(lo, 0), min(end, len(wave))
    if b > a:
      bufs[j, a - lo:b - lo] = wave[a:b]
  mag = np.abs(librosa.stft(bufs, n_fft=params.n_fft, hop_length=hop,
                            win_length=_win_samples(spec, params), window="hann",
                            center=False))[:, :, 0]
  late_mel = _mel_basis(spec.sample_rate, params.n_fft, spec.n_mels, params.fmin,
                        params.fmax) @ mag.T
  mel[late] = np.log10(np.maximum(np.asarray(late_mel), _LOG_FLOOR)).T
  return mel


def dmel_centers(spec: LayoutSpec) -> np.ndarray:
  return np.linspace(spec.dmel_min, spec.dmel_max, spec.dmel_bins,
                     dtype=np.float64)


def dmel_quantize(logmel, spec: LayoutSpec) -> np.ndarray:
  """Nearest of `dmel_bins` linear bin centres over [dmel_min, dmel_max] -> int32."""
  x = np.clip(np.asarray(logmel, np.float64), spec.dmel_min, spec.dmel_max)
  step = (spec.dmel_max - spec.dmel_min) / (spec.dmel_bins - 1)
  idx = np.floor((x - spec.dmel_min) / step + 0.5)
  return np.clip(idx, 0, spec.dmel_bins - 1).astype(np.int32)


def dmel_dequantize(bins, spec: LayoutSpec) -> np.ndarray:
  """int bins -> f32 bin centres (log10 mel)."""
  bins = np.asarray(bins)
  if bins.size and (bins.min() < 0 or bins.max() >= spec.dmel_bins):
    raise ValueError(f"dmel_dequantize: bins must lie in [0, {spec.dmel_bins})")
  return dmel_centers(spec).astype(np.float32)[bins]


# ---- video -------------------------------------------------------------------

def video_to_patches(frames, spec: LayoutSpec) -> np.ndarray:
  """uint8 [..., H, W, 3] -> [..., (H/p)*(W/p), p, p, 3], patches in row-major order."""
  frames = np.asarray(frames)
  p = spec.patch
  if frames.ndim < 3 or frames.shape[-1] != 3:
    raise VideoError(f"video_to_patches: frames must be [..., H, W, 3], got "
                     f"{frames.shape}")
  h, w = frames.shape[-3:-1]
  if h % p or w % p:
    raise VideoError(f"video_to_patches: frame size {h}x{w} is not a multiple "
                     f"of the patch size {p}")
  lead = frames.shape[:-3]
  x = frames.reshape(lead + (h // p, p, w // p, p, 3))
  n = len(lead)
  x = x.transpose(tuple(range(n)) + (n, n + 2, n + 1, n + 3, n + 4))
  return x.reshape(lead + ((h // p) * (w // p), p, p, 3))


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of uint8 [N, H, W, 3] (cheap; synthetic scenes are flat shapes)."""
  n, h, w, _ = frames.shape
  if (h, w) == (height, width):
    return frames
  rows = (np.arange(height) * h // height).astype(np.int64)
  cols = (np.arange(width) * w // width).astype(np.int64)
  return frames[:, rows][:, :, cols]


def load_video(path) -> tuple[np.ndarray, float]:
  """Reads a `.npz` video (`frames` uint8 [N, H, W, 3], `fps`); VideoError if unusable."""
  try:
    with np.load(os.fspath(path), allow_pickle=False) as z:
      frames, fps = z["frames"], float(z["fps"])
  except Exception as e:  # zipfile/pickle/key errors all mean "unreadable"
    raise VideoError(f"{path}: unreadable video ({type(e).__name__}: {e})") from None
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise VideoError(f"{path}: frames must be uint8 [N, H, W, 3], got "
                     f"{frames.dtype} {frames.shape}")
  if frames.shape[0] == 0 or not fps > 0:
    raise VideoError(f"{path}: empty video or bad fps {fps}")
  return frames, fps
