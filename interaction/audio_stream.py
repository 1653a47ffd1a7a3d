"""Audio in and out of a streaming session, 200 ms at a time.

`StreamingMelFrontend` turns each 3200-sample chunk into the turn's 16 log-mel
frames with the offline recipe (centred 1024-point STFT, Slaney mel, log10),
keeping the previous samples as left context. Frames whose window reaches past
the chunk see zeros there: a session has no look-ahead. Training featurises
user audio the same way (`data_pipeline.mel_lib.streaming_log_mel_window`),
and the two agree bit for bit (tests/interaction/session_test.py).

`StreamingVocoder` turns each turn's 16 generated mel frames into 3200
samples with the embedded Griffin-Lim vocoder (`interaction.vocoder`), in
its 'pinv' inversion mode: librosa's per-call NNLS solve took seconds per
chunk on this machine and would blow the 200 ms budget. Each
chunk is re-synthesised with `context_frames` earlier frames in front, and the
last frame repeated behind, whose samples are kept and
cross-faded into the start of the next chunk, so chunks join without clicks.
It is the fallback: a session with a trained learned vocoder streams through
`interaction.learned_vocoder.StreamingLearnedVocoder` instead (same call:
16 frames in, 3200 samples out; about 50x cheaper per chunk).
"""

from __future__ import annotations

import librosa
import numpy as np

from interaction import mel as mel_lib
from interaction.layout import LayoutSpec


class StreamingMelFrontend:

  def __init__(self, spec: LayoutSpec, params: mel_lib.MelParams | None = None):
    self.spec = spec
    self.params = params or mel_lib.MelParams.from_spec(spec)
    self.half = self.params.n_fft // 2
    self.win = mel_lib.win_samples(spec, self.params)
    self.basis = mel_lib.mel_basis(spec.sample_rate, self.params.n_fft,
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
               crossfade: int = 160, params: mel_lib.MelParams | None = None,
               seed: int = 0):
    from interaction.vocoder import GriffinLimVocoder
    self.spec = spec
    self.context_frames = int(context_frames)
    self.crossfade = int(crossfade)
    if int(n_iter) < 1:
      raise ValueError(f"session.vocoder_iters: must be >= 1, got {n_iter}")
    if not 0 < self.crossfade <= spec.hop_samples:
      raise ValueError(f"StreamingVocoder: crossfade must be in (0, "
                       f"{spec.hop_samples}] samples, got {crossfade}")
    self.vocoder = GriffinLimVocoder(spec, n_iter=n_iter, params=params, seed=seed,
                                     inversion="pinv")
    self.reset()

  def reset(self):
    self.history = np.zeros((0, self.spec.n_mels), np.float32)
    self.tail = None

  def __call__(self, mel: np.ndarray) -> np.ndarray:
    """f32 [frames_per_turn, n_mels] -> f32 [samples_per_turn]."""
    hop = self.spec.hop_samples
    mel = np.asarray(mel, np.float32)
    # The last frame repeated behind: the wave then runs one hop past the
    # chunk, and that overrun is the tail cross-faded into the next chunk.
    frames = np.concatenate([self.history, mel, mel[-1:]], axis=0)
    wave = self.vocoder.mel_to_wave(frames)
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


class OutputLimiter:
  """A brick-wall peak limiter on a session's audio out, 200 ms at a time.

  Nothing else bounds what a vocoder emits: its input is any mel the flow
  head samples in the layout's range, and Griffin-Lim of a frame at the
  range's top in every band is louder than full scale (RMS 2.6 at log10 0.5,
  84 at 2.0). The gain drops at once to keep every sample within `ceiling`
  (attack 0), then recovers by 1 / (release_s * sample_rate) per sample, so a
  loud burst cannot clip and the gain comes back without a step. Audio below
  the ceiling, with the gain recovered, passes bit for bit. A hand-written
  recursion because the project's audio stack (librosa, soxr) has no
  streaming limiter; it is one cumulative minimum per chunk.
  """

  def __init__(self, sample_rate: int, ceiling: float = 0.98, release_s: float = 0.05):
    if not 0 < ceiling <= 1:
      raise ValueError(f"session.output_ceiling: {ceiling} must be in (0, 1]")
    if release_s <= 0:
      raise ValueError(f"session.output_release_s: {release_s} must be > 0")
    self.ceiling = float(ceiling)
    self.step = 1.0 / (float(release_s) * sample_rate)
    self.reset()

  def reset(self):
    self.gain = 1.0

  def __call__(self, wave: np.ndarray) -> np.ndarray:
    y = np.asarray(wave, np.float64)
    peak = np.abs(y)
    need = np.where(peak > self.ceiling, self.ceiling / np.maximum(peak, 1e-30), 1.0)
    # g[n] = min(1, need[n], g[n-1] + step) with g[-1] = self.gain unrolls to
    # min(1, n*step + min(gain + step, min_{k<=n} need[k] - k*step)).
    n = np.arange(len(y), dtype=np.float64)
    carry = self.gain + self.step          # the previous chunk's last gain, one step on
    run = np.minimum.accumulate(np.minimum(need - n * self.step, carry))
    g = np.minimum(1.0, run + n * self.step)
    if len(g):
      self.gain = float(g[-1])
    if np.all(g == 1.0):
      return np.asarray(wave, np.float32)
    return (y * g).astype(np.float32)
