"""Log-mel and dMel: the dMel recipe, bins that follow the config, a layout's
STFT settings reaching every caller."""

import numpy as np
import pytest

from interaction import mel as mel_lib
from interaction.layout import LayoutSpec


def _tone(seconds, sr, f=440.0):
  t = np.arange(int(seconds * sr)) / sr
  return (0.3 * np.sin(2 * np.pi * f * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_log_mel_matches_the_dmel_recipe(default_spec):
  # apple/dmel LogMelFbank: |STFT| (hann, centred) -> librosa mel -> floor 1e-10 -> log10.
  import librosa
  wave = _tone(1.0, 16000)
  ours = mel_lib.log_mel(wave, default_spec)
  mel = librosa.feature.melspectrogram(
      y=wave, sr=16000, n_fft=1024, hop_length=200, win_length=800, window="hann",
      center=True, pad_mode="constant", power=1.0, n_mels=80, fmin=80, fmax=7600)
  ref = np.log10(np.maximum(mel, 1e-10)).T[:len(ours)]
  assert ours.shape == (16000 // 200, 80)
  np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_dmel_bins_follow_the_config(layout_config):
  c = layout_config()
  c.dmel_bins, c.dmel_min, c.dmel_max = 8, -5.0, 1.0
  spec = LayoutSpec.from_config(c)
  centres = mel_lib.dmel_centers(spec)
  assert len(centres) == 8 and centres[0] == -5.0 and centres[-1] == 1.0
  np.testing.assert_array_equal(mel_lib.dmel_quantize(centres, spec), np.arange(8))
  assert mel_lib.dmel_quantize(np.array([-100.0, 100.0]), spec).tolist() == [0, 7]


@pytest.mark.parametrize("bins", [16, 32])
def test_dmel_round_trip_error_is_half_a_step(bins, layout_config):
  c = layout_config()
  c.dmel_bins = bins
  spec = LayoutSpec.from_config(c)
  x = np.random.default_rng(0).uniform(-9, 4, (1000, 80)).astype(np.float32)
  q = mel_lib.dmel_quantize(x, spec)
  assert q.dtype == np.int32 and q.min() >= 0 and q.max() == bins - 1
  back = mel_lib.dmel_dequantize(q, spec)
  step = (spec.dmel_max - spec.dmel_min) / (bins - 1)
  inside = np.clip(x, spec.dmel_min, spec.dmel_max)
  assert np.abs(back - inside).max() <= step / 2 + 1e-5
  assert np.abs(back - inside).max() > step / 2 * 0.9  # the bound is tight, not loose


def test_dequantize_rejects_out_of_range_bins(default_spec):
  with pytest.raises(ValueError, match="bins"):
    mel_lib.dmel_dequantize(np.array([16]), default_spec)


def test_a_changed_layout_reaches_the_mel_settings(layout_config):
  """`MelParams.from_spec` reads the layout's STFT fields (it used to fall back
  to the defaults silently): a changed n_fft / window / band edges changes
  the features every caller computes from the spec, and matches librosa with
  the same settings."""
  import librosa
  c = layout_config()
  c.n_fft, c.mel_win_ms, c.fmin, c.fmax = 512, 25.0, 125.0, 6000.0
  spec = LayoutSpec.from_config(c)
  p = mel_lib.MelParams.from_spec(spec)
  assert (p.n_fft, p.win_ms, p.fmin, p.fmax) == (512, 25.0, 125.0, 6000.0)
  wave = _tone(1.0, 16000)
  ours = mel_lib.log_mel(wave, spec)
  ref = librosa.feature.melspectrogram(
      y=wave, sr=16000, n_fft=512, hop_length=200, win_length=400, window="hann",
      center=True, pad_mode="constant", power=1.0, n_mels=80, fmin=125.0, fmax=6000.0)
  np.testing.assert_allclose(ours, np.log10(np.maximum(ref, 1e-10)).T[:len(ours)],
                             atol=2e-4)
  default = mel_lib.log_mel(wave, LayoutSpec.from_config(layout_config()))
  assert np.abs(ours - default).max() > 0.1  # the settings made a difference
