"""Run-to-run and resume reproducibility of the real command line, on `tiny`
(determinism contract item 4): `python -m experiments.main --mode=train` as a
subprocess, killed with SIGKILL or stopped with SIGTERM at a random step and
rerun, ends with parameters bit-identical (np.array_equal on every leaf, both
loaded with trainer.load_trained) to a run never interrupted; the same command
twice logs the same metrics; and a companion shows the comparison does fail
when the resumed run continues differently."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import checkpointing, trainer
from tests.experiments.conftest import REPO

STEPS, CKPT_EVERY = 30, 5


pytestmark = pytest.mark.integration


def _command(workdir, *extra):
  # curves.png is left out (tested in main_job_test.py): it costs more than the steps.
  return [sys.executable, "-m", "experiments.main", "--config=experiments/configs/tiny.py",
          f"--workdir={workdir}", "--mode=train", f"--config.train.steps={STEPS}",
          f"--config.train.ckpt_every={CKPT_EVERY}", "--config.train.log_every=1",
          "--config.train.plot_curves=False", *extra]


_CACHE = {}


def _env(cache=True):
  """The subprocess environment. cache: share one persistent XLA compilation
  cache between this module's runs (the first run compiles, later ones load
  the same executables: about 30 s less per run on 2 cores). The run-to-run
  test compiles afresh (cache=False), so two cold compilations are compared too."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  for k in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"):
    env.pop(k, None)
  if cache:
    env.update(JAX_COMPILATION_CACHE_DIR=_CACHE["dir"],
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
  _CACHE["dir"] = str(tmp_path_factory.mktemp("xla_cache"))
  yield
  _CACHE.clear()


def _run(workdir, *extra, cache=True, timeout=240):
  r = subprocess.run(_command(workdir, *extra), cwd=REPO, env=_env(cache),
                     capture_output=True, text=True, timeout=timeout)
  assert r.returncode == 0, r.stderr[-3000:]
  return r


def _metrics(workdir):
  from experiments.plots import read_metrics  # the trainer's own reader (torn lines skipped)
  return read_metrics(workdir)

def _logged(workdir):
  """metrics.jsonl without the wall-clock column."""
  return [{k: v for k, v in row.items() if k != "steps_per_sec"} for row in _metrics(workdir)]


def _last_step(workdir):
  rows = _metrics(workdir)
  return rows[-1]["step"] if rows else 0


def _has_checkpoint(workdir):
  # orbax writes a step into a tmp folder and renames it to <step> when complete.
  d = os.path.join(workdir, "checkpoints")
  return os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))


def _interrupt(workdir, signum, at_step, *extra):
  """Starts the command, waits for the first checkpoint and step `at_step`, sends
  `signum`; returns (returncode, stdout, stderr)."""
  out, err = open(f"{workdir}.out", "w+"), open(f"{workdir}.err", "w+")
  proc = subprocess.Popen(_command(workdir, *extra), cwd=REPO, env=_env(), stdout=out,
                          stderr=err, text=True)
  try:
    deadline = time.time() + 200
    while not (_has_checkpoint(workdir) and _last_step(workdir) >= at_step):
      assert proc.poll() is None, f"the run ended before step {at_step}"
      assert time.time() < deadline, "timed out waiting for the run"
      time.sleep(0.005)
    proc.send_signal(signum)
    proc.wait(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  out.seek(0)
  err.seek(0)
  return proc.returncode, out.read(), err.read()


def _params(workdir):
  _, params = trainer.load_trained(workdir)
  return jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]


def _bit_identical(a, b):
  pa, pb = _params(a), _params(b)
  assert [p for p, _ in pa] == [p for p, _ in pb]
  return all(np.array_equal(x, y) for (_, x), (_, y) in zip(pa, pb))


def _started_at(stderr):
  """The step of the 'start: resumed from step N' line (None: not resumed)."""
  for line in stderr.splitlines():
    if "start: resumed from step " in line:
      return int(line.split("start: resumed from step ")[1].split()[0])
  return None


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("repro") / "full")
  r = _run(workdir)
  assert "start: from scratch" in r.stderr
  return workdir


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
  """A workdir whose run was SIGKILLed at a random step after its first checkpoint."""
  workdir = str(tmp_path_factory.mktemp("repro") / "killed")
  at = random.randint(CKPT_EVERY + 2, STEPS - 6)
  rc, _, err = _interrupt(workdir, signal.SIGKILL, at)
  assert rc == -signal.SIGKILL, err[-3000:]
  reached = _last_step(workdir)
  assert at <= reached < STEPS, (at, reached)
  return workdir, reached


def _copy(src, dst):
  shutil.copytree(src, dst)
  return str(dst)


def test_sigkilled_run_resumes_bit_identical(uninterrupted, killed, tmp_path):
  src, reached = killed
  workdir = _copy(src, tmp_path / "w")
  r = _run(workdir)  # the same command again
  start = _started_at(r.stderr)
  assert start is not None and start >= CKPT_EVERY and start % CKPT_EVERY == 0, r.stderr
  assert start <= reached, (start, reached)  # resumed, not restarted
  assert _bit_identical(uninterrupted, workdir), f"killed at {reached}, resumed at {start}"
  # The rows the killed run wrote past its checkpoint were dropped: no step
  # twice, and every logged number is the uninterrupted run's.
  assert [row["step"] for row in _metrics(workdir)] == list(range(1, STEPS + 1))
  assert _logged(workdir) == _logged(uninterrupted)
  # The data iterator ends where the uninterrupted run's does.
  a = checkpointing.Checkpointer(uninterrupted)
  b = checkpointing.Checkpointer(workdir)
  assert a.restore_data(STEPS) == b.restore_data(STEPS)
  a.close()
  b.close()


def test_resume_check_fails_when_the_resumed_run_differs(uninterrupted, killed, tmp_path):
  """Companion: the same kill and restart, but the restart reads a different
  data stream (data.seed=1; the checkpointed position is kept). The bit-exact
  comparison sees it. (train.seed would not do: it only seeds the initial
  parameters and the rng, and a resumed run takes both from its checkpoint.)"""
  src, _ = killed
  workdir = _copy(src, tmp_path / "w")
  r = _run(workdir, "--config.data.seed=1")
  assert _started_at(r.stderr) is not None, r.stderr
  assert not _bit_identical(uninterrupted, workdir)


def test_sigterm_checkpoints_the_step_reached_and_resumes(uninterrupted, tmp_path):
  workdir = str(tmp_path / "w")
  at = random.randint(CKPT_EVERY + 1, STEPS - 6)
  rc, out, err = _interrupt(workdir, signal.SIGTERM, at)
  assert rc == 143, err[-3000:]  # 128 + SIGTERM: stopped, not finished
  reached = _last_step(workdir)
  assert at <= reached < STEPS
  ckpt = checkpointing.Checkpointer(workdir)
  assert ckpt.latest_step() == reached  # the step it reached, not the last periodic one
  ckpt.close()
  assert f"stopped by SIGTERM at step {reached}" in out, out
  r = _run(workdir)
  assert _started_at(r.stderr) == reached, r.stderr
  assert _bit_identical(uninterrupted, workdir)
  assert [row["step"] for row in _metrics(workdir)] == list(range(1, STEPS + 1))


def test_same_command_twice_logs_the_same_metrics(uninterrupted, tmp_path):
  workdir = str(tmp_path / "w")
  _run(workdir, cache=False)  # compiled afresh, like the uninterrupted run
  a, b = _logged(uninterrupted), _logged(workdir)
  assert len(a) == STEPS and a == b
  assert _bit_identical(uninterrupted, workdir)
