r"""Train an interaction model: `python -m experiments.main --config=FILE --workdir=DIR`.

Every config field can be overridden: `--config.train.steps=10`. Configs are
locked, so an unknown key stops the run before any work starts. The workdir
is the run's identity: rerunning the same command resumes from its last
checkpoint. See WORKSPACE.md.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli, distributed, trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.maybe_initialize()
  config = _CONFIG.value
  logging.info("config:\n%s", config)
  state = trainer.train_and_evaluate(config, _WORKDIR.value)
  print(f"finished at step {int(state['step'])}; metrics in "
        f"{_WORKDIR.value}/metrics.jsonl")


if __name__ == "__main__":
  cli.run(main)
