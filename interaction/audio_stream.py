"""Audio in and out of a streaming session, 200 ms at a time.

`StreamingMelFrontend` turns each 3200-sample chunk into the turn's 16 log-mel
frames with the offline recipe (centred 1024-point STFT, Slaney mel, log10),
keeping the previous samples as left context. Frames whose window reaches past
the chunk see zeros there: a session has no look-ahead. Training featurises
user audio the same way (`data_pipeline.features.streaming_log_mel_window`),
and the two agree bit for bit (tests/interaction/session_test.py).

`StreamingVocoder` turns each turn's 16 generated mel frames into 3200
samples with Griffin-Lim (as the embedded `data_pipeline.vocoder` default),
but inverts the mel filter bank with a precomputed pseudo-inverse (clipped at
zero) instead of librosa's per-call NNLS solve, which took seconds per chunk
on this machine and would blow the 200 ms budget. Each
chunk is re-synthesised with `context_frames` earlier frames in front, and the
last frame repeated behind, whose samples are kept and
cross-faded into the start of the next chunk, so chunks join without clicks.
"""

from __future__ import annotations

import librosa
import numpy as np

from data_pipeline import features
from interaction.layout import LayoutSpec


class StreamingMelFrontend:

  def __init__(self, spec: LayoutSpec, params: features.MelParams | None = None):
    self.spec = spec
    self.params = params or features.MelParams.from_spec(spec)
    self.half = self.params.n_fft // 2
    self.win = features._win_samples(spec, self.params)  # pylint: disable=protected-access
    self.basis = features._mel_basis(spec.sample_rate, self.params.n_fft,  # pylint: disable=protected-access
                                     spec.n_mels, self.params.fmin, self.params.fmax)
    self.reset()

  def reset(self):
    self.context = np.zeros(self.half, np.float32)

  def __call__(self, chunk: np.ndarray) -> np.ndarray:
    """f32 [samples_per_turn] -> f32 [frames_per_turn, n_mels] log10 mel."""
    spec = self.spec
    buf = np.concatenate([self.context, chunk.astype(np.float32),
                          np.zeros(self.half, np.float32)])
    mag = np.abs(librosa.stft(buf, n_fft=self.params.n_fft,
                              hop_length=spec.hop_samples, win_length=self.win,
                              window="hann", center=False))
    mel = self.basis @ mag[:, :spec.frames_per_turn]
    self.context = buf[-2 * self.half:-self.half].copy()
    return np.log10(np.maximum(np.asarray(mel), 1e-10)).T.astype(np.float32)


class StreamingVocoder:

  def __init__(self, spec: LayoutSpec, n_iter: int = 16, context_frames: int = 8,
               crossfade: int = 160, params: features.MelParams | None = None,
               seed: int = 0):
    self.spec = spec
    self.params = params or features.MelParams.from_spec(spec)
    self.n_iter = int(n_iter)
    self.context_frames = int(context_frames)
    self.crossfade = int(crossfade)
    if self.n_iter < 1:
      raise ValueError(f"session.vocoder_iters: must be >= 1, got {n_iter}")
    if not 0 < self.crossfade <= spec.hop_samples:
      raise ValueError(f"StreamingVocoder: crossfade must be in (0, "
                       f"{spec.hop_samples}] samples, got {crossfade}")
    basis = librosa.filters.mel(sr=spec.sample_rate, n_fft=self.params.n_fft,
                                n_mels=spec.n_mels, fmin=self.params.fmin,
                                fmax=self.params.fmax)
    self.inverse = np.linalg.pinv(basis).astype(np.float32)   # [n_fft/2+1, n_mels]
    self.win = features._win_samples(spec, self.params)  # pylint: disable=protected-access
    self.seed = seed
    self.reset()

  def reset(self):
    self.history = np.zeros((0, self.spec.n_mels), np.float32)
    self.tail = None

  def _mel_to_wave(self, logmel):
    mag = np.maximum(self.inverse @ (10.0 ** logmel.T), 0.0)
    return librosa.griffinlim(
        mag, n_iter=self.n_iter, hop_length=self.spec.hop_samples,
        win_length=self.win, window="hann", center=True,
        # A centred STFT of L samples has 1 + L // hop frames.
        length=(logmel.shape[0] - 1) * self.spec.hop_samples, init="random",
        rng=np.random.default_rng(self.seed)).astype(np.float32)

  def __call__(self, mel: np.ndarray) -> np.ndarray:
    """f32 [frames_per_turn, n_mels] -> f32 [samples_per_turn]."""
    hop = self.spec.hop_samples
    mel = np.asarray(mel, np.float32)
    # Two repeated frames behind: the wave then runs one hop past the chunk,
    # and that overrun is the tail cross-faded into the next chunk.
    frames = np.concatenate([self.history, mel, mel[-1:], mel[-1:]], axis=0)
    wave = self._mel_to_wave(frames)
    start = self.history.shape[0] * hop
    out = wave[start:start + mel.shape[0] * hop].copy()
    if self.tail is not None:
      ramp = np.linspace(0.0, 1.0, self.crossfade, dtype=np.float32)
      out[:self.crossfade] = (ramp * out[:self.crossfade]
                              + (1 - ramp) * self.tail[:self.crossfade])
    self.tail = wave[start + mel.shape[0] * hop:]
    if self.context_frames:
      self.history = np.concatenate([self.history, mel])[-self.context_frames:]
    return out
