"""One episode window -> one training example in the layout.py batch contract.

Timing conventions (interaction/layout.py: "the output block of turn t is what
the model says during the next 200 ms"):
  * input streams at turn t hold what arrived during [t, t+1) * turn_seconds;
  * output streams (model_text, model_audio, model_mel) at turn t hold what the
    model plays during [t+1, t+2) * turn_seconds, i.e. they are decided after
    hearing input turn t. So model speech and model text events are shifted one
    turn earlier than their absolute time.
Text streams are byte-token queues: an event's tokens join the queue at its
turn and leave it `n_slots` per turn (the model speaks about 12 characters a
second, the slots carry 10, so long phrases lag and catch up in the pauses).
A phrase of model speech ends with `<epad>`.
"""

from __future__ import annotations

import collections
import math

import numpy as np

from interaction import mel as mel_lib

from data_pipeline import video as video_lib
from data_pipeline.episode import Episode
from interaction.tokenizer import TOKENIZER, encode_event
from interaction.layout import LayoutSpec, Stream

EPAD = TOKENIZER.special_id("<epad>")


def text_slots(items, num_turns: int, n_slots: int, fill_id: int) -> np.ndarray:
  """items: (turn, [token ids]) pairs -> int32 [num_turns, n_slots] queue-drained slots."""
  out = np.full((num_turns, n_slots), fill_id, np.int32)
  by_turn = collections.defaultdict(list)
  for turn, toks in items:
    by_turn[max(0, int(turn))].extend(toks)
  queue = collections.deque()
  for t in range(num_turns):
    queue.extend(by_turn.get(t, ()))
    for s in range(n_slots):
      if not queue:
        break
      out[t, s] = queue.popleft()
  return out


def _turn(t: float, spec: LayoutSpec) -> int:
  # The epsilon keeps an event stamped exactly on a boundary in the later turn.
  return int(math.floor(t / spec.turn_seconds + 1e-9))


def model_text_items(phrases, spec: LayoutSpec, shift: int = 1):
  items = []
  for ph in phrases:
    words = ph.get("words") or [{"t_start": ph["t_start"], "text": ph["text"]}]
    control = len(words) == 1 and words[0]["text"].startswith("<")
    for i, w in enumerate(words):
      text = w["text"] if (i == 0 or w["text"].startswith("<")) else " " + w["text"]
      items.append((_turn(w["t_start"], spec) - shift, encode_event(text)))
    if not control:
      items.append((_turn(words[-1]["t_start"], spec) - shift, [EPAD]))
  return items


def event_items(events, spec: LayoutSpec):
  return [(_turn(e["t"], spec), encode_event(e["text"])) for e in events]


def num_turns(ep: Episode, spec: LayoutSpec) -> int:
  return max(1, math.ceil(len(ep.user_audio) / spec.samples_per_turn - 1e-9))


def episode_example(ep: Episode, spec: LayoutSpec, *, start_turn: int,
                    turns: int, params: mel_lib.MelParams | None = None,
                    session_offset: int = 0) -> dict[str, np.ndarray]:
  """The window of `turns` micro-turns from `start_turn` (padded past the end).

  `first_turn` (int32 scalar) is the window's turn in its session: the
  episode's own turn `start_turn`, plus `session_offset` turns of earlier
  conversation the episode is imagined to follow (the model embeds elapsed
  time and RoPE positions from it, interaction/model.py embed_episode).
  """
  if session_offset < 0:
    raise ValueError(f"session_offset: {session_offset} must be >= 0")
  if ep.sample_rate != spec.sample_rate:
    raise ValueError(f"episode {ep.id}: sample rate {ep.sample_rate} != "
                     f"layout.sample_rate {spec.sample_rate}")
  spt, n_total = spec.samples_per_turn, num_turns(ep, spec)
  span = turns * spt
  shape = (turns, spec.frames_per_turn, spec.n_mels)
  # User audio as a live session hears it (no look-ahead past each micro-turn),
  # so training inputs equal the streaming front end's bit for bit.
  user_mel = mel_lib.streaming_log_mel_window(ep.user_audio, start_turn * spt, span,
                                               spec, params).reshape(shape)
  model_mel = mel_lib.log_mel_window(ep.model_audio, (start_turn + 1) * spt, span,
                                      spec, params).reshape(shape)
  model_mel = np.clip(model_mel, spec.dmel_min, spec.dmel_max)

  def crop(slots):
    return slots[start_turn:start_turn + turns]

  full = start_turn + turns
  c = spec.slot_counts
  out = {
      "user_audio": mel_lib.dmel_quantize(user_mel, spec),
      "model_audio": mel_lib.dmel_quantize(model_mel, spec),
      "model_mel": model_mel.astype(np.float32),
      "user_text": crop(text_slots(event_items(ep.user_text, spec), full,
                                   c[Stream.USER_TEXT], TOKENIZER.empty_id)),
      "background_text": crop(text_slots(event_items(ep.background_text, spec), full,
                                         c[Stream.BACKGROUND_TEXT], TOKENIZER.empty_id)),
      "model_text": crop(text_slots(model_text_items(ep.model_text, spec), full,
                                    c[Stream.MODEL_TEXT], TOKENIZER.pad_id)),
      "turn_mask": (start_turn + np.arange(turns)) < n_total,
      "first_turn": np.int32(start_turn + session_offset),
  }
  if spec.video_enabled:
    video = np.zeros((turns, spec.video_height, spec.video_width, 3), np.uint8)
    present = np.zeros(turns, bool)
    if ep.video is not None and len(ep.video):
      # One frame per micro-turn: the frame shown at the turn's start.
      times = (start_turn + np.arange(turns)) * spec.turn_seconds
      idx = np.floor(times * ep.video_fps + 1e-6).astype(np.int64)
      ok = (idx < len(ep.video)) & out["turn_mask"]
      if ok.any():
        video[ok] = video_lib.resize_frames(ep.video[idx[ok]], spec.video_height,
                                           spec.video_width)
      present = ok
    out["video"] = video
    out["video_present"] = present
  return out
