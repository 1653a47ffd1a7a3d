"""The tiny config trains on CPU, and a killed-and-resumed run matches an
uninterrupted one bit for bit (determinism contract item 4; the command-line
version, killed with SIGKILL or SIGTERM, is in resume_test.py)."""

import json
import os

import jax
import numpy as np
import pytest

from experiments import trainer
from experiments.configs import tiny


def _read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full"))
  state = trainer.train_and_evaluate(tiny.get_config(), workdir, progress=False)
  return workdir, jax.device_get(state)


def test_tiny_trains_30_steps_with_falling_loss(uninterrupted):
  workdir, state = uninterrupted
  assert int(state["step"]) == 30
  rows = _read_metrics(workdir)
  assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]
  assert rows[-1]["loss"] < 0.7 * rows[0]["loss"], rows
  assert rows[-1]["text_loss"] < rows[0]["text_loss"]
  assert rows[-1]["flow_loss"] < rows[0]["flow_loss"]
  assert all(np.isfinite(r["loss"]) for r in rows)
  assert os.path.exists(os.path.join(workdir, "config.json"))
  assert os.listdir(os.path.join(workdir, "tb"))


def test_resume_matches_uninterrupted_run_bit_for_bit(uninterrupted, tmp_path):
  _, full = uninterrupted
  workdir = str(tmp_path)
  config = tiny.get_config()
  # "Kill" the run after step 15 (a checkpoint is written there), then rerun
  # the same command: it must resume at step 15, not restart.
  partial = trainer.train_and_evaluate(config, workdir, stop_at_step=15,
                                       progress=False)
  assert int(partial["step"]) == 15
  resumed = jax.device_get(trainer.train_and_evaluate(config, workdir,
                                                      progress=False))
  assert int(resumed["step"]) == 30
  steps = [r["step"] for r in _read_metrics(workdir)]
  assert steps == [5, 10, 15, 20, 25, 30], steps  # nothing repeated or skipped
  for key in ("params", "opt_state"):
    leaves_a = jax.tree_util.tree_leaves(full[key])
    leaves_b = jax.tree_util.tree_leaves(resumed[key])
    assert len(leaves_a) == len(leaves_b)
    for a, b in zip(leaves_a, leaves_b):
      np.testing.assert_array_equal(a, b)


class _ForgetfulIterator:
  """The real training iterator, except that restoring its position does nothing."""

  def __init__(self, inner):
    self.inner = inner

  def __iter__(self):
    return self

  def __next__(self):
    return next(self.inner)

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    del state  # the bug this companion stands for: the data position is lost


def test_resume_check_can_fail(uninterrupted, tmp_path):
  """Companion: the same kill-at-15-and-resume, but the resumed run's data
  iterator restarts from its first batch instead of batch 16. The bit-exact
  comparison above sees that: resuming without the data position ends with
  different parameters than the uninterrupted run."""
  from data_pipeline.pipeline import make_train_iter
  _, full = uninterrupted
  workdir = str(tmp_path)
  config = tiny.get_config()
  trainer.train_and_evaluate(config, workdir, stop_at_step=15, progress=False)
  resumed = jax.device_get(trainer.train_and_evaluate(
      config, workdir, data_iter=_ForgetfulIterator(make_train_iter(config)),
      progress=False))
  assert int(resumed["step"]) == 30
  a = jax.tree_util.tree_leaves(full["params"])
  b = jax.tree_util.tree_leaves(resumed["params"])
  assert any(not np.array_equal(x, y) for x, y in zip(a, b))


def test_resume_refuses_a_different_structure(uninterrupted):
  workdir, _ = uninterrupted
  config = tiny.get_config()
  config.model.d_model = 48
  before = open(os.path.join(workdir, "config.json")).read()
  with pytest.raises(ValueError, match="model.d_model"):
    trainer.train_and_evaluate(config, workdir, progress=False)
  # The refused config loses nothing: the workdir still describes its run.
  assert open(os.path.join(workdir, "config.json")).read() == before


def test_restore_names_renamed_or_reshaped_arrays():
  """A code change that renames or reshapes a parameter under the same config
  is refused naming the arrays, not with an opaque orbax error. (Resuming a
  matching checkpoint goes through the same check in the resume tests.)"""
  from experiments import checkpointing
  saved = {"params": {"unembed": {"w": np.zeros((3, 4))},
                      "final_norm": {"scale": np.zeros((8,))}},
           "step": np.zeros(())}
  model = {"params": {"unembed": {"weight": np.zeros((4, 3))},
                      "final_norm": {"scale": np.zeros((7,))}},
           "step": np.zeros(())}
  with pytest.raises(ValueError, match="3 differences") as err:
    checkpointing.check_state_tree(saved, model)
  msg = str(err.value)
  assert "params.unembed.w: in the checkpoint (3, 4), not in the model" in msg
  assert "params.unembed.weight: in the model (4, 3), not in the checkpoint" in msg
  assert "params.final_norm.scale: checkpoint shape (8,), model shape (7,)" in msg
  checkpointing.check_state_tree(saved, saved)


def test_load_trained_fills_fields_added_after_the_run(uninterrupted, tmp_path):
  """A workdir saved before a config field existed still loads: the field takes
  its default, every saved value is kept and the parameters are the saved ones."""
  import shutil
  workdir, full = uninterrupted
  old = str(tmp_path / "old")
  shutil.copytree(workdir, old)
  with open(os.path.join(old, "config.json")) as f:
    saved = json.load(f)
  del saved["model"]["moe"]["gemv_kernel"], saved["model"]["kernels"]["interpret"]
  saved["train"]["lr"] = 0.123  # a saved value that differs from the default
  with open(os.path.join(old, "config.json"), "w") as f:
    json.dump(saved, f)
  config, params = trainer.load_trained(old)
  assert config.model.moe.gemv_kernel == tiny.get_config().model.moe.gemv_kernel
  assert config.model.kernels.interpret is False
  assert config.train.lr == 0.123 and config.name == "tiny"
  for a, b in zip(jax.tree_util.tree_leaves(full["params"]),
                  jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(a, b)
