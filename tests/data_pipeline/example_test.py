"""Episode -> example: the output stream is one turn ahead, text drains 2 bytes per turn."""

import numpy as np

from data_pipeline import example
from data_pipeline.episode import Episode
from interaction.tokenizer import TOKENIZER



def _episode():
  sr, n = 16000, 16000 * 2  # 2 s = 10 turns
  user = np.zeros(n, np.float32)
  model = np.zeros(n, np.float32)
  t = np.arange(3200) / sr
  user[3200:6400] = 0.3 * np.sin(2 * np.pi * 300 * t)     # turn 1
  model[16000:19200] = 0.3 * np.sin(2 * np.pi * 300 * t)  # absolute turn 5
  return Episode(
      id="e", family="x", sample_rate=sr, user_audio=user, model_audio=model,
      model_text=[{"t_start": 1.0, "t_end": 1.2, "text": "hello",
                   "words": [{"t_start": 1.0, "t_end": 1.2, "text": "hello"}]},
                  {"t_start": 1.5, "t_end": 1.5, "text": "<delegate>",
                   "words": [{"t_start": 1.5, "t_end": 1.5, "text": "<delegate>"}]}],
      user_text=[{"t": 0.45, "text": "abc"}],
      background_text=[{"t": 1.9, "text": "r"}])


def test_streams_are_time_aligned(default_spec):
  ex = example.episode_example(_episode(), default_spec, start_turn=0, turns=12)
  # A turn is loud when most of its frames are (STFT windows leak into edge frames).
  loud_user = (ex["user_audio"] > 3).any(axis=2).mean(axis=1) > 0.5
  loud_model = (ex["model_audio"] > 3).any(axis=2).mean(axis=1) > 0.5
  assert np.nonzero(loud_user)[0].tolist() == [1]
  # Model speech at absolute turn 5 is the output block of turn 4.
  assert np.nonzero(loud_model)[0].tolist() == [4]
  text = ex["model_text"]
  pad, epad = TOKENIZER.pad_id, TOKENIZER.special_id("<epad>")
  assert text[:4].tolist() == [[pad, pad]] * 4
  assert text[4:7].tolist() == [[ord("h"), ord("e")], [ord("l"), ord("l")], [ord("o"), epad]]
  assert text[7].tolist() == [TOKENIZER.delegate_id, pad]  # t=1.5 -> turn 7 - 1 = 6, queued
  empty = TOKENIZER.empty_id
  assert ex["user_text"][2].tolist() == [ord("a"), ord("b")]
  assert ex["user_text"][3].tolist() == [ord("c"), empty]
  assert ex["background_text"][9].tolist() == [ord("r"), empty]
  assert ex["turn_mask"].tolist() == [True] * 10 + [False] * 2


def test_crop_keeps_the_queue_history(default_spec):
  full = example.episode_example(_episode(), default_spec, start_turn=0, turns=10)
  crop = example.episode_example(_episode(), default_spec, start_turn=5, turns=5)
  for k in ("model_text", "user_text", "background_text", "user_audio", "model_audio"):
    np.testing.assert_array_equal(crop[k], full[k][5:10], err_msg=k)
