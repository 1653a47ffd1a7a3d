"""The session's audio out is bounded (issue 15, item 2): a peak limiter after
the vocoder, which leaves audio below its ceiling untouched."""

import numpy as np
import pytest

from interaction.audio_stream import OutputLimiter, StreamingVocoder
from interaction.layout import LayoutSpec
from tests.interaction.nontrivial import perturbed, tiny_session_config

SR = 16000


def _speechlike(seconds, amp, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * SR)) / SR
  env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
  return (amp * env * np.sin(2 * np.pi * 180 * t + rng.uniform(0, 6))).astype(np.float32)


def test_audio_below_the_ceiling_passes_bit_for_bit():
  lim = OutputLimiter(SR)
  x = _speechlike(1.0, 0.6)
  out = np.concatenate([lim(x[i:i + 3200]) for i in range(0, len(x), 3200)])
  np.testing.assert_array_equal(out, x)


def test_a_loud_burst_is_held_at_the_ceiling_and_the_gain_recovers():
  lim = OutputLimiter(SR, ceiling=0.9, release_s=0.05)
  x = np.concatenate([_speechlike(0.4, 0.5), _speechlike(0.2, 30.0, 1), _speechlike(0.6, 0.5, 2)])
  chunks = [lim(x[i:i + 3200]) for i in range(0, len(x), 3200)]
  out = np.concatenate(chunks)
  assert np.abs(out).max() <= 0.9 + 1e-6
  np.testing.assert_array_equal(out[:int(0.4 * SR)], x[:int(0.4 * SR)])  # before: untouched
  # 50 ms after the burst the gain is back to 1: the rest passes unchanged.
  back = int((0.6 + 0.05) * SR) + 1
  np.testing.assert_array_equal(out[back:], x[back:])
  # Chunking does not matter: one call over everything gives the same samples.
  whole = OutputLimiter(SR, ceiling=0.9, release_s=0.05)(x)
  np.testing.assert_allclose(out, whole, rtol=0, atol=1e-7)


def test_companion_griffin_lim_alone_goes_past_full_scale(default_spec):
  """Why the limiter is there: the vocoder of a frame at the range's top in
  every band is far louder than full scale, so the session test below could
  fail without it."""
  voc = StreamingVocoder(default_spec)
  y = np.concatenate([voc(np.full((16, 80), default_spec.dmel_max, np.float32))
                      for _ in range(3)])
  assert np.abs(y).max() > 1.0


@pytest.mark.parametrize("inputs", ["silence", "loud noise"])
def test_a_session_never_goes_full_scale_whatever_its_parameters(inputs):
  """Perturbed (untrained) parameters sample any mel in range; the audio out
  still stays within the ceiling, for silence in and for loud noise in."""
  from experiments.trainer import create_train_state
  from interaction.session import Sessions
  c = tiny_session_config(mode="default")
  params = perturbed(create_train_state(c)["params"], scale=0.5)
  sess = Sessions(c, params, batch_size=1)
  raw = Sessions(c, params, batch_size=1)
  raw.limiters = [lambda wave: wave]      # the companion: the same session unlimited
  rng = np.random.default_rng(0)
  peaks, raw_peaks = [], []
  for _ in range(15):
    chunk = (np.zeros((1, 3200), np.float32) if inputs == "silence"
             else np.clip(rng.standard_normal((1, 3200)), -1, 1).astype(np.float32))
    peaks.append(float(np.abs(sess.step(chunk).audio).max()))
    raw_peaks.append(float(np.abs(raw.step(chunk).audio).max()))
  assert max(peaks) <= c.session.output_ceiling + 1e-6, peaks
  # Without the limiter these parameters do go past full scale: the bound
  # above is the limiter's doing, not a quiet model's.
  assert max(raw_peaks) > 1.0, raw_peaks


def test_bad_limiter_settings_are_named():
  with pytest.raises(ValueError, match="output_ceiling"):
    OutputLimiter(SR, ceiling=1.5)
  with pytest.raises(ValueError, match="output_release_s"):
    OutputLimiter(SR, release_s=0.0)
