"""The one wav loader: every rate resampled (soxr) to 16 frames per micro-turn,
bad files raise AudioError naming the problem, benchmark files mixed down."""

import numpy as np
import pytest
import soundfile

from interaction import audio_io
from interaction import mel as mel_lib


def _tone(seconds, sr, f=440.0):
  t = np.arange(int(seconds * sr)) / sr
  return (0.3 * np.sin(2 * np.pi * f * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_every_sample_rate_gives_16_frames_per_turn(rate, tmp_path, default_spec):
  seconds = 1.0  # five micro-turns
  path = tmp_path / f"a{rate}.wav"
  soundfile.write(path, _tone(seconds, rate, 300.0), rate, subtype="PCM_16")
  wave = audio_io.load_audio(path)
  assert len(wave) == 16000
  mel = mel_lib.log_mel(wave, default_spec)
  assert mel.shape == (5 * default_spec.frames_per_turn, 80)
  assert default_spec.frames_per_turn == 16


def test_resampled_content_agrees_with_16k(default_spec):
  ref = mel_lib.log_mel(_tone(1.0, 16000, 300.0), default_spec)
  for rate in (22050, 48000):
    got = mel_lib.log_mel(audio_io.load_audio(_tone(1.0, rate, 300.0), rate), default_spec)
    assert np.abs(mel_lib.dmel_quantize(got, default_spec) - mel_lib.dmel_quantize(ref, default_spec)).mean() < 0.1


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


def test_mix_down_averages_channels_and_missing_files_are_named(tmp_path):
  stereo = np.stack([np.full(800, 0.5), np.full(800, -0.1)], axis=1)
  soundfile.write(tmp_path / "stereo.wav", stereo, 16000, subtype="FLOAT")
  np.testing.assert_allclose(audio_io.load_audio(tmp_path / "stereo.wav", mix_down=True),
                             np.full(800, 0.2), atol=1e-6)
  with pytest.raises(audio_io.AudioError, match="2 channels"):
    audio_io.load_audio(tmp_path / "stereo.wav")
  with pytest.raises(audio_io.AudioError, match="not found"):
    audio_io.load_audio(tmp_path / "nope.wav")
  with pytest.raises(audio_io.AudioError, match="not found"):
    audio_io.wav_duration(tmp_path / "nope.wav")
  assert audio_io.wav_duration(tmp_path / "stereo.wav") == 800 / 16000


def test_one_resampler_for_files_and_arrays(tmp_path):
  """A 48 kHz file and the same samples as an array come out identical: eval
  and training audio are resampled the same way."""
  wave = _tone(0.5, 48000, 300.0)
  soundfile.write(tmp_path / "a.wav", wave, 48000, subtype="FLOAT")
  np.testing.assert_array_equal(audio_io.load_audio(tmp_path / "a.wav"),
                                audio_io.load_audio(wave, 48000))
  np.testing.assert_array_equal(audio_io.load_audio(wave, 48000),
                                audio_io.resample(wave, 48000, 16000))
