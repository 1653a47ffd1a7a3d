"""The micro-turn layout: where each stream's slots sit in the flat sequence.

One micro-turn (200 ms by default) is an input block then an output block:

  input : [user_audio x4][video x P][user_text x2][background_text x2]
  output: [model_text x2][model_audio x4]

Every stream is carried as an array shaped [B, T, n_slots, ...] (T micro-turns);
`interleave` puts them into one [B, T * slots_per_turn, ...] sequence and
`split` takes a sequence apart again. The slot order never changes, so time
alignment is exact: slot s of turn t always sits at t * slots_per_turn + offset.

Training batches (the contract between data_pipeline and the model):

  user_audio      int32  [B, T, F, n_mels]  dMel bins, F = frames per turn (16)
  model_audio     int32  [B, T, F, n_mels]  dMel bins of the model's own speech
  model_mel       f32    [B, T, F, n_mels]  log10 mel of the model's speech (flow target)
  video           uint8  [B, T, H, W, 3]    only when layout.video.enabled
  video_present   bool   [B, T]             only when layout.video.enabled
  user_text       int32  [B, T, 2]          <empty> where nothing was typed
  background_text int32  [B, T, 2]          <empty> where no result arrived
  model_text      int32  [B, T, 2]          <pad> while the model is silent
  turn_mask       bool   [B, T]             False on padding turns after the episode
  first_turn      int32  [B]                the window's first turn in its session
                                            (elapsed time and RoPE positions start there;
                                            optional, 0 when absent)
"""

from __future__ import annotations

import dataclasses
import enum
import math

import jax.numpy as jnp
import numpy as np


class Stream(enum.IntEnum):
  USER_AUDIO = 0
  VIDEO = 1
  USER_TEXT = 2
  BACKGROUND_TEXT = 3
  MODEL_TEXT = 4
  MODEL_AUDIO = 5


NUM_STREAMS = len(Stream)
INPUT_STREAMS = (Stream.USER_AUDIO, Stream.VIDEO, Stream.USER_TEXT,
                 Stream.BACKGROUND_TEXT)
OUTPUT_STREAMS = (Stream.MODEL_TEXT, Stream.MODEL_AUDIO)


def _check_multiple(value: float, unit: float, what: str) -> int:
  ratio = value / unit
  if ratio <= 0 or abs(ratio - round(ratio)) > 1e-9:
    raise ValueError(f"{what}: {value} is not a positive multiple of {unit}")
  return int(round(ratio))


@dataclasses.dataclass(frozen=True)
class LayoutSpec:
  """Slot counts per micro-turn, derived (and validated) from `config.layout`."""
  turn_seconds: float
  sample_rate: int
  samples_per_turn: int
  hop_samples: int
  frames_per_turn: int
  frames_per_position: int
  n_mels: int
  dmel_bins: int
  dmel_min: float
  dmel_max: float
  video_enabled: bool
  video_height: int
  video_width: int
  patch: int
  slot_counts: tuple[int, ...]  # indexed by Stream
  # STFT and mel filter bank (interaction.mel.MelParams.from_spec reads these).
  n_fft: int = 1024
  mel_win_ms: float = 50.0
  fmin: float = 80.0
  fmax: float = 7600.0

  @classmethod
  def from_config(cls, layout) -> "LayoutSpec":
    """Validates `config.layout`; errors name the offending field."""
    sr = int(layout.sample_rate)
    frames = _check_multiple(layout.turn_ms, layout.mel_hop_ms,
                             "layout.turn_ms (must be a multiple of layout.mel_hop_ms)")
    hop = layout.mel_hop_ms * sr / 1000.0
    if abs(hop - round(hop)) > 1e-9:
      raise ValueError(f"layout.mel_hop_ms: {layout.mel_hop_ms} ms is not a whole "
                       f"number of samples at layout.sample_rate={sr}")
    fpp = int(layout.frames_per_position)
    if fpp <= 0 or frames % fpp:
      raise ValueError(f"layout.frames_per_position: {fpp} does not divide the "
                       f"{frames} mel frames of a micro-turn")
    video = layout.video
    p = int(video.patch)
    if video.enabled:
      for name in ("height", "width"):
        size = int(video[name])
        if size <= 0 or size % p:
          raise ValueError(f"layout.video.{name}: {size} is not a positive "
                           f"multiple of the patch size {p}")
      n_video = (video.height // p) * (video.width // p)
    else:
      n_video = 0
    if layout.dmel_bins < 2 or not layout.dmel_max > layout.dmel_min:
      raise ValueError("layout.dmel_bins/dmel_min/dmel_max: need >= 2 bins and "
                       "dmel_max > dmel_min")
    n_audio = frames // fpp
    counts = [0] * NUM_STREAMS
    counts[Stream.USER_AUDIO] = n_audio
    counts[Stream.VIDEO] = n_video
    counts[Stream.USER_TEXT] = int(layout.user_text_slots)
    counts[Stream.BACKGROUND_TEXT] = int(layout.background_text_slots)
    counts[Stream.MODEL_TEXT] = int(layout.model_text_slots)
    counts[Stream.MODEL_AUDIO] = n_audio
    if counts[Stream.MODEL_TEXT] < 1:
      raise ValueError("layout.model_text_slots: need at least one slot")
    turn_s = layout.turn_ms / 1000.0
    return cls(
        turn_seconds=turn_s, sample_rate=sr,
        samples_per_turn=int(round(turn_s * sr)), hop_samples=int(round(hop)),
        frames_per_turn=frames, frames_per_position=fpp, n_mels=int(layout.n_mels),
        dmel_bins=int(layout.dmel_bins), dmel_min=float(layout.dmel_min),
        dmel_max=float(layout.dmel_max), video_enabled=bool(video.enabled),
        video_height=int(video.height), video_width=int(video.width), patch=p,
        slot_counts=tuple(counts), n_fft=int(layout.n_fft),
        mel_win_ms=float(layout.mel_win_ms), fmin=float(layout.fmin),
        fmax=float(layout.fmax))

  # ---- slot geometry -------------------------------------------------------
  def count(self, stream: Stream) -> int:
    return self.slot_counts[stream]

  def offset(self, stream: Stream) -> int:
    """Index of the stream's first slot inside a micro-turn."""
    return sum(self.slot_counts[:stream])

  @property
  def input_slots(self) -> int:
    return sum(self.slot_counts[s] for s in INPUT_STREAMS)

  @property
  def output_slots(self) -> int:
    return sum(self.slot_counts[s] for s in OUTPUT_STREAMS)

  @property
  def slots_per_turn(self) -> int:
    return sum(self.slot_counts)

  def turn_stream_ids(self) -> np.ndarray:
    """[slots_per_turn] stream id of each slot of one micro-turn."""
    return np.concatenate([np.full(n, s, np.int32)
                           for s, n in zip(Stream, self.slot_counts)])

  def slot_meta(self, num_turns: int, first_turn: int = 0) -> dict[str, np.ndarray]:
    """Per-slot metadata for `num_turns` turns starting at `first_turn`.

    stream_ids [S]: Stream of each slot; turn_index [S]; seconds [S]: elapsed
    session time of the slot's micro-turn (the time embedding's input);
    positions [S]: RoPE position = global slot index; text_target [S]: slots
    whose token is predicted (model_text); audio_target [S]: slots whose mel is
    predicted by the flow head (model_audio).
    """
    spt = self.slots_per_turn
    stream_ids = np.tile(self.turn_stream_ids(), num_turns)
    turn_index = np.repeat(np.arange(first_turn, first_turn + num_turns,
                                     dtype=np.int32), spt)
    positions = np.arange(first_turn * spt, (first_turn + num_turns) * spt,
                          dtype=np.int32)
    return dict(
        stream_ids=stream_ids,
        turn_index=turn_index,
        seconds=turn_index.astype(np.float32) * np.float32(self.turn_seconds),
        positions=positions,
        text_target=stream_ids == Stream.MODEL_TEXT,
        audio_target=stream_ids == Stream.MODEL_AUDIO,
    )

  def predictor_index(self, num_turns: int, stream: Stream) -> np.ndarray:
    """[T, n] index of the slot whose hidden state predicts each target slot.

    Next-slot prediction: the slot before a target slot predicts it, so the
    first model_text slot is predicted from the last input slot of its turn.
    """
    spt = self.slots_per_turn
    base = np.arange(num_turns)[:, None] * spt + self.offset(stream)
    return (base + np.arange(self.count(stream))[None, :] - 1).astype(np.int32)


def interleave(spec: LayoutSpec, streams: dict[Stream, jnp.ndarray]) -> jnp.ndarray:
  """{stream: [B, T, n_s, ...]} -> [B, T * slots_per_turn, ...].

  Streams with zero slots may be omitted. Trailing dims must agree.
  """
  parts = []
  for s in Stream:
    n = spec.count(s)
    if n == 0:
      continue
    if s not in streams:
      raise ValueError(f"interleave: stream {s.name} has {n} slots but no array")
    x = streams[s]
    if x.shape[2] != n:
      raise ValueError(f"interleave: stream {s.name} has {x.shape[2]} slots per "
                       f"turn, the layout says {n}")
    parts.append(x)
  x = jnp.concatenate(parts, axis=2)
  b, t = x.shape[:2]
  return x.reshape((b, t * spec.slots_per_turn) + x.shape[3:])


def split(spec: LayoutSpec, seq: jnp.ndarray) -> dict[Stream, jnp.ndarray]:
  """[B, T * slots_per_turn, ...] -> {stream: [B, T, n_s, ...]} (inverse of interleave)."""
  b, s = seq.shape[:2]
  spt = spec.slots_per_turn
  if s % spt:
    raise ValueError(f"split: sequence length {s} is not a whole number of "
                     f"micro-turns ({spt} slots each)")
  x = seq.reshape((b, s // spt, spt) + seq.shape[2:])
  out = {}
  for stream in Stream:
    n = spec.count(stream)
    if n:
      o = spec.offset(stream)
      out[stream] = x[:, :, o:o + n]
  return out


def stack_audio_frames(spec: LayoutSpec, frames: jnp.ndarray) -> jnp.ndarray:
  """[..., F, n_mels] per-turn mel frames -> [..., F / fpp, fpp * n_mels] slots."""
  fpp = spec.frames_per_position
  lead = frames.shape[:-2]
  return frames.reshape(lead + (frames.shape[-2] // fpp, fpp * frames.shape[-1]))


def unstack_audio_frames(spec: LayoutSpec, slots: jnp.ndarray) -> jnp.ndarray:
  """Inverse of stack_audio_frames."""
  lead = slots.shape[:-2]
  return slots.reshape(lead + (slots.shape[-2] * spec.frames_per_position, spec.n_mels))


def num_turns_for_samples(spec: LayoutSpec, num_samples: int) -> int:
  return math.ceil(num_samples / spec.samples_per_turn)
