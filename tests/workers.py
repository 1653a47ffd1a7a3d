"""Worker subprocesses with more simulated CPU devices than the suite's 4.

  out = run_worker("tests.moe.expert_parallel_worker", devices=8)

Runs `python -m MODULE ARGS...` from the repository root on the CPU backend
with --xla_force_host_platform_device_count=`devices`, fails the test with
the worker's stderr tail when it exits non-zero, and returns the
CompletedProcess (text).
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def device_env(devices: int = 8) -> dict:
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def run_worker(module: str, *args: str, devices: int = 8, timeout: float = 300):
  out = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                       env=device_env(devices), capture_output=True, text=True,
                       timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  return out
