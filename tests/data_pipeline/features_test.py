"""dMel features, audio loading rules, video patches and the vocoder."""

import numpy as np
import pytest
import soundfile

from interaction import audio_io

from interaction import mel as mel_lib

from data_pipeline import video as video_lib
from interaction import vocoder
from experiments.configs.common import layout_config
from interaction.layout import LayoutSpec

SPEC = LayoutSpec.from_config(layout_config())


def _tone(seconds, sr, f=440.0):
  t = np.arange(int(seconds * sr)) / sr
  return (0.3 * np.sin(2 * np.pi * f * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_log_mel_matches_the_dmel_recipe():
  # apple/dmel LogMelFbank: |STFT| (hann, centred) -> librosa mel -> floor 1e-10 -> log10.
  import librosa
  wave = _tone(1.0, 16000)
  ours = mel_lib.log_mel(wave, SPEC)
  mel = librosa.feature.melspectrogram(
      y=wave, sr=16000, n_fft=1024, hop_length=200, win_length=800, window="hann",
      center=True, pad_mode="constant", power=1.0, n_mels=80, fmin=80, fmax=7600)
  ref = np.log10(np.maximum(mel, 1e-10)).T[:len(ours)]
  assert ours.shape == (16000 // 200, 80)
  np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_dmel_bins_follow_the_config():
  c = layout_config()
  c.dmel_bins, c.dmel_min, c.dmel_max = 8, -5.0, 1.0
  spec = LayoutSpec.from_config(c)
  centres = mel_lib.dmel_centers(spec)
  assert len(centres) == 8 and centres[0] == -5.0 and centres[-1] == 1.0
  np.testing.assert_array_equal(mel_lib.dmel_quantize(centres, spec), np.arange(8))
  assert mel_lib.dmel_quantize(np.array([-100.0, 100.0]), spec).tolist() == [0, 7]


@pytest.mark.parametrize("bins", [16, 32])
def test_dmel_round_trip_error_is_half_a_step(bins):
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


def test_dequantize_rejects_out_of_range_bins():
  with pytest.raises(ValueError, match="bins"):
    mel_lib.dmel_dequantize(np.array([16]), SPEC)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_every_sample_rate_gives_16_frames_per_turn(rate, tmp_path):
  seconds = 1.0  # five micro-turns
  path = tmp_path / f"a{rate}.wav"
  soundfile.write(path, _tone(seconds, rate, 300.0), rate, subtype="PCM_16")
  wave = audio_io.load_audio(path)
  assert len(wave) == 16000
  mel = mel_lib.log_mel(wave, SPEC)
  assert mel.shape == (5 * SPEC.frames_per_turn, 80)
  assert SPEC.frames_per_turn == 16


def test_resampled_content_agrees_with_16k():
  ref = mel_lib.log_mel(_tone(1.0, 16000, 300.0), SPEC)
  for rate in (22050, 48000):
    got = mel_lib.log_mel(audio_io.load_audio(_tone(1.0, rate, 300.0), rate), SPEC)
    assert np.abs(mel_lib.dmel_quantize(got, SPEC) - mel_lib.dmel_quantize(ref, SPEC)).mean() < 0.1


def test_bad_audio_raises_audio_error(tmp_path):
  (tmp_path / "corrupt.wav").write_bytes(b"RIFF1234WAVEjunkjunk")
  soundfile.write(tmp_path / "stereo.wav", np.zeros((100, 2)), 16000)
  soundfile.write(tmp_path / "empty.wav", np.zeros(0), 16000)
  soundfile.write(tmp_path / "full.wav", np.zeros(4000), 16000, subtype="PCM_16")
  data = (tmp_path / "full.wav").read_bytes()
  (tmp_path / "truncated.wav").write_bytes(data[:len(data) // 2])
  for name, match in [("corrupt", "unreadable"), ("stereo", "2 channels"),
                      ("empty", "empty"), ("truncated", "truncated")]:
    with pytest.raises(audio_io.AudioError, match=match):
      audio_io.load_audio(tmp_path / f"{name}.wav")
  with pytest.raises(audio_io.AudioError, match="NaN"):
    audio_io.load_audio(np.array([0.0, np.nan]), 16000)
  with pytest.raises(ValueError, match="sample_rate"):
    audio_io.load_audio(np.zeros(10))
  assert len(audio_io.load_audio(tmp_path / "full.wav")) == 4000


def test_int16_arrays_are_scaled():
  wave = audio_io.load_audio(np.array([0, 32767, -32767], np.int16), 16000)
  np.testing.assert_allclose(wave, [0, 1, -1], atol=1e-6)


def test_video_to_patches_round_trip():
  frames = np.random.default_rng(0).integers(0, 255, (2, 3, 80, 120, 3), dtype=np.uint8)
  patches = video_lib.video_to_patches(frames, SPEC)
  assert patches.shape == (2, 3, 6, 40, 40, 3)
  np.testing.assert_array_equal(patches[1, 2, 4], frames[1, 2, 40:80, 40:80])
  with pytest.raises(video_lib.VideoError, match="multiple"):
    video_lib.video_to_patches(frames[..., :50, :, :], SPEC)


def test_unreadable_video_raises_video_error(tmp_path):
  (tmp_path / "v.npz").write_bytes(b"nope")
  with pytest.raises(video_lib.VideoError):
    video_lib.load_video(tmp_path / "v.npz")
  np.savez(tmp_path / "w.npz", frames=np.zeros((2, 4, 4), np.uint8), fps=5.0)
  with pytest.raises(video_lib.VideoError, match="uint8"):
    video_lib.load_video(tmp_path / "w.npz")


def test_griffin_lim_reconstructs_the_mel():
  from data_pipeline import synthetic
  wave = synthetic.babble(0.8, np.random.default_rng(0), 16000)
  mel = mel_lib.log_mel(wave, SPEC)
  voc = vocoder.GriffinLimVocoder(SPEC, n_iter=32)
  out = voc.mel_to_wave(mel)
  assert out.shape == (len(mel) * SPEC.hop_samples,) and out.dtype == np.float32
  again = mel_lib.log_mel(out, SPEC)
  # Compare where there is energy (log10 > -3): the mel survives the round trip.
  loud = mel > -3
  err = np.abs(again[loud] - mel[loud]).mean()
  assert err < 0.2  # measured 0.13 on this buzz, 0.05 on espeak speech
  # The check has teeth: the mel of other audio is far off.
  other = mel_lib.log_mel(synthetic.babble(0.8, np.random.default_rng(1), 16000), SPEC)
  assert np.abs(other[loud] - mel[loud]).mean() > 3 * err
  np.testing.assert_array_equal(out, voc.mel_to_wave(mel))  # seeded: deterministic
