"""Shared pytest set-up and fixtures.

Tests run on the CPU backend with float32 matmuls at full precision, so the
bit-exact determinism tests compare like with like on every machine.

Fixtures:
  layout_config   factory: a `config.layout` section with the documented
                  default numbers (interaction/layout.py); `video=True` gives
                  the tiny config's 40x40 frames of one patch.
  default_spec    LayoutSpec of the default layout (no video).
  tiny_config     a fresh `tiny` experiment config (the one place the lower
                  packages' model-level tests take a whole config from).
  tiny_params     the tiny model's initial parameters (seed 0, computed once).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Let CPU tests that need several devices (sharding, collectives) have them.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def _layout_config(video: bool = False) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "turn_ms": 200.0, "sample_rate": 16000, "mel_hop_ms": 12.5,
      "mel_win_ms": 50.0, "n_fft": 1024, "n_mels": 80, "fmin": 80.0,
      "fmax": 7600.0, "dmel_bins": 16, "dmel_min": -7.0, "dmel_max": 2.0,
      "frames_per_position": 4, "user_text_slots": 2,
      "background_text_slots": 2, "model_text_slots": 2,
      "video": {"enabled": video, "height": 40 if video else 160,
                "width": 40 if video else 160, "patch": 40}})


@pytest.fixture
def layout_config():
  return _layout_config


@pytest.fixture
def default_spec():
  from interaction.layout import LayoutSpec
  return LayoutSpec.from_config(_layout_config())


@pytest.fixture
def tiny_config():
  from experiments.configs import tiny
  return tiny.get_config()


@pytest.fixture(scope="session")
def tiny_params():
  from experiments.configs import tiny
  from interaction.params import init_params
  config = tiny.get_config()
  return init_params(config, config.train.seed)


@pytest.fixture
def base_config():
  """Factory of the experiment base config (every field the code reads): the
  data pipeline's input is a whole config (its `data` and `layout` sections)."""
  from experiments.configs import common
  return common.base_config
