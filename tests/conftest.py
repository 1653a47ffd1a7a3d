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
# One compilation cache for the suite's processes (the xdist workers and the
# CLI subprocesses they start): many tests compile the same tiny programs, and
# on 2 cores compiling is most of the suite's time. A cached executable is the
# one XLA compiled for the same program, flags and backend, so it computes the
# same bits. TESTS_JAX_CACHE="" turns it off.
_CACHE = os.environ.get("TESTS_JAX_CACHE", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "jax-tests"))
if _CACHE:
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

from tests.layouts import default_layout_config as _layout_config  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


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
