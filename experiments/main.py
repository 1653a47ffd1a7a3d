r"""Train an interaction model: `python -m experiments.main --config=FILE --workdir=DIR`.

Every config field can be overridden: `--config.train.steps=10`. Configs are
locked, so an unknown key stops the run before any work starts. The workdir
is the run's identity: rerunning the same command resumes from its last
checkpoint. Quiet by default (progress bar, warnings, the summary); `-v` shows
the libraries' INFO logs. See WORKSPACE.md.
"""

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import cli, distributed, trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics).")
flags.mark_flags_as_required(["config", "workdir"])


def _summary(workdir: str) -> str:
  """First and last logged metrics, as a small table."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return ""
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  if not rows:
    return ""
  keys = [k for k in ("loss", "text_loss", "text_acc", "flow_loss", "grad_norm",
                      "steps_per_sec") if k in rows[-1]]
  lines = ["step    " + "".join(f"{k:>14}" for k in keys)]
  for r in (rows[0], rows[-1]) if len(rows) > 1 else rows[-1:]:
    lines.append(f"{r['step']:<8}" + "".join(f"{r[k]:>14.4f}" for k in keys))
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.maybe_initialize()
  config = _CONFIG.value
  logging.info("config:\n%s", config)
  state = trainer.train_and_evaluate(config, _WORKDIR.value)
  print(f"finished at step {int(state['step'])} of {config.train.steps}; "
        f"checkpoints in {_WORKDIR.value}/checkpoints, metrics in "
        f"{_WORKDIR.value}/metrics.jsonl")
  print(_summary(_WORKDIR.value))


if __name__ == "__main__":
  cli.run(main)
