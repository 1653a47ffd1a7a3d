"""A small learned streaming vocoder: log10 mel frames -> waveform (iSTFT family).

As in Vocos, a convolutional network predicts, for every mel frame, one STFT
frame, and an inverse STFT (overlap-add of windowed inverse DFTs) makes the
waveform. What differs is what a live session and a few CPU minutes of
training need:

- **Magnitude**: an envelope read straight off the mel (each STFT bin gets
  the average magnitude of the mel filters covering it: exactly 0 outside
  [fmin, fmax]) times a gain the network predicts, bounded to
  exp(+-max_log_gain).
- **Phase**: phase-gradient heap integration (PGHI, Prusa & Holighaus 2017)
  of that magnitude, frame by frame (vectorised, `_phase_step`), plus a
  per-bin correction the network predicts. The head is zero-initialised, so
  an untrained vocoder is the analytic one (mel envelope + PGHI phase),
  already intelligible; training improves magnitude and phase from there.
  (Phases a causal net predicts on its own, without a discriminator, stayed
  noise-like after minutes of training: the recogniser heard the PGHI phase
  far better.)
- **Causal with a bounded look-ahead.** Every convolution is causal over mel
  frames; net output j is the STFT frame of mel frame j - `lookahead`, and the
  phase of a frame needs the next frame's magnitude (a centred time
  derivative), so frame i is synthesised one call step later and its n_fft
  samples are laid at output samples [i*hop, i*hop + n_fft). After a
  micro-turn's 16 frames every output sample of that micro-turn is complete:
  200 ms of mel give 200 ms of audio, with nothing from the next micro-turn.
  The price is a fixed delay, `delay_samples = (lookahead + 1) * hop +
  n_fft // 2` (41 ms by default): the output is the mel's speech that much
  later.
- **State carried across chunks, so seams cannot click.** Each causal
  convolution's last `kernel - 1` inputs, the mel frames the envelope still
  needs, the not-yet-complete tail of the overlap-add, the phase integration's
  last frame (phase, its time derivative, log magnitude) and the frame held
  over for its successor. A stream of chunks computes what one call over the
  whole utterance computes (tests/interaction/vocoder_test.py).
- **Silence in, silence out; output in [-1, 1] by construction.** Silent mel
  (the layout's floor, 1e-7) gives an envelope around 1e-6, which no bounded
  gain lifts above about -70 dBFS. The input is made finite and clipped to the
  layout's [dmel_min, dmel_max], and the last step is a tanh, so any input
  gives a finite wave in [-1, 1].

`LearnedVocoder(config, params)` is the `Vocoder` (whole utterances) and makes
per-session streamers (`streamer()`), which the session uses in place of the
chunked Griffin-Lim. `load_vocoder(path)` reads a checkpoint written by
`python -m experiments.train_vocoder`; `check_layout` refuses a vocoder whose
mel space differs from a model's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings

import jax
import jax.numpy as jnp
import librosa
import numpy as np
from flax import nnx

from interaction.layout import LayoutSpec
from interaction.vocoder import Vocoder

# Items of a vocoder checkpoint (orbax CheckpointManager in <dir>/checkpoints).
PARAMS_ITEM, TRAIN_ITEM, META_ITEM = "params", "train", "meta"


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class VocoderConfig:
  """The mel space the vocoder reads (the layout's) and its network's shape."""
  # Mel space: must equal the session's layout (check_layout).
  sample_rate: int = 16000
  hop: int = 200
  n_mels: int = 80
  mel_n_fft: int = 1024
  mel_win: int = 800
  fmin: float = 80.0
  fmax: float = 7600.0
  mel_min: float = -7.0
  mel_max: float = 2.0
  frames_per_chunk: int = 16
  # Network and synthesis.
  dim: int = 128              # channels of the causal ConvNeXt
  blocks: int = 4
  kernel: int = 7             # depthwise kernel (frames) of each block
  in_kernel: int = 3          # input convolution's kernel (frames)
  ffn_mult: int = 3
  n_fft: int = 512            # synthesis STFT size (samples); hop is the mel hop
  lookahead: int = 1          # mel frames the network sees past its STFT frame
  max_log_gain: float = 4.6   # |log gain| bound on the mel envelope (4.6 = 40 dB)
  phase_tol: float = 1e-5     # bins below this fraction of the frame's peak: no phase locking

  def __post_init__(self):
    checks = [
        (self.hop > 0, f"hop={self.hop} must be > 0"),
        (self.n_fft >= 2 * self.hop and self.n_fft % 2 == 0,
         f"n_fft={self.n_fft} must be even and >= 2 * hop ({2 * self.hop}) so "
         "that every output sample is covered by two windows"),
        (self.lookahead >= 0, f"lookahead={self.lookahead} must be >= 0"),
        (self.dim > 0 and self.blocks >= 0 and self.ffn_mult > 0,
         "dim, blocks and ffn_mult must be positive"),
        (self.kernel >= 1 and self.in_kernel >= 1, "kernels must be >= 1"),
        (self.max_log_gain > 0, "max_log_gain must be > 0"),
        (0 < self.phase_tol < 1, "phase_tol must be in (0, 1)"),
        (self.mel_min < self.mel_max, "mel_min must be below mel_max"),
    ]
    for ok, what in checks:
      if not ok:
        raise ValueError(f"vocoder config: {what}")

  @classmethod
  def from_layout(cls, spec: LayoutSpec, **network) -> "VocoderConfig":
    """The layout's mel space plus the given network fields."""
    names = {f.name for f in dataclasses.fields(cls)} - set(_MEL_FIELDS)
    unknown = sorted(set(network) - names)
    if unknown:
      raise ValueError(f"vocoder config: unknown network fields {unknown}; known: "
                       f"{sorted(names)}")
    win = int(round(spec.mel_win_ms * spec.sample_rate / 1000.0))
    return cls(sample_rate=spec.sample_rate, hop=spec.hop_samples, n_mels=spec.n_mels,
               mel_n_fft=spec.n_fft, mel_win=win, fmin=spec.fmin, fmax=spec.fmax,
               mel_min=spec.dmel_min, mel_max=spec.dmel_max,
               frames_per_chunk=spec.frames_per_turn, **network)

  @classmethod
  def from_dict(cls, d: dict) -> "VocoderConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"vocoder config: unknown fields {unknown}")
    return cls(**d)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @property
  def n_bins(self) -> int:
    return self.n_fft // 2 + 1

  @property
  def delay_samples(self) -> int:
    """Output sample i is the mel's speech at sample i - delay_samples.

    `lookahead` frames for the network, one for the phase (its time
    derivative is a centred difference), half a synthesis window.
    """
    return (self.lookahead + 1) * self.hop + self.n_fft // 2

  @property
  def overlap_frames(self) -> int:
    """Frames whose windows overlap one output sample, at most (R)."""
    return -(-self.n_fft // self.hop)

  @property
  def receptive_frames(self) -> int:
    """Mel frames one net output depends on (itself and the ones before)."""
    return self.in_kernel + self.blocks * (self.kernel - 1)

  @property
  def pghi_gamma(self) -> float:
    """Time-frequency spread of the Hann window as an equivalent Gaussian (PGHI)."""
    return 0.25645 * self.n_fft ** 2


_MEL_FIELDS = ("sample_rate", "hop", "n_mels", "mel_n_fft", "mel_win", "fmin", "fmax",
               "mel_min", "mel_max", "frames_per_chunk")


def check_layout(config: VocoderConfig, spec: LayoutSpec, where: str = "vocoder"):
  """Raises ValueError naming every mel-space field where `config` and the layout differ."""
  want = VocoderConfig.from_layout(spec)
  diffs = [f"  {k}: vocoder={getattr(config, k)!r} layout={getattr(want, k)!r}"
           for k in _MEL_FIELDS
           if not np.isclose(float(getattr(config, k)), float(getattr(want, k)))]
  if diffs:
    raise ValueError(f"{where}: the vocoder was trained on another mel space than "
                     "this model's layout; train one on this layout "
                     "(python -m experiments.train_vocoder) or drop it to use "
                     "Griffin-Lim:\n" + "\n".join(diffs))


# ---------------------------------------------------------------------------
# Fixed (non-learned) arrays: the mel envelope, windows, bin indices
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Constants:
  envelope: np.ndarray      # f32 [n_mels, n_bins]: 10**mel @ envelope = magnitude
  window: np.ndarray        # f32 [n_fft] periodic Hann (synthesis)
  inv_cos: np.ndarray       # f32 [n_bins, n_fft]: windowed inverse real DFT, real part
  inv_sin: np.ndarray       # f32 [n_bins, n_fft]: ... imaginary part
  inv_norm: np.ndarray      # f32 [hop] 1 / sum of squared windows over one sample
  bins: np.ndarray          # int32 [n_bins]
  centre_advance: np.ndarray  # f32 [n_bins]: a bin-centre sinusoid's turn per hop, wrapped
  half_turns: np.ndarray    # f32 [n_bins]: pi * k, window centre -> frame start


def constants(c: VocoderConfig) -> Constants:
  with warnings.catch_warnings():
    # The lowest Slaney filters are narrower than a 512-point bin; a filter
    # that misses every bin just leaves those bins to its neighbours.
    warnings.simplefilter("ignore")
    mel_a = librosa.filters.mel(sr=c.sample_rate, n_fft=c.mel_n_fft, n_mels=c.n_mels,
                                fmin=c.fmin, fmax=c.fmax).astype(np.float64)
    mel_s = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels,
                                fmin=c.fmin, fmax=c.fmax).astype(np.float64)
  # 10**mel_m is sum_f A[m, f] |X_f| (interaction.mel); a flat spectrum of
  # per-bin magnitude a gives a * sum_f A[m, f], so mel_m / sum_f A[m, f] is
  # the filter's average magnitude. Each synthesis bin takes the average of
  # the filters covering it, weighted by their overlap.
  per_filter = 1.0 / np.maximum(mel_a.sum(axis=1), 1e-12)              # [M]
  cover = mel_s.sum(axis=0)                                             # [F]
  weights = np.where(cover > 0, mel_s / np.maximum(cover, 1e-12), 0.0)  # [M, F]
  # Magnitudes scale with the window's sum (a sinusoid of amplitude A gives
  # A * sum(w) / 2): from the analysis window to the synthesis one.
  win_a = librosa.filters.get_window("hann", c.mel_win, fftbins=True).sum()
  window = librosa.filters.get_window("hann", c.n_fft, fftbins=True)
  envelope = per_filter[:, None] * weights * (window.sum() / win_a)
  # Overlap-add normalisation (least-squares iSTFT): each output sample is
  # divided by the sum of the squared windows over it; frames sit every hop,
  # so the sum repeats with period hop.
  sq = np.zeros(c.overlap_frames * c.hop)
  sq[:c.n_fft] = window ** 2
  norm = sq.reshape(c.overlap_frames, c.hop).sum(axis=0)
  # The inverse real DFT as two matrices with the window folded in. A matmul,
  # not jnp.fft.irfft: XLA:CPU's FFT thunk (ducc) can deadlock in the Eigen
  # pool when several run at once (seen here in the training step's gradient),
  # and at N = 512 the matmul costs nothing.
  k, n = np.arange(c.n_bins)[:, None], np.arange(c.n_fft)[None]
  weight = np.where((k == 0) | (2 * k == c.n_fft), 1.0, 2.0) / c.n_fft
  angle = 2.0 * np.pi * k * n / c.n_fft
  inv_cos = weight * np.cos(angle) * window[None]
  inv_sin = -weight * np.sin(angle) * window[None]
  return Constants(envelope=envelope.astype(np.float32),
                    window=window.astype(np.float32),
                    inv_cos=inv_cos.astype(np.float32), inv_sin=inv_sin.astype(np.float32),
                    inv_norm=(1.0 / norm).astype(np.float32),
                    bins=np.arange(c.n_bins, dtype=np.int32),
                    # Integer arithmetic first, so the wrap is exact.
                    centre_advance=(2.0 * np.pi / c.n_fft * ((c.hop * np.arange(c.n_bins))
                                                             % c.n_fft)).astype(np.float32),
                    half_turns=(np.pi * (np.arange(c.n_bins) % 2)).astype(np.float32))


# ---------------------------------------------------------------------------
# The network (Flax NNX)
# ---------------------------------------------------------------------------
def _unfold(x, state, kernel):
  """[B, T, C] with its [B, K-1, C] past -> K shifted views [B, T, C] and the new past."""
  xs = jnp.concatenate([state, x], axis=1) if kernel > 1 else x
  t = x.shape[1]
  views = [xs[:, k:k + t] for k in range(kernel)]
  return views, (xs[:, xs.shape[1] - (kernel - 1):] if kernel > 1 else state)


class _CausalConv(nnx.Module):
  """Dense causal convolution over frames (the input layer)."""

  def __init__(self, c_in: int, c_out: int, kernel: int, *, rngs: nnx.Rngs):
    self.kernel = kernel
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    self.w = nnx.Param(init(rngs.params(), (kernel * c_in, c_out), jnp.float32))
    self.b = nnx.Param(jnp.zeros((c_out,), jnp.float32))

  def __call__(self, x, state):
    views, state = _unfold(x, state, self.kernel)
    return jnp.concatenate(views, axis=-1) @ self.w[...] + self.b[...], state


class _Block(nnx.Module):
  """ConvNeXt block with a causal depthwise convolution."""

  def __init__(self, dim: int, kernel: int, mult: int, *, rngs: nnx.Rngs):
    self.kernel = kernel
    self.dw = nnx.Param(jax.random.normal(rngs.params(), (kernel, dim), jnp.float32)
                        / math.sqrt(kernel))
    self.dw_b = nnx.Param(jnp.zeros((dim,), jnp.float32))
    self.norm = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
    self.up = nnx.Linear(dim, mult * dim, rngs=rngs)
    self.down = nnx.Linear(mult * dim, dim, rngs=rngs)
    # Layer scale (ConvNeXt): blocks start near identity, so a deep stack
    # trains from the first step.
    self.gamma = nnx.Param(jnp.full((dim,), 0.1, jnp.float32))

  def __call__(self, x, state):
    views, state = _unfold(x, state, self.kernel)
    w = self.dw[...]
    h = sum(v * w[k] for k, v in enumerate(views)) + self.dw_b[...]
    h = self.down(jax.nn.gelu(self.up(self.norm(h))))
    return x + self.gamma[...] * h, state


class VocoderNet(nnx.Module):
  """mel [B, T, n_mels] (log10, clipped) -> per frame [log gain | phase correction] per bin."""

  def __init__(self, config: VocoderConfig, *, rngs: nnx.Rngs):
    c = self.config = config
    self.inp = _CausalConv(c.n_mels, c.dim, c.in_kernel, rngs=rngs)
    self.blocks = nnx.List([_Block(c.dim, c.kernel, c.ffn_mult, rngs=rngs)
                            for _ in range(c.blocks)])
    self.norm = nnx.LayerNorm(c.dim, epsilon=1e-6, rngs=rngs)
    # Zero-initialised: an untrained vocoder is the analytic one (the mel
    # envelope, gain 1, phase from the phase-gradient integration), which is
    # already intelligible; training only has to improve on it.
    self.head = nnx.Linear(c.dim, 2 * c.n_bins, kernel_init=nnx.initializers.zeros,
                           rngs=rngs)

  def __call__(self, mel, conv_state):
    c = self.config
    # Silence maps to 0, so the zero initial state is a silent past.
    x = (mel - c.mel_min) * (2.0 / (c.mel_max - c.mel_min))      # [0, 2]
    h, s0 = self.inp(x, conv_state[0])
    states = [s0]
    for blk, st in zip(self.blocks, conv_state[1:]):
      h, st = blk(h, st)
      states.append(st)
    return self.head(self.norm(h)), states


# ---------------------------------------------------------------------------
# State, synthesis and the whole-utterance / chunk functions
# ---------------------------------------------------------------------------
def init_state(config: VocoderConfig, batch: int = 1) -> dict:
  """The state before the first chunk: silence behind."""
  c = config
  conv = [jnp.zeros((batch, c.in_kernel - 1, c.n_mels), jnp.float32)]
  conv += [jnp.zeros((batch, c.kernel - 1, c.dim), jnp.float32) for _ in range(c.blocks)]
  silent = jnp.full((batch, c.n_bins), math.log(_MAG_FLOOR), jnp.float32)
  zeros = jnp.zeros((batch, c.n_bins), jnp.float32)
  return {"conv": conv,
          "mel": jnp.full((batch, c.lookahead, c.n_mels), c.mel_min, jnp.float32),
          "tail": jnp.zeros((batch, c.overlap_frames - 1, c.hop), jnp.float32),
          # The phase integration: last synthesised frame's phase, its time
          # derivative and log magnitude.
          "phase": zeros, "dphase": zeros, "logmag": silent,
          # The frame predicted last, synthesised once its successor is known.
          "next_mag": zeros, "next_offset": zeros, "next_logmag": silent}


_MAG_FLOOR = 1e-10


def clean_mel(mel, config: VocoderConfig):
  """Finite and inside the layout's [mel_min, mel_max] (what any input becomes)."""
  mel = jnp.nan_to_num(mel.astype(jnp.float32), nan=config.mel_min,
                       posinf=config.mel_max, neginf=config.mel_min)
  return jnp.clip(mel, config.mel_min, config.mel_max)


def _phase_step(c: VocoderConfig, consts: "Constants", carry, frame):
  """One frame of phase-gradient heap integration, vectorised (RTPGHI-like).

  Prusa & Holighaus' PGHI reads the phase's time and frequency derivatives
  off the log magnitude (for a Gaussian window exactly; Hann via its
  equivalent Gaussian, gamma): d(phase)/d(frame) = 2 pi hop k / N +
  (hop N / gamma) d(log s)/dk and d(phase)/dk = -(gamma / (hop N)) d(log s)/d(frame)
  (a centred difference: the frame after is known). The heap that integrates from the
  largest bins outwards is replaced by its usual outcome: each spectral peak
  continues its own phase in time (trapezoid rule), and the bins around it
  take the peak's phase plus the frequency integral from it (identity phase
  locking). Phases are centred on the window (a steady sinusoid has one phase
  across its bins) and wrapped to [-pi, pi) every frame.
  """
  prev_phase, prev_dt, prev_logmag = carry
  logmag, next_logmag = frame
  f = c.n_bins
  k = jnp.asarray(consts.bins)
  grad_k = jnp.concatenate([logmag[:, 1:2] - logmag[:, :1],
                            (logmag[:, 2:] - logmag[:, :-2]) / 2.0,
                            logmag[:, -1:] - logmag[:, -2:-1]], axis=1)
  dt = jnp.asarray(consts.centre_advance) + (c.hop * c.n_fft / c.pghi_gamma) * grad_k
  dk = -(c.pghi_gamma / (c.hop * c.n_fft)) * 0.5 * (next_logmag - prev_logmag)
  timed = prev_phase + 0.5 * (prev_dt + dt)
  strong = logmag > jnp.max(logmag, axis=1, keepdims=True) + math.log(c.phase_tol)
  left = jnp.concatenate([jnp.full_like(logmag[:, :1], -jnp.inf), logmag[:, :-1]], axis=1)
  right = jnp.concatenate([logmag[:, 1:], jnp.full_like(logmag[:, :1], -jnp.inf)], axis=1)
  peak = strong & (logmag >= left) & (logmag >= right)
  # The nearest peak of every bin: the last one at or below it, the first one
  # at or above it (a frame with a strong bin always has a peak).
  below = jax.lax.cummax(jnp.where(peak, k, -1), axis=1)
  above = jax.lax.cummin(jnp.where(peak, k, 2 * f), axis=1, reverse=True)
  below = jnp.where(below < 0, above, below)
  above = jnp.where(above >= f, below, above)
  nearest = jnp.where(k - below <= above - k, below, above)
  nearest = jnp.clip(nearest, 0, f - 1)
  freq_int = jnp.concatenate([jnp.zeros_like(dk[:, :1]),
                              jnp.cumsum(0.5 * (dk[:, 1:] + dk[:, :-1]), axis=1)], axis=1)
  locked = (jnp.take_along_axis(timed, nearest, axis=1) + freq_int
            - jnp.take_along_axis(freq_int, nearest, axis=1))
  phase = jnp.where(strong, locked, timed)
  phase = jnp.mod(phase + np.pi, 2.0 * np.pi) - np.pi
  return (phase, dt, logmag), phase


def forward(net: VocoderNet, consts: "Constants", mel, state):
  """(wave [B, T*hop] in [-1, 1], aux, new state) for mel [B, T, n_mels].

  aux: "raw", the wave before the tanh; "mag" [B, T, n_bins], the magnitude of
  each synthesised frame (frame i lies at output samples [i*hop, i*hop + n_fft)).

  Pure: the same function serves one chunk and a whole utterance, so a stream
  of chunks computes what one call over their concatenation computes.
  """
  c = net.config
  b, t = mel.shape[0], mel.shape[1]
  mel = clean_mel(mel, c)
  out, conv = net(mel, state["conv"])
  f = c.n_bins
  log_gain, offset = out[..., :f], out[..., f:]
  # Net output j is the STFT frame of mel frame j - lookahead: its envelope
  # comes from that frame (kept in the state across chunks).
  history = jnp.concatenate([state["mel"], mel], axis=1)
  aligned = history[:, :t]
  predicted = (10.0 ** aligned) @ jnp.asarray(consts.envelope)
  predicted = predicted * jnp.exp(c.max_log_gain * jnp.tanh(log_gain / c.max_log_gain))
  # Phase from the magnitude it will carry (no gradient through the
  # integration: the network learns its magnitude and a phase correction).
  logpred = jnp.log(jax.lax.stop_gradient(predicted) + _MAG_FLOOR)
  # The phase of a frame needs the next frame's magnitude, so this call
  # synthesises the frame held over from the last call and all but its own
  # last, which it holds over in turn.
  mag = jnp.concatenate([state["next_mag"][:, None], predicted[:, :-1]], axis=1)
  offset = jnp.concatenate([state["next_offset"][:, None], offset[:, :-1]], axis=1)
  logmag = jnp.concatenate([state["next_logmag"][:, None], logpred[:, :-1]], axis=1)
  carry, phases = jax.lax.scan(
      lambda cr, x: _phase_step(c, consts, cr, x),
      (state["phase"], state["dphase"], state["logmag"]),
      (jnp.swapaxes(logmag, 0, 1), jnp.swapaxes(logpred, 0, 1)))
  # Centred phase -> the phase at the frame's first sample (the inverse DFT's origin).
  phase = jnp.swapaxes(phases, 0, 1) - jnp.asarray(consts.half_turns) + offset
  frames = ((mag * jnp.cos(phase)) @ jnp.asarray(consts.inv_cos)
            + (mag * jnp.sin(phase)) @ jnp.asarray(consts.inv_sin))   # windowed irfft
  r = c.overlap_frames
  frames = jnp.pad(frames, ((0, 0), (0, 0), (0, r * c.hop - c.n_fft)))
  frames = frames.reshape(b, t, r, c.hop)
  # Overlap-add: frame j's r-th hop lands on output hop j + r.
  ola = jnp.zeros((b, t + r - 1, c.hop), jnp.float32)
  for k in range(r):
    ola = ola.at[:, k:k + t].add(frames[:, :, k])
  ola = ola.at[:, :r - 1].add(state["tail"])
  raw = (ola[:, :t] * jnp.asarray(consts.inv_norm)).reshape(b, t * c.hop)
  new_state = {"conv": conv, "mel": history[:, t:], "tail": ola[:, t:],
               "phase": carry[0], "dphase": carry[1], "logmag": carry[2],
               "next_mag": predicted[:, -1], "next_offset": out[:, -1, f:],
               "next_logmag": logpred[:, -1]}
  return jnp.tanh(raw), {"raw": raw, "mag": mag}, new_state


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------
def build_net(config: VocoderConfig, seed: int = 0) -> VocoderNet:
  return VocoderNet(config, rngs=nnx.Rngs(seed))


def init_params(config: VocoderConfig, seed: int = 0) -> dict:
  """Freshly initialised parameters as a pure dict (what orbax saves)."""
  return nnx.to_pure_dict(nnx.state(build_net(config, seed), nnx.Param))


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


class NetBinder:
  """Rebuilds the network around a pure-dict parameter tree (cheap; traceable)."""

  def __init__(self, config: VocoderConfig):
    abstract = nnx.eval_shape(lambda: VocoderNet(config, rngs=nnx.Rngs(0)))
    self.graphdef, self.abstract = nnx.split(abstract, nnx.Param)

  def __call__(self, params) -> VocoderNet:
    state = jax.tree_util.tree_map(lambda x: x, self.abstract)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self.graphdef, state)

  def shapes(self) -> dict:
    return nnx.to_pure_dict(self.abstract)


# ---------------------------------------------------------------------------
# The vocoder a session and the benchmarks use
# ---------------------------------------------------------------------------
class LearnedVocoder(Vocoder):
  """The trained network as a `Vocoder` (whole utterances) and a source of streamers."""

  def __init__(self, config: VocoderConfig, params, *, source: str | None = None):
    self.config = config
    self.sample_rate = config.sample_rate
    self.source = source            # where it was loaded from (reports)
    self.params = jax.tree_util.tree_map(jnp.asarray, params)
    self.consts = constants(config)
    binder = NetBinder(config)

    net = binder(self.params)

    # The weights are closed over (compile-time constants), not arguments:
    # fewer buffers to pass per 200 ms call (measured 1.0 -> 0.6 ms per chunk).
    def run(mel, state):
      wave, _, state = forward(net, self.consts, mel, state)
      return wave, state

    self._run = jax.jit(run)

  @property
  def delay_samples(self) -> int:
    return self.config.delay_samples

  def synthesize(self, logmel: np.ndarray) -> np.ndarray:
    """One call over [frames, n_mels]: what streaming the same frames gives (delayed)."""
    logmel = self._check(logmel)
    wave, _ = self._run(jnp.asarray(logmel)[None], init_state(self.config))
    return np.asarray(wave[0])

  def mel_to_wave(self, logmel: np.ndarray) -> np.ndarray:
    """frames * hop samples aligned with the mel (the delay taken out).

    The frames the delay still needs after the last one are copies of the
    last (as the Griffin-Lim vocoder does), so the end is extrapolated.
    """
    logmel = self._check(logmel)
    n = logmel.shape[0] * self.config.hop
    if n == 0:
      return np.zeros(0, np.float32)
    extra = -(-self.delay_samples // self.config.hop)
    padded = np.concatenate([logmel, np.repeat(logmel[-1:], extra, axis=0)])
    return self.synthesize(padded)[self.delay_samples:self.delay_samples + n]

  def streamer(self) -> "StreamingLearnedVocoder":
    return StreamingLearnedVocoder(self)

  def _check(self, logmel):
    logmel = np.asarray(logmel, np.float32)
    if logmel.ndim != 2 or logmel.shape[1] != self.config.n_mels:
      raise ValueError(f"mel_to_wave: logmel must be [frames, {self.config.n_mels}], "
                       f"got {logmel.shape}")
    return logmel

  def describe(self) -> dict:
    return {"vocoder": "learned", "source": self.source,
            "params": count_params(self.params), "delay_ms":
            1000.0 * self.delay_samples / self.sample_rate}


class StreamingLearnedVocoder:
  """One session's stream: 16 mel frames in, 3200 samples out, state carried."""

  def __init__(self, vocoder: LearnedVocoder):
    self.vocoder = vocoder
    self.reset()

  def reset(self):
    self.state = init_state(self.vocoder.config)

  def __call__(self, mel: np.ndarray) -> np.ndarray:
    """f32 [frames, n_mels] -> f32 [frames * hop] (the speech delay_samples late)."""
    mel = self.vocoder._check(mel)  # pylint: disable=protected-access
    wave, self.state = self.vocoder._run(  # pylint: disable=protected-access
        jnp.asarray(mel)[None], self.state)
    return np.asarray(wave[0])


# ---------------------------------------------------------------------------
# Checkpoints: <dir>/checkpoints/<step>/{params,train,meta} (orbax)
# ---------------------------------------------------------------------------
def checkpoint_manager(directory: str, *, keep: int = 2, create: bool = False):
  """The orbax manager of a vocoder directory (the trainer writes, loaders read)."""
  import orbax.checkpoint as ocp
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(directory, "checkpoints")),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=create),
      item_handlers={PARAMS_ITEM: ocp.StandardCheckpointHandler(),
                     TRAIN_ITEM: ocp.StandardCheckpointHandler(),
                     META_ITEM: ocp.JsonCheckpointHandler()})


def vocoder_dir(path: str) -> str:
  """The vocoder directory of `path`: itself, or <path>/vocoder of a model workdir."""
  # A model workdir has checkpoints/ too (the model's: state, data, meta), so
  # a vocoder dir is recognised by a step holding the vocoder's params item.
  for d in (os.path.join(path, "vocoder"), path):
    ckpts = os.path.join(d, "checkpoints")
    if os.path.isdir(ckpts) and any(os.path.isdir(os.path.join(ckpts, step, PARAMS_ITEM))
                                    for step in os.listdir(ckpts)):
      return d
  raise FileNotFoundError(
      f"{path}: no vocoder checkpoint (looked for {path}/checkpoints and "
      f"{path}/vocoder/checkpoints); train one with `python -m "
      "experiments.train_vocoder --config=experiments/configs/vocoder.py "
      f"--workdir=WORKDIR`, or leave the vocoder unset for Griffin-Lim")


def has_vocoder(path: str | None) -> bool:
  try:
    return bool(path) and bool(vocoder_dir(path))
  except FileNotFoundError:
    return False


def load_vocoder(path: str, step: int | None = None) -> LearnedVocoder:
  """The LearnedVocoder saved in `path` (a vocoder dir or a model workdir), latest step."""
  import orbax.checkpoint as ocp
  d = vocoder_dir(path)
  manager = checkpoint_manager(d)
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{d}/checkpoints: no checkpoint step in it")
    meta = manager.restore(step, args=ocp.args.Composite(
        **{META_ITEM: ocp.args.JsonRestore()}))[META_ITEM]
    try:
      config = VocoderConfig.from_dict(meta["vocoder"])
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f"{d}: step {step} has no usable vocoder config ({e}); it "
                       "was written by other code") from None
    shapes = NetBinder(config).shapes()
    saved = manager.item_metadata(step)[PARAMS_ITEM]
    saved = getattr(saved, "tree", saved)
    _check_tree(saved, shapes, d)
    target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                    shapes)
    params = manager.restore(step, args=ocp.args.Composite(
        **{PARAMS_ITEM: ocp.args.StandardRestore(target)}))[PARAMS_ITEM]
  finally:
    manager.close()
  return LearnedVocoder(config, params, source=f"{d}@{step}")


def _check_tree(saved, target, where):
  def flat(tree):
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path):
            tuple(getattr(leaf, "shape", ())) for path, leaf
            in jax.tree_util.tree_flatten_with_path(tree)[0]}
  a, b = flat(saved), flat(target)
  diffs = [f"  {k}: checkpoint {a.get(k)} vs config {b.get(k)}"
           for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
  if diffs:
    raise ValueError(f"{where}: the saved vocoder parameters do not match its "
                     "config (written by other code?):\n" + "\n".join(diffs[:12]))


def write_meta(config: VocoderConfig, extra: dict | None = None) -> dict:
  """The JSON meta item of a checkpoint."""
  return json.loads(json.dumps({"vocoder": config.to_dict(), **(extra or {})}))


def save_checkpoint(manager, step: int, params, train_state, meta: dict):
  """Writes step `step` (params, the trainer's state, meta) through `manager`."""
  import orbax.checkpoint as ocp
  manager.save(int(step), args=ocp.args.Composite(**{
      PARAMS_ITEM: ocp.args.StandardSave(params),
      TRAIN_ITEM: ocp.args.StandardSave(train_state),
      META_ITEM: ocp.args.JsonSave({**meta, "step": int(step)})}), force=True)
