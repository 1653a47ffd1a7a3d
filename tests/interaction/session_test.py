"""Host-side sessions: bad chunks leave the session intact, the streaming audio
path joins chunks cleanly. (A session over a file: tests/eval/model_agent_test.py.)"""

import functools

import numpy as np
import pytest

from experiments.configs import tiny
from experiments.trainer import create_train_state
from interaction.audio_stream import StreamingMelFrontend, StreamingVocoder
from interaction.layout import LayoutSpec
from interaction.session import Sessions


@functools.lru_cache(maxsize=None)
def _params():
  return create_train_state(tiny.get_config())["params"]


def _chunks(n, seed=0):
  rng = np.random.default_rng(seed)
  return (0.1 * rng.standard_normal((n, 3200))).astype(np.float32)


@pytest.fixture(scope="module")
def sessions():
  return Sessions(tiny.get_config(), _params(), batch_size=1, vocoder=False)


@pytest.mark.parametrize("bad,kwargs,needle", [
    (np.zeros(3199, np.float32), {}, "shape"),
    (np.zeros((2, 3200), np.float32), {}, "shape"),
    (np.zeros(3200, np.int16), {}, "dtype"),
    (np.full(3200, np.nan, np.float32), {}, "NaN"),
    (np.zeros(3200, np.float32), {"sample_rate": 48000}, "sample_rate"),
    (np.zeros(3200, np.float32), {"video": np.zeros((40, 40), np.uint8)}, "video"),
])
def test_bad_chunk_raises_and_leaves_the_session_intact(sessions, bad, kwargs, needle):
  chunks = _chunks(3)
  sessions.reset()
  sessions.step(chunks[0])
  with pytest.raises(ValueError, match=needle):
    sessions.step(bad, **kwargs)
  after_bad = [sessions.step(c) for c in chunks[1:]]
  sessions.reset()
  clean = [sessions.step(c) for c in chunks]
  for a, b in zip(after_bad, clean[1:]):
    np.testing.assert_array_equal(a.text_tokens, b.text_tokens)
    np.testing.assert_array_equal(a.mel, b.mel)
  assert sessions.turn == 3


def test_typed_text_is_queued_two_tokens_per_turn(sessions):
  sessions.reset()
  sessions.step(_chunks(1)[0], user_text="hello")
  assert len(sessions.user_text[0]) == 3       # 5 bytes, 2 consumed this turn
  sessions.step(_chunks(1)[0])
  assert len(sessions.user_text[0]) == 1


def test_streaming_front_end_equals_training_features_bit_for_bit():
  """The session hears user audio exactly as the training pipeline featurises it."""
  from interaction import mel as mel_lib
  spec = LayoutSpec.from_config(tiny.get_config().layout)
  rng = np.random.default_rng(0)
  wave = (0.2 * rng.standard_normal(3200 * 5 + 1000)).astype(np.float32)
  padded = np.zeros(3200 * 6, np.float32)
  padded[:len(wave)] = wave
  fe = StreamingMelFrontend(spec)
  online = np.concatenate([fe(c) for c in padded.reshape(6, 3200)])
  train = mel_lib.streaming_log_mel_window(wave, 0, 6 * 3200, spec)
  np.testing.assert_array_equal(online, train)
  # A crop starting at a later turn gives the same frames as the whole episode.
  np.testing.assert_array_equal(
      mel_lib.streaming_log_mel_window(wave, 2 * 3200, 3 * 3200, spec), online[32:80])
  # Companion: the look-ahead (offline) features differ at the end of each turn,
  # so the equality above is a real check.
  offline = mel_lib.log_mel_window(wave, 0, 6 * 3200, spec)
  late = np.array([i % 16 >= 14 for i in range(96)])
  np.testing.assert_array_equal(offline[~late], online[~late])
  assert not np.array_equal(offline[late], online[late])


def test_vocoder_chunks_join_without_clicks():
  spec = LayoutSpec.from_config(tiny.get_config().layout)
  from interaction import mel as mel_lib
  t = np.arange(3200 * 6) / 16000
  tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
  mel = mel_lib.log_mel(tone, spec)
  voc = StreamingVocoder(spec, n_iter=16)
  out = np.concatenate([voc(mel[i * 16:(i + 1) * 16]) for i in range(6)])
  assert out.shape == (3200 * 6,)
  steps = np.abs(np.diff(out))
  boundaries = np.array([3200 * i - 1 for i in range(2, 6)])
  typical = np.percentile(steps[3200:], 99)
  # A click is a jump far outside the signal's own sample-to-sample range.
  assert steps[boundaries].max() <= 1.5 * typical, (steps[boundaries], typical)
  # Companions, the same tone and chunks with nothing else changed: each chunk
  # vocoded on its own and concatenated (no state carried) clicks, and so does
  # the streaming vocoder without its context frames; the check sees seams.
  from interaction.vocoder import GriffinLimVocoder
  alone = np.concatenate([GriffinLimVocoder(spec, n_iter=16, inversion="pinv").mel_to_wave(
      mel[i * 16:(i + 1) * 16]) for i in range(6)])
  assert np.abs(np.diff(alone))[boundaries].max() > 1.5 * typical
  no_context = np.concatenate([StreamingVocoder(spec, n_iter=16, context_frames=0)(
      mel[i * 16:(i + 1) * 16]) for i in range(6)])
  assert np.abs(np.diff(no_context))[boundaries].max() > 1.5 * typical
