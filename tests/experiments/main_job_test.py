"""experiments.main_job and the run hygiene around it: train.init_from, the
start line, metrics.jsonl after a kill, curves.png, the eval phase and
`--mode` (tiny, a few steps)."""

import json
import os

import jax
import numpy as np
import pytest

from experiments import checkpointing, main_job, plots, trainer
from experiments.configs import tiny

SOURCE_STEPS = 6


def _config(**train):
  c = tiny.get_config()
  c.train.steps = SOURCE_STEPS
  c.train.log_every = 1
  c.train.ckpt_every = 3
  for k, v in train.items():
    c.train[k] = v
  return c


def _leaves(tree):
  return jax.tree_util.tree_leaves(jax.device_get(tree))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """A trained tiny workdir (6 steps) to initialise from."""
  workdir = str(tmp_path_factory.mktemp("source"))
  result = trainer.train(_config(), workdir, progress=False)
  assert result.start == "scratch" and result.step == SOURCE_STEPS
  return workdir


def test_train_writes_curves_at_checkpoints(source):
  png = os.path.join(source, "curves.png")
  assert os.path.getsize(png) > 10_000
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert not [f for f in os.listdir(source) if f.endswith(".tmp.png")]


def test_plot_curves_handles_missing_and_torn_rows(tmp_path):
  assert plots.plot_curves(str(tmp_path)) is None  # no metrics yet: nothing drawn
  rows = [{"step": 1, "loss": 5.0, "text_loss": 4.0, "flow_loss": 1.0},  # no text_acc
          {"step": 2, "loss": 4.0, "text_loss": 3.0, "flow_loss": 0.0, "text_acc": 0.1}]
  (tmp_path / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "lo')
  out = plots.plot_curves(str(tmp_path))
  assert out == str(tmp_path / "curves.png") and os.path.getsize(out) > 0


def test_truncate_metrics_drops_rows_past_the_start_step(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  with open(path, "w") as f:
    f.write("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 8)))
    f.write('{"step": 8, "lo')  # torn by a SIGKILL
  assert trainer.truncate_metrics(path, 5) == 3
  assert [json.loads(line)["step"] for line in open(path)] == [1, 2, 3, 4, 5]
  assert trainer.truncate_metrics(path, 5) == 0


def test_init_from_starts_at_step_0_with_the_source_params(source, tmp_path):
  _, src_params = trainer.load_trained(source)
  workdir = str(tmp_path / "w")
  config = _config(init_from=source)
  first = trainer.train(config, workdir, stop_at_step=0, progress=False)
  assert first.start == "init_from" and first.step == 0
  for a, b in zip(_leaves(src_params), _leaves(first.state["params"])):
    np.testing.assert_array_equal(a, b)
  # A fresh optimizer: AdamW's moments are zero, its count is 0.
  fresh = trainer.create_train_state(config)
  for a, b in zip(_leaves(fresh["opt_state"]), _leaves(first.state["opt_state"])):
    np.testing.assert_array_equal(a, b)
  # Training from there logs steps 1.. and starts lower than the source did
  # from scratch on the same first batch (its step-1 row).
  run = trainer.train(config, workdir, stop_at_step=2, progress=False)
  assert run.start == "init_from" and run.step == 2
  rows = plots.read_metrics(workdir)
  assert [r["step"] for r in rows] == [1, 2]
  assert rows[0]["loss"] < plots.read_metrics(source)[0]["loss"]
  # The workdir's own checkpoint now wins over init_from.
  again = trainer.train(config, workdir, stop_at_step=2, progress=False)
  assert again.start == "resumed" and again.start_step == 2 and again.step == 2


def test_init_from_refuses_a_path_without_checkpoint_or_other_params(tmp_path):
  config = _config(init_from=str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="train.init_from=.*no such directory"):
    trainer.train(config, str(tmp_path / "a"), progress=False)
  empty = tmp_path / "empty"
  empty.mkdir()
  config.train.init_from = str(empty)
  with pytest.raises(ValueError, match="train.init_from=.*no config.json"):
    trainer.train(config, str(tmp_path / "b"), progress=False)
  # A workdir of another model shape (d_model 48), one checkpoint at step 0.
  other = tmp_path / "other"
  other.mkdir()
  wide = tiny.get_config()
  wide.model.d_model = 48
  (other / "config.json").write_text(wide.to_json_best_effort(indent=2))
  ckpt = checkpointing.Checkpointer(str(other))
  ckpt.save(0, trainer.create_train_state(wide), {}, checkpointing.structure_meta(wide))
  ckpt.wait()
  ckpt.close()
  config.train.init_from = str(other)
  with pytest.raises(ValueError, match="do not match this config's model") as err:
    trainer.train(config, str(tmp_path / "c"), progress=False)
  assert "checkpoint shape" in str(err.value) and "(48" in str(err.value)
  assert not os.path.exists(tmp_path / "c" / "config.json")  # nothing started


def test_the_start_is_logged(source, tmp_path, caplog):
  import logging
  caplog.set_level(logging.WARNING)
  trainer.train(_config(), source, progress=False)  # finished: resumes at its last step
  assert f"start: resumed from step {SOURCE_STEPS}" in caplog.text


def test_eval_config_overrides_and_late_session(source, tmp_path):
  config = tiny.get_config()
  config.eval.overrides = "score.timing=events, replay.timeline=False,run_agents=oracle"
  c = main_job.eval_config(config, source)
  assert c.suite == os.path.join(source, "eval_suite") and c.out == os.path.join(source, "eval")
  assert c.agents.model.checkpoint == source and c.benchmarks == ""
  assert c.score.timing == "events" and c.replay.timeline is False
  assert c.run_agents == "oracle"
  config.eval.overrides = "score.nope=1"
  with pytest.raises(ValueError, match="no field 'score.nope'"):
    main_job.eval_config(config, source)
  config.eval.overrides = "replay.timeline=maybe"
  with pytest.raises(ValueError, match="replay.timeline"):
    main_job.eval_config(config, source)
  config.eval.overrides = ""
  config.eval.late_session = True
  from experiments.configs import eval_heldout
  if "late_session" in eval_heldout.get_config():
    assert main_job.eval_config(config, source).late_session is True
  else:
    with pytest.raises(ValueError, match="eval.late_session"):
      main_job.eval_config(config, source)


def test_eval_needs_a_checkpoint(tmp_path, run_module):
  r = run_module("experiments.main", "--config=experiments/configs/tiny.py",
                 f"--workdir={tmp_path}", "--mode=eval")
  assert r.returncode == 2 and "no checkpoint" in r.stderr, r.stderr
  r = run_module("experiments.main", "--config=experiments/configs/tiny.py",
                 f"--workdir={tmp_path}", "--mode=nope")
  assert r.returncode != 0 and "--mode" in r.stderr


@pytest.mark.integration
def test_train_and_eval_from_the_command_line(tmp_path, run_module):
  """--mode=train_and_eval trains, generates the suite once, evaluates the
  checkpoint with the oracle and the model, and writes the report."""
  workdir = tmp_path / "w"
  args = ["--config=experiments/configs/tiny.py", f"--workdir={workdir}",
          "--config.train.steps=4", "--config.train.warmup_steps=1",
          "--config.eval.families=timespeak", "--config.eval.agents=oracle,model",
          "--config.eval.overrides=score.timing=events,replay.timeline=False"]
  r = run_module("experiments.main", *args, "--mode=train_and_eval")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "finished at step 4" in r.stdout and "eval of step 4" in r.stdout
  out = workdir / "eval"
  for name in ("report.md", "report.json", "metrics.json"):
    assert (out / name).exists(), name
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["step"] == 4 and set(metrics["results"]) == {"oracle", "model"}
  assert metrics["results"]["oracle"]["timespeak"]["accuracy"] == 1.0
  assert "timespeak" in metrics["results"]["model"]
  spec = json.loads((workdir / "eval_suite" / "eval_suite.json").read_text())
  assert spec == {"families": ["timespeak"], "num_per_family": 1, "seed": 1,
                  "split": "heldout"}
  # Asking for another suite in the same workdir is refused, naming the fields.
  config = tiny.get_config()
  config.eval.families = "turn_taking"
  config.eval.num_per_family = 1
  with pytest.raises(ValueError, match="eval.num_per_family"):
    main_job.ensure_suite(config, str(workdir))


def test_the_training_run_removes_a_killed_save(source, tmp_path):
  """A SIGKILL during an async save leaves orbax's tmp folder: the next training
  run removes it (and never takes it for a checkpoint); readers leave it alone."""
  import shutil
  workdir = str(tmp_path / "w")
  shutil.copytree(source, workdir)
  torn = os.path.join(workdir, "checkpoints", "9.orbax-checkpoint-tmp-1234567890")
  os.makedirs(os.path.join(torn, "state"))
  assert main_job.latest_step(workdir) == SOURCE_STEPS and os.path.isdir(torn)
  result = trainer.train(_config(), workdir, progress=False)
  assert result.start == "resumed" and result.start_step == SOURCE_STEPS
  assert not os.path.exists(torn)
