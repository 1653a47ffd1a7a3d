r"""Train and/or evaluate an interaction model:

  python -m experiments.main --config=FILE --workdir=DIR [--mode=train|eval|train_and_eval]

--mode (default `train`):
  train           train to `train.steps` (or `train.max_minutes`), checkpointing
                  every `train.ckpt_every` steps and writing DIR/metrics.jsonl,
                  DIR/tb/ and DIR/curves.png (loss, text_loss, flow_loss, text_acc).
  eval            the held-out evaluation of DIR's latest checkpoint (`config.eval`):
                  generates DIR/eval_suite once (split heldout), replays it into
                  `eval.agents` (oracle, vad_cascade, model) with the eval_heldout
                  config and writes DIR/eval/{report.md,report.json,metrics.json}.
  train_and_eval  train, then eval. Not the default: the evaluation generates
                  speech with espeak-ng and replays every sample into three agents,
                  which takes longer than training `tiny` or the README's demo.

The workdir is the run's identity. A run starts from (and logs which): the
workdir's latest checkpoint (rerunning the same command resumes, with the data
iterator at the exact next batch), else `--config.train.init_from=OTHER_WORKDIR`
(its latest parameters, a fresh optimizer, step 0), else scratch.

SIGTERM (SLURM preemption, scancel) checkpoints the step reached and exits
with status 143 (128 + SIGTERM; the job did not finish, so nothing chained
after it runs); rerunning the same command resumes from that step. A run
killed outright (SIGKILL) resumes from its last periodic checkpoint and still
ends with the same parameters, bit for bit, as an uninterrupted one.

`--config.mesh.shape=data=2,fsdp=4` (any interaction/sharding.py mesh string)
trains one model on a device mesh over every device of every process (joined
through experiments/distributed.py: --launcher=local or SLURM), with sharded
checkpoints and each process reading its own rows of the global batch; '' (the
default) is one device. A mesh that does not fit stops the run before any
work with an error naming mesh.shape.

Every config field can be overridden: `--config.train.steps=10`. Configs are
locked, so an unknown key stops the run before any work starts. Quiet by
default (progress bars, warnings, the summary); `-v` shows the libraries'
INFO logs. The job itself lives in experiments/main_job.py. See WORKSPACE.md.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli, distributed, main_job

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics).")
_MODE = flags.DEFINE_enum("mode", "train", list(main_job.MODES),
                          "train, eval (the workdir's latest checkpoint) or "
                          "train_and_eval.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.maybe_initialize()
  config = _CONFIG.value
  logging.info("config:\n%s", config)
  result = main_job.run(config, _WORKDIR.value, _MODE.value)
  print(main_job.report(result, config, _WORKDIR.value))
  return result.exit_code


if __name__ == "__main__":
  cli.run(main)
