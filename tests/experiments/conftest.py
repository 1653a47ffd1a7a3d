"""Running an entry point as a user does: `python -m experiments.NAME --flags`."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def run_module():
  """run_module('experiments.evaluate', '--config=...') -> CompletedProcess (text)."""
  def run(module, *args, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
  return run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A training workdir (config.json + one checkpoint) of tiny, without training."""
  from experiments import checkpointing, trainer
  from experiments.configs import tiny
  w = tmp_path_factory.mktemp("work")
  config = tiny.get_config()
  (w / "config.json").write_text(config.to_json_best_effort(indent=2))
  ckpt = checkpointing.Checkpointer(str(w))
  ckpt.save(0, trainer.create_train_state(config), {}, checkpointing.structure_meta(config))
  ckpt.wait()
  ckpt.close()
  return str(w)
