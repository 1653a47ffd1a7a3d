"""The invariant-mode bits do not depend on how many CPU threads run them.

Results must reproduce on other machines, which have other core counts:
XLA:CPU splits large dots and loops across its thread pool, sized from the
CPUs the process may use. The same outputs (tests/interaction/
thread_worker.py: the tiny model's training forward with perturbed
parameters, and large matmul / RMSNorm / attention calls on both XLA paths)
are computed in two fresh processes, one pinned to one core with XLA's
multi-threading off, one on every core, and compared bit for bit.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ONE_THREAD_FLAGS = ("--xla_cpu_multi_thread_eigen=false "
                    "intra_op_parallelism_threads=1")


def _run_worker(path, one_core):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=ONE_THREAD_FLAGS if one_core else "")
  # Each worker compiles its own executable: none may come from the suite's
  # compilation cache (tests/conftest.py), whatever its key holds.
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  cmd = [sys.executable, "-m", "tests.interaction.thread_worker", str(path)]
  subprocess.run(cmd + (["--one-core"] if one_core else []), cwd=REPO, env=env,
                 check=True, timeout=600)
  return dict(np.load(path))


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                    reason="needs two CPUs to compare one thread with two")
def test_bits_do_not_depend_on_the_number_of_cpu_threads(tmp_path):
  one = _run_worker(tmp_path / "one.npz", one_core=True)
  many = _run_worker(tmp_path / "many.npz", one_core=False)
  # The runs really differ in parallelism: one CPU (so at most one core busy)
  # against all of them.
  assert int(one["cpus"]) == 1 and int(many["cpus"]) >= 2
  assert float(one["parallelism"]) < 1.1, float(one["parallelism"])
  print(f"\none core: parallelism {float(one['parallelism']):.2f}, "
        f"{int(one['threads'])} threads; {int(many['cpus'])} cores: "
        f"parallelism {float(many['parallelism']):.2f}, "
        f"{int(many['threads'])} threads")
  keys = sorted(k for k in one if k not in ("cpus", "parallelism", "threads"))
  assert len(keys) == 8
  for k in keys:
    np.testing.assert_array_equal(one[k], many[k], err_msg=k)
