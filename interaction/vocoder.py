"""The way back for listening: log10 mel -> waveform.

`Vocoder` is the interface. `GriffinLimVocoder` is the embedded fallback:
librosa's NNLS inversion of the mel filter bank (the same Slaney filters
`mel_lib.log_mel` uses) followed by Griffin-Lim phase recovery. No weights, no
download; quality is robotic but intelligible. The learned streaming vocoder
(`interaction.learned_vocoder.LearnedVocoder`, trained with `python -m
experiments.train_vocoder`) implements the same interface and is what a
session speaks through when one is trained.
"""

from __future__ import annotations

import abc

import librosa
import numpy as np

from interaction import mel as mel_lib
from interaction.layout import LayoutSpec


class Vocoder(abc.ABC):
  """mel_to_wave(logmel f32 [frames, n_mels]) -> f32 wave of frames * hop samples."""

  sample_rate: int

  @abc.abstractmethod
  def mel_to_wave(self, logmel: np.ndarray) -> np.ndarray:
    ...


class GriffinLimVocoder(Vocoder):

  """Mel filter-bank inversion, then Griffin-Lim phase recovery.

  inversion: 'nnls' (librosa's non-negative least squares: the most faithful,
  but an iterative solve that took seconds per 200 ms chunk on a 2-core CPU) or
  'pinv' (a precomputed pseudo-inverse clipped at zero: a matrix product, what
  a streaming session uses to stay inside its 200 ms budget).
  """

  def __init__(self, spec: LayoutSpec, n_iter: int = 32,
               params: mel_lib.MelParams | None = None, seed: int = 0,
               inversion: str = "nnls"):
    if n_iter < 1:
      raise ValueError(f"GriffinLimVocoder: n_iter={n_iter} must be >= 1")
    if inversion not in ("nnls", "pinv"):
      raise ValueError(f"GriffinLimVocoder: inversion={inversion!r} is not 'nnls' or 'pinv'")
    self.spec, self.n_iter, self.seed = spec, int(n_iter), seed
    self.params = params or mel_lib.MelParams.from_spec(spec)
    self.sample_rate = spec.sample_rate
    self.inversion = inversion
    self._win = mel_lib.win_samples(spec, self.params)
    if inversion == "pinv":
      p = self.params
      basis = librosa.filters.mel(sr=spec.sample_rate, n_fft=p.n_fft,
                                  n_mels=spec.n_mels, fmin=p.fmin, fmax=p.fmax)
      self._pinv = np.linalg.pinv(basis).astype(np.float32)

  def _magnitudes(self, logmel: np.ndarray) -> np.ndarray:
    if self.inversion == "pinv":
      return np.maximum(self._pinv @ (10.0 ** logmel.T), 0.0)
    p = self.params
    return librosa.feature.inverse.mel_to_stft(
        10.0 ** logmel.T, sr=self.sample_rate, n_fft=p.n_fft, power=1.0,
        fmin=p.fmin, fmax=p.fmax)

  def mel_to_wave(self, logmel: np.ndarray) -> np.ndarray:
    logmel = np.asarray(logmel, np.float32)
    if logmel.ndim != 2 or logmel.shape[1] != self.spec.n_mels:
      raise ValueError(f"mel_to_wave: logmel must be [frames, {self.spec.n_mels}], "
                       f"got {logmel.shape}")
    n = logmel.shape[0] * self.spec.hop_samples
    if logmel.shape[0] == 0:
      return np.zeros(0, np.float32)
    mag = self._magnitudes(logmel)
    # log_mel dropped the centred STFT's last frame (F = n // hop); give it back
    # (a copy of the last) so the STFT geometry matches a wave of n samples.
    mag = np.concatenate([mag, mag[:, -1:]], axis=1)
    # A fixed seed for the initial phases: the same mel always gives the same wave.
    wave = librosa.griffinlim(
        mag, n_iter=self.n_iter, hop_length=self.spec.hop_samples,
        win_length=self._win, window="hann", center=True, length=n,
        init="random", rng=np.random.default_rng(self.seed))
    return wave.astype(np.float32)
