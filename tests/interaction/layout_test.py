"""Micro-turn layout: round trip, time alignment, config validation."""

import jax.numpy as jnp
import numpy as np
import pytest

from interaction import layout as lo
from interaction.layout import LayoutSpec, Stream


def _spec(layout_config, video=True):
  return LayoutSpec.from_config(layout_config(video))


def test_slot_counts_follow_design_defaults(layout_config):
  spec = LayoutSpec.from_config(layout_config())
  assert spec.frames_per_turn == 16
  assert spec.count(Stream.USER_AUDIO) == 4 and spec.count(Stream.MODEL_AUDIO) == 4
  assert spec.count(Stream.VIDEO) == 0
  assert spec.input_slots == 8 and spec.output_slots == 6
  c = layout_config()
  c.video.enabled = True
  c.video.height, c.video.width = 240, 320
  assert LayoutSpec.from_config(c).count(Stream.VIDEO) == 48


@pytest.mark.parametrize("video", [True, False])
def test_round_trip_keeps_every_slot_in_its_turn(video, layout_config):
  spec = _spec(layout_config, video)
  b, t = 2, 5
  streams = {}
  for s in Stream:
    n = spec.count(s)
    if n == 0:
      continue
    # Encode (stream, turn, slot) into the value so any misplacement shows.
    val = (s * 10000 + np.arange(t)[:, None] * 100 + np.arange(n)[None, :])
    streams[s] = jnp.asarray(np.broadcast_to(val, (b, t, n))[..., None] *
                             np.ones(3))
  seq = lo.interleave(spec, streams)
  assert seq.shape == (b, t * spec.slots_per_turn, 3)
  back = lo.split(spec, seq)
  assert set(back) == set(streams)
  for s in streams:
    np.testing.assert_array_equal(back[s], streams[s])
  # Exact time alignment: slot i of the flat sequence belongs to turn i // spt
  # and carries the stream the metadata says.
  meta = spec.slot_meta(t)
  flat = np.asarray(seq[0, :, 0]).astype(int)
  np.testing.assert_array_equal(flat // 10000, meta["stream_ids"])
  np.testing.assert_array_equal((flat % 10000) // 100, meta["turn_index"])
  np.testing.assert_allclose(meta["seconds"], meta["turn_index"] * 0.2, rtol=1e-6)
  np.testing.assert_array_equal(meta["positions"], np.arange(t * spec.slots_per_turn))


def test_slot_meta_continues_across_calls(layout_config):
  spec = _spec(layout_config)
  whole = spec.slot_meta(6)
  part = spec.slot_meta(2, first_turn=4)
  n = 2 * spec.slots_per_turn
  for key in ("stream_ids", "turn_index", "seconds", "positions"):
    np.testing.assert_array_equal(whole[key][-n:], part[key])


def test_predictor_is_previous_slot_and_input_block_precedes_output(layout_config):
  spec = _spec(layout_config)
  t = 3
  meta = spec.slot_meta(t)
  text_pred = spec.predictor_index(t, Stream.MODEL_TEXT)
  audio_pred = spec.predictor_index(t, Stream.MODEL_AUDIO)
  # First model_text slot is predicted from the last input slot (background text).
  assert (meta["stream_ids"][text_pred[:, 0]] == Stream.BACKGROUND_TEXT).all()
  assert (meta["stream_ids"][text_pred[:, 1]] == Stream.MODEL_TEXT).all()
  assert (meta["stream_ids"][audio_pred[:, 0]] == Stream.MODEL_TEXT).all()
  assert (meta["stream_ids"][audio_pred[:, 1:]] == Stream.MODEL_AUDIO).all()
  assert (meta["turn_index"][text_pred] == np.arange(t)[:, None]).all()


def test_audio_frame_stacking_round_trip(layout_config):
  spec = _spec(layout_config)
  frames = jnp.arange(2 * 16 * 80).reshape(2, 16, 80)
  slots = lo.stack_audio_frames(spec, frames)
  assert slots.shape == (2, 4, 320)
  np.testing.assert_array_equal(lo.unstack_audio_frames(spec, slots), frames)


@pytest.mark.parametrize("field,value,needle", [
    ("video.height", 50, "layout.video.height"),
    ("video.width", 70, "layout.video.width"),
    ("turn_ms", 210.0, "layout.turn_ms"),
    ("frames_per_position", 3, "layout.frames_per_position"),
    ("mel_hop_ms", 12.3, "layout."),
])
def test_bad_layout_names_the_field(field, value, needle, layout_config):
  c = layout_config(video=True)
  target, key = (c.video, field.split(".")[1]) if "." in field else (c, field)
  target[key] = value
  with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
    LayoutSpec.from_config(c)
