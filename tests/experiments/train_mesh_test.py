"""`python -m experiments.main` on a device mesh (config.mesh.shape).

tiny, global batch 8, 4 steps:
- on 8 simulated CPU devices with mesh.shape=data=2,fsdp=4 (a subprocess;
  the suite's own processes have 4 devices) the losses and grad norms equal
  the single-device run's (trainer.train in this process) within the
  tolerance of mesh_sharding_test.py;
- its step-2 checkpoint (the step-4 one removed) resumes on another mesh,
  expert=4 x data=2 (the sharded restore, and training through the MoE
  layers' expert-parallel path), and steps 3-4 equal the uninterrupted run's;
- a mesh that does not fit fails before any work with an error naming
  mesh.shape (devices, model dims, batch), on the command line as one
  `error:` line, exit status 2.
"""

import shutil
import sys

import pytest

from experiments import plots, trainer
from tests.workers import run_worker

STEPS = 4
OVERRIDES = ("--config.data.batch_size=8", f"--config.train.steps={STEPS}",
             "--config.train.log_every=1", "--config.train.ckpt_every=2",
             "--config.train.plot_curves=False")


def _command(workdir, mesh):
  return [sys.executable, "-m", "experiments.main", "--config=experiments/configs/tiny.py",
          f"--workdir={workdir}", f"--config.mesh.shape={mesh}", *OVERRIDES]


def _main(workdir, mesh):
  return run_worker(*_command(workdir, mesh)[2:], devices=8)


def _by_step(workdir):
  return {row["step"]: row for row in plots.read_metrics(str(workdir))}


def assert_same_losses(got, ref, steps):
  for step in steps:
    assert got[step]["loss"] == pytest.approx(ref[step]["loss"], rel=2e-5), step
    assert got[step]["grad_norm"] == pytest.approx(ref[step]["grad_norm"], rel=1e-4), step


@pytest.fixture(scope="module")
def single(tmp_path_factory):
  """The same run on one device, in this process."""
  from experiments.configs import tiny
  config = tiny.get_config()
  config.data.batch_size = 8
  config.train.steps = STEPS
  config.train.log_every = 1
  config.train.ckpt_every = 2
  config.train.plot_curves = False
  workdir = tmp_path_factory.mktemp("single")
  trainer.train(config, str(workdir), progress=False)
  return _by_step(workdir)


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("mesh") / "w"
  r = _main(workdir, "data=2,fsdp=4")
  return workdir, r


def test_mesh_run_matches_one_device(single, mesh_run):
  workdir, r = mesh_run
  assert "on mesh data=2,fsdp=4 (8 devices, 1 processes)" in r.stderr, r.stderr[-2000:]
  got = _by_step(workdir)
  assert sorted(got) == sorted(single) == list(range(1, STEPS + 1))
  assert_same_losses(got, single, range(1, STEPS + 1))


def test_mesh_checkpoint_resumes_on_another_mesh(single, mesh_run, tmp_path):
  workdir, _ = mesh_run
  resumed = tmp_path / "w"
  shutil.copytree(workdir, resumed)
  shutil.rmtree(resumed / "checkpoints" / str(STEPS))     # as if killed after step 3
  r = _main(resumed, "expert=4,data=2")
  assert "resumed from step 2" in r.stderr and "on mesh data=2,expert=4" in r.stderr, (
      r.stderr[-2000:])
  got = _by_step(resumed)
  assert sorted(got) == list(range(1, STEPS + 1))
  assert_same_losses(got, _by_step(workdir), range(3, STEPS + 1))
  assert_same_losses(got, single, range(3, STEPS + 1))


@pytest.mark.parametrize("shape, words", [
    ("data=3", ["mesh.shape='data=3'", "3 devices in the mesh", "4 devices"]),
    ("tensor=4", ["mesh.shape='tensor=4'", "model.num_kv_heads=2 is not divisible by tensor=4"]),
    ("data=4", ["mesh.shape='data=4'", "data.batch_size=2 is not divisible"]),
    ("data=2,pipeline=2", ["mesh.shape='data=2,pipeline=2'", "unknown axis 'pipeline'"]),
])
def test_bad_mesh_fails_before_any_work(tmp_path, shape, words):
  import jax
  from experiments.configs import tiny
  if jax.device_count() != 4:
    pytest.skip("the messages below assume the suite's 4 CPU devices (tests/conftest.py)")
  config = tiny.get_config()
  config.mesh.shape = shape
  with pytest.raises(ValueError) as e:
    trainer.train(config, str(tmp_path / "w"), progress=False)
  for w in words:
    assert w in str(e.value), str(e.value)
  assert not (tmp_path / "w").exists()


def test_bad_mesh_on_the_command_line_is_one_error_line(run_module, tmp_path):
  r = run_module("experiments.main", "--config=experiments/configs/tiny.py",
                 f"--workdir={tmp_path / 'w'}", "--config.mesh.shape=fsdp=3", timeout=120)
  assert r.returncode == 2, r.stderr[-2000:]
  assert "error: mesh.shape='fsdp=3'" in r.stderr, r.stderr[-2000:]
  assert not (tmp_path / "w").exists()
