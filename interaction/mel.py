"""Log-mel and dMel: the model's audio features (offline and as a session sees them).

The mel recipe follows dMel (Bai et al. 2024, apple/dmel `LogMelFbank`): Hann
window, centred STFT magnitude, librosa (Slaney) mel filters over
[fmin, fmax], floor 1e-10, log10. dMel then clips to [dmel_min, dmel_max] and
maps each value to the nearest of `dmel_bins` linearly spaced values.

Every function takes the `LayoutSpec`, which carries the STFT and filter-bank
settings of `config.layout` (`MelParams.from_spec`).
"""

from __future__ import annotations

import dataclasses
import functools

import librosa
import numpy as np
import scipy.sparse

from interaction.layout import LayoutSpec

_LOG_FLOOR = 1e-10


@dataclasses.dataclass(frozen=True)
class MelParams:
  """STFT and filter-bank settings (a view of the LayoutSpec's mel fields)."""
  n_fft: int = 1024
  win_ms: float = 50.0
  fmin: float = 80.0
  fmax: float = 7600.0

  @classmethod
  def from_layout(cls, layout) -> "MelParams":
    return cls(n_fft=int(layout.n_fft), win_ms=float(layout.mel_win_ms),
               fmin=float(layout.fmin), fmax=float(layout.fmax))

  @classmethod
  def from_spec(cls, spec: LayoutSpec) -> "MelParams":
    return cls(n_fft=spec.n_fft, win_ms=spec.mel_win_ms, fmin=spec.fmin,
               fmax=spec.fmax)


@functools.lru_cache(maxsize=16)
def mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
  # Sparse on purpose: a dense BLAS matmul here spins up OpenBLAS threads that
  # fight grain's reader threads (measured 30 ms vs 0.2 ms per call on 2 cores);
  # each filter touches only a few FFT bins, so CSR is as fast and thread-free.
  return scipy.sparse.csr_matrix(librosa.filters.mel(
      sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32))


def win_samples(spec: LayoutSpec, params: MelParams) -> int:
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
                            win_length=win_samples(spec, params), window="hann",
                            center=False))
  mel = mel_basis(spec.sample_rate, params.n_fft, spec.n_mels, params.fmin,
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
                            win_length=win_samples(spec, params), window="hann",
                            center=False))[:, :, 0]
  late_mel = mel_basis(spec.sample_rate, params.n_fft, spec.n_mels, params.fmin,
                        params.fmax) @ mag.T
  mel[late] = np.log10(np.maximum(np.asarray(late_mel), _LOG_FLOOR)).T
  return mel


def dmel_centers(spec: LayoutSpec) -> np.ndarray:
  return np.linspace(spec.dmel_min, spec.dmel_max, spec.dmel_bins,
                     dtype=np.float64)


def dmel_quantize(logmel, spec: LayoutSpec, xp=np):
  """Nearest of `dmel_bins` linear bin centres over [dmel_min, dmel_max] -> int32.

  xp: `numpy` (host features, computed in float64) or `jax.numpy` (the
  session's fed-back mel, traced, in the input's dtype); one recipe for both.
  """
  x = np.asarray(logmel, np.float64) if xp is np else logmel
  x = xp.clip(x, spec.dmel_min, spec.dmel_max)
  step = (spec.dmel_max - spec.dmel_min) / (spec.dmel_bins - 1)
  idx = xp.floor((x - spec.dmel_min) / step + 0.5)
  return xp.clip(idx, 0, spec.dmel_bins - 1).astype(xp.int32)


def dmel_dequantize(bins, spec: LayoutSpec) -> np.ndarray:
  """int bins -> f32 bin centres (log10 mel)."""
  bins = np.asarray(bins)
  if bins.size and (bins.min() < 0 or bins.max() >= spec.dmel_bins):
    raise ValueError(f"dmel_dequantize: bins must lie in [0, {spec.dmel_bins})")
  return dmel_centers(spec).astype(np.float32)[bins]
