"""User-facing streaming sessions: waveforms and text in, waveforms and events out.

    sessions = Sessions(config, params, batch_size=1)
    out = sessions.step(audio_chunk)          # 3200 samples of 16 kHz audio
    out.audio[0], out.events[0]               # 3200 samples, [TextEvent-like dicts]

Wraps the jitted core of `interaction.streaming` with the host-side parts of a
session: the audio front end (waveform -> dMel), queues for typed text and
background results (consumed a few tokens per micro-turn, as the layout has
slots for), the streaming vocoder and the text events. Every chunk is checked
before anything is touched, so a bad chunk raises a ValueError and leaves the
session exactly as it was.

Audio out passes a peak limiter (`audio_stream.OutputLimiter`, at
`session.output_ceiling`): nothing a vocoder makes of any mel in range goes
past full scale, and audio below the ceiling passes unchanged.

Audio out: the learned streaming vocoder when one is given (`vocoder=` a
`interaction.learned_vocoder.LearnedVocoder`, or the path of a vocoder
checkpoint; its speech comes `delay_samples` late, 41 ms by default), else
the chunked Griffin-Lim (`vocoder=True` or None, the fallback);
`vocoder=False` gives silence (tests).
"""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from interaction import mel as mel_lib
from interaction.tokenizer import TOKENIZER
from interaction.audio_stream import OutputLimiter, StreamingMelFrontend, StreamingVocoder
from interaction.layout import LayoutSpec, Stream
from interaction.streaming import SessionConfig, SessionRunner, TurnInputs


@dataclasses.dataclass
class StepResult:
  audio: np.ndarray            # f32 [B, samples_per_turn]
  events: list                 # per session: list of {"t_start","t_end","text","stream"}
  text_tokens: np.ndarray      # int32 [B, n_text]
  mel: np.ndarray              # f32 [B, frames_per_turn, n_mels]


class _Eventizer:
  """Groups model_text bytes into words with the time of the turn that said them."""

  def __init__(self):
    self.word = bytearray()
    self.t_start = None
    self.t_end = None

  def _flush(self, out):
    if self.word:
      text = self.word.decode("utf-8", errors="replace").strip()
      if text:
        out.append({"t_start": self.t_start, "t_end": self.t_end, "text": text,
                    "stream": "model_text"})
    self.word = bytearray()
    self.t_start = None

  def feed(self, tokens, t0: float, t1: float) -> list:
    out = []
    for tok in tokens:
      tok = int(tok)
      if tok in (TOKENIZER.delegate_id, TOKENIZER.cancel_id):
        self._flush(out)
        out.append({"t_start": t0, "t_end": t1, "text": TOKENIZER.token_to_str(tok),
                    "stream": "control"})
      elif TOKENIZER.is_special(tok) or tok in (0x20, 0x0A):
        self._flush(out)
      else:
        if not self.word:
          self.t_start = t0
        self.word.append(tok)
        self.t_end = t1
    return out


class Sessions:
  """B streaming sessions stepped together as one batch."""

  def __init__(self, config, params, batch_size: int = 1, seeds=None,
               scfg: SessionConfig | None = None, vocoder=True):
    self.config = config
    self.spec: LayoutSpec = LayoutSpec.from_config(config.layout)
    self.runner = SessionRunner(config, params, scfg)
    self.batch_size = int(batch_size)
    self.seeds = list(range(self.batch_size)) if seeds is None else seeds
    sc = config.session
    mel_params = mel_lib.MelParams.from_layout(config.layout)
    self.frontends = [StreamingMelFrontend(self.spec, mel_params)
                      for _ in range(self.batch_size)]
    self.vocoder = True if vocoder is None else vocoder   # None: none given
    if isinstance(vocoder, str):
      from interaction.learned_vocoder import load_vocoder
      self.vocoder = load_vocoder(vocoder)
    if isinstance(self.vocoder, bool):
      self.vocoders = ([StreamingVocoder(self.spec, n_iter=sc.vocoder_iters,
                                         context_frames=sc.vocoder_context_frames,
                                         params=mel_params)
                        for _ in range(self.batch_size)] if self.vocoder else None)
    elif hasattr(self.vocoder, "streamer"):
      from interaction.learned_vocoder import check_layout
      check_layout(self.vocoder.config, self.spec, where="session vocoder")
      self.vocoders = [self.vocoder.streamer() for _ in range(self.batch_size)]
    else:
      raise ValueError(f"vocoder: expected True (Griffin-Lim), False (no audio), a "
                       f"LearnedVocoder or a vocoder checkpoint path, got {vocoder!r}")
    self.limiters = [OutputLimiter(self.spec.sample_rate,
                                   float(sc.get("output_ceiling", 0.98)),
                                   float(sc.get("output_release_s", 0.05)))
                     for _ in range(self.batch_size)]
    self.reset()

  def reset(self, seeds=None):
    """Starts every session afresh (keeps the compiled step)."""
    if seeds is not None:
      self.seeds = seeds
    self.state = self.runner.init(self.batch_size, self.seeds)
    for fe in self.frontends:
      fe.reset()
    for voc in self.vocoders or []:
      voc.reset()
    for lim in self.limiters:
      lim.reset()
    self.user_text = [collections.deque() for _ in range(self.batch_size)]
    self.background_text = [collections.deque() for _ in range(self.batch_size)]
    self.eventizers = [_Eventizer() for _ in range(self.batch_size)]
    self.turn = 0

  # ---- input checks (before any state changes) -----------------------------
  def _check_audio(self, audio, sample_rate):
    spec = self.spec
    if sample_rate != spec.sample_rate:
      raise ValueError(f"audio: sample_rate={sample_rate}, the session runs at "
                       f"{spec.sample_rate} Hz; resample the chunk first")
    a = np.asarray(audio)
    if a.ndim == 1 and self.batch_size == 1:
      a = a[None]
    if a.shape != (self.batch_size, spec.samples_per_turn):
      raise ValueError(f"audio: expected shape ({self.batch_size}, "
                       f"{spec.samples_per_turn}) (200 ms per session), got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
      raise ValueError(f"audio: expected float samples in [-1, 1], got dtype {a.dtype}")
    if not np.isfinite(a).all():
      raise ValueError("audio: chunk contains NaN or infinite samples")
    return a.astype(np.float32)

  def _check_video(self, video):
    spec = self.spec
    n_video = spec.count(Stream.VIDEO)
    if video is None:
      return None
    if not n_video:
      raise ValueError("video: this model's layout has no video slots")
    v = np.asarray(video)
    if v.ndim == 3 and self.batch_size == 1:
      v = v[None]
    want = (self.batch_size, spec.video_height, spec.video_width, 3)
    if v.shape != want or v.dtype != np.uint8:
      raise ValueError(f"video: expected uint8 {want}, got {v.dtype} {v.shape}")
    return v

  @staticmethod
  def _per_session(value, n, what):
    if value is None:
      return [None] * n
    if isinstance(value, str):
      value = [value]
    if len(value) != n:
      raise ValueError(f"{what}: expected {n} entries (one per session), got {len(value)}")
    return list(value)

  # ---- the micro-turn ------------------------------------------------------
  def _take(self, queue, n):
    out = [queue.popleft() if queue else TOKENIZER.empty_id for _ in range(n)]
    return out

  def step(self, audio, *, sample_rate: int = 16000, video=None,
           user_text=None, background_text=None) -> StepResult:
    spec = self.spec
    a = self._check_audio(audio, sample_rate)
    v = self._check_video(video)
    texts = self._per_session(user_text, self.batch_size, "user_text")
    bg = self._per_session(background_text, self.batch_size, "background_text")
    # Everything validated: from here on the state changes.
    for q, t in zip(self.user_text, texts):
      if t:
        q.extend(TOKENIZER.encode(t))
    for q, t in zip(self.background_text, bg):
      if t:
        q.extend(TOKENIZER.encode(t))
    mel = np.stack([fe(x) for fe, x in zip(self.frontends, a)])
    bins = mel_lib.dmel_quantize(mel, spec)
    n_ut, n_bg = spec.count(Stream.USER_TEXT), spec.count(Stream.BACKGROUND_TEXT)
    ut = np.array([self._take(q, n_ut) for q in self.user_text], np.int32)
    bt = np.array([self._take(q, n_bg) for q in self.background_text], np.int32)
    if spec.count(Stream.VIDEO):
      present = np.full((self.batch_size,), v is not None)
      frames = v if v is not None else np.zeros(
          (self.batch_size, spec.video_height, spec.video_width, 3), np.uint8)
      inputs = TurnInputs(jnp.asarray(bins), jnp.asarray(ut), jnp.asarray(bt),
                          jnp.asarray(frames), jnp.asarray(present))
    else:
      inputs = TurnInputs(jnp.asarray(bins), jnp.asarray(ut), jnp.asarray(bt))
    self.state, out = self.runner.step(self.state, inputs)
    out = jax.device_get(out)
    # The output block of turn t is spoken during the next 200 ms.
    t0 = (self.turn + 1) * spec.turn_seconds
    t1 = t0 + spec.turn_seconds
    events = [ev.feed(tok, t0, t1) for ev, tok in zip(self.eventizers, out.text_tokens)]
    if self.vocoders is not None:
      wave = np.stack([lim(voc(m)) for lim, voc, m in
                       zip(self.limiters, self.vocoders, out.mel)])
    else:
      wave = np.zeros((self.batch_size, spec.samples_per_turn), np.float32)
    self.turn += 1
    return StepResult(audio=wave, events=events, text_tokens=out.text_tokens,
                      mel=out.mel)
