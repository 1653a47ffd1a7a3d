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
