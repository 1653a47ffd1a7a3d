"""The documented default layout as a `config.layout` section, for tests that
must not depend on the experiment configs (the base config is checked against
it in tests/experiments/configs_test.py)."""

import ml_collections


def default_layout_config(video: bool = False) -> ml_collections.ConfigDict:
  """video=True: 40x40 frames of one 40-pixel patch (the tiny config's)."""
  return ml_collections.ConfigDict({
      "turn_ms": 200.0, "sample_rate": 16000, "mel_hop_ms": 12.5,
      "mel_win_ms": 50.0, "n_fft": 1024, "n_mels": 80, "fmin": 80.0,
      "fmax": 7600.0, "dmel_bins": 16, "dmel_min": -7.0, "dmel_max": 2.0,
      "frames_per_position": 4, "user_text_slots": 2,
      "background_text_slots": 2, "model_text_slots": 2,
      "video": {"enabled": video, "height": 40 if video else 160,
                "width": 40 if video else 160, "patch": 40}})
