"""Cheap in-memory episodes for `data.source='synthetic'` (no espeak, no disk).

A "voice" here is a glottal-buzz babble: harmonics of a drifting pitch under a
syllable-rate envelope. It has speech's spectral shape and on/off rhythm, which
is all a trainer smoke test or the `tiny` config needs. Each episode is a
turn-taking exchange (the user talks, stops, the model answers with words on
its text stream); some also carry a typed user message, a `<delegate>` with a
background result, or a moving square on video. Episode i is a pure function of
(seed, i), so any index can be regenerated anywhere.
"""

from __future__ import annotations

import numpy as np

from data_pipeline.episode import Episode

_WORDS = ("okay sure yes no hello the answer is that one two three right "
          "well maybe let me check it here now you see good time").split()


def babble(duration: float, rng: np.random.Generator, sr: int,
           f0: float | None = None) -> np.ndarray:
  """f32 buzz-speech of `duration` seconds (edges faded, level ~ -20 dBFS)."""
  n = max(1, int(round(duration * sr)))
  t = np.arange(n, dtype=np.float32) / sr
  f0 = f0 or rng.uniform(90.0, 240.0)
  pitch = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t
                                     + rng.uniform(0, 6.3)))
  phase = 2 * np.pi * np.cumsum(pitch) / sr
  n_harm = int(min(24, 3800.0 // f0))
  amps = rng.uniform(0.3, 1.0, n_harm) / np.arange(1, n_harm + 1) ** 0.9
  wave = sum(a * np.sin((k + 1) * phase) for k, a in enumerate(amps))
  syll = rng.uniform(3.0, 5.5)
  env = np.clip(0.6 + 0.6 * np.sin(2 * np.pi * syll * t + rng.uniform(0, 6.3)),
                0.15, 1.0)
  ramp = min(n // 2, int(0.01 * sr))
  if ramp:
    env[:ramp] *= np.linspace(0, 1, ramp)
    env[n - ramp:] *= np.linspace(1, 0, ramp)
  wave = wave * env
  return (0.1 * wave / (np.abs(wave).max() + 1e-9)).astype(np.float32)


def place(dst: np.ndarray, wave: np.ndarray, t: float, sr: int) -> None:
  """Adds `wave` into `dst` starting at `t` seconds (cut at the end of `dst`)."""
  i = int(round(t * sr))
  n = max(0, min(len(wave), len(dst) - i))
  dst[i:i + n] += wave[:n]


def _phrase(t0: float, t1: float, words: list[str]) -> dict:
  step = (t1 - t0) / len(words)
  return {"t_start": t0, "t_end": t1, "text": " ".join(words),
          "words": [{"t_start": t0 + i * step, "t_end": t0 + (i + 1) * step,
                     "text": w} for i, w in enumerate(words)]}


def random_episode(seed: int, index: int, *, turns: int, turn_seconds: float,
                   sample_rate: int, video_hw: tuple[int, int] | None = None,
                   video_fps: float = 5.0) -> Episode:
  """Episode `index` of the stream seeded by `seed`, about `turns` turns long."""
  rng = np.random.default_rng([seed, index, 0x5EED])
  n_turns = int(rng.integers(max(2, turns // 2), max(3, turns * 3 // 2) + 1))
  dur = n_turns * turn_seconds
  sr = sample_rate
  user = np.zeros(int(round(dur * sr)), np.float32)
  model = np.zeros_like(user)
  u0 = rng.uniform(0.0, 0.3 * dur)
  u1 = min(dur, u0 + rng.uniform(0.6, 0.45 * dur + 0.6))
  place(user, babble(u1 - u0, rng, sr), u0, sr)
  gap = rng.uniform(0.2, 0.8)
  m0 = min(dur, u1 + gap)
  m1 = min(dur, m0 + rng.uniform(0.6, 2.5))
  model_text, user_text, background = [], [], []
  user_speech = [{"t_start": u0, "t_end": u1, "text": "", "words": []}]
  if m1 - m0 > 0.3:
    place(model, babble(m1 - m0, rng, sr), m0, sr)
    n_words = max(1, int((m1 - m0) * 2.5))
    model_text.append(_phrase(m0, m1, list(rng.choice(_WORDS, n_words))))
  if rng.random() < 0.2:
    user_text.append({"t": float(rng.uniform(0, dur)), "text": "hi there"})
  if rng.random() < 0.2 and m0 < dur:
    model_text.append({"t_start": m0, "t_end": m0, "text": "<delegate>",
                       "words": [{"t_start": m0, "t_end": m0, "text": "<delegate>"}]})
    background.append({"t": float(min(dur, m0 + rng.uniform(0.4, 1.5))),
                       "text": "result: 42"})
  video = None
  if video_hw is not None:
    h, w = video_hw
    n_frames = int(np.ceil(dur * video_fps))
    video = np.full((n_frames, h, w, 3), 30, np.uint8)
    size = max(2, min(h, w) // 5)
    x = rng.uniform(0, w - size)
    speed = rng.uniform(-0.15, 0.15) * w
    for i in range(n_frames):
      xi = int(np.clip(x + speed * i / video_fps, 0, w - size))
      video[i, h // 2 - size // 2:h // 2 + size // 2, xi:xi + size] = (220, 60, 40)
  return Episode(
      id=f"synthetic-{seed}-{index}", family="synthetic", sample_rate=sr,
      user_audio=user, model_audio=model, user_speech=user_speech,
      model_text=model_text, user_text=user_text, background_text=background,
      video=video, video_fps=video_fps if video is not None else 0.0,
      task={"user_end": u1, "model_start": m0},
      meta={"seed": seed, "index": index})
