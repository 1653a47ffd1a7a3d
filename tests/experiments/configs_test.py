"""Every config loads and builds; tml_small has TML-Interaction-Small's size;
bad configs stop before work starts with a message naming the field."""

import importlib
import os
import pkgutil
import subprocess
import sys

import pytest
from flax import nnx

import experiments.configs as configs_pkg
from experiments.param_count import parameter_counts
from interaction.params import abstract_model, build_model, count_params

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALL_CONFIGS = sorted(m.name for m in pkgutil.iter_modules(configs_pkg.__path__)
                     if m.name != "common")
# Model configs; eval configs (eval_*.py) are tested in evaluate_test.py, the
# vocoder's in tests/interaction/vocoder_test.py.
CONFIG_NAMES = [n for n in ALL_CONFIGS if not n.startswith("eval") and n != "vocoder"]


def _load(name):
  return importlib.import_module(f"experiments.configs.{name}").get_config()


def test_config_set():
  assert {"tiny", "demo", "tml_small"} <= set(CONFIG_NAMES)


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_config_says_how_to_run_it(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  assert module.get_config().name == name or name.startswith("eval")
  assert "python -m" in module.__doc__


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_loads_and_builds(name):
  config = _load(name)
  assert config.name == name
  module = importlib.import_module(f"experiments.configs.{name}")
  assert "python -m" in module.__doc__  # the docstring says how to run it
  model = abstract_model(config)  # shapes for every config, allocating nothing
  n = count_params(nnx.state(model, nnx.Param))
  assert n > 0
  if name in ("tiny", "demo"):  # small enough to build for real
    real = build_model(config, 0)
    assert count_params(nnx.state(real, nnx.Param)) == n


def test_tml_small_parameter_counts():
  # Counted from abstract shapes: 279B f32 parameters would not fit in memory,
  # so this passing also shows nothing was allocated.
  counts = parameter_counts(_load("tml_small"))
  assert abs(counts["total"] / 276e9 - 1) <= 0.02, counts
  assert abs(counts["active"] / 12e9 - 1) <= 0.05, counts


def _run(*args):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_unknown_config_key_is_rejected(tmp_path):
  r = _run("-m", "experiments.main", "--config=experiments/configs/tiny.py",
           f"--workdir={tmp_path}/w", "--config.train.lrr=0.1")
  assert r.returncode == 2
  assert "--config.train.lrr" in r.stderr and "unknown config key" in r.stderr
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("override,field", [
    ("--config.layout.video.height=50", "layout.video.height"),
    ("--config.layout.mel_hop_ms=15.0", "layout.turn_ms"),
])
def test_shapes_that_do_not_divide_stop_at_start(tmp_path, override, field):
  r = _run("-m", "experiments.main", "--config=experiments/configs/tiny.py",
           f"--workdir={tmp_path}/w", override)
  assert r.returncode != 0
  assert field in r.stderr
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_base_config_matches_the_typed_defaults_and_design_layout(layout_config):
  """The library's typed defaults (which the moe/interaction tests build on)
  and the tests' documented default layout are the base config's."""
  from experiments.configs import common
  from interaction.config import ModelConfig
  from interaction.layout import LayoutSpec
  assert ModelConfig.from_config(common.model_config()) == ModelConfig()
  assert (LayoutSpec.from_config(common.layout_config())
          == LayoutSpec.from_config(layout_config()))
