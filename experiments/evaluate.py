r"""One eval run: replay a suite into several agents, score it, write one report.

  python -m experiments.evaluate --config=experiments/configs/eval_heldout.py \
      --config.suite=DIR --config.out=DIR [--config.run_agents=oracle,vad_cascade,model \
      --config.agents.model.checkpoint=WORKDIR] [--config.benchmarks=timespeak,charades]

The eval config names the suite, the agents (one section of settings each),
the benchmarks and the replay and scoring settings; its docstring says what
to expect. Prints one line per agent and benchmark, then one JSON object
(agent -> benchmark -> metrics) as the last line. Replays resume: rerunning
skips finished samples.
"""

import json

from absl import flags
from ml_collections import config_flags

from eval import report as report_lib
from experiments import cli
from experiments.evaluation import evaluate

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Eval config file (experiments/configs/eval_*.py).", lock_config=True)
flags.mark_flags_as_required(["config"])


def _headline(metrics: dict) -> str:
  keys = [k for k in metrics if isinstance(metrics[k], (int, float))][:4]
  return ", ".join(f"{k} {metrics[k]:.3g}" for k in keys)


def main(argv):
  del argv
  config = _CONFIG.value
  results = evaluate(config)
  for agent, by_bench in results.items():
    for b, r in by_bench.items():
      print(f"{agent:12s} {b:18s} {_headline(r['metrics'])}"
            + (f"  ({len(r['errors'])} errors)" if r["errors"] else ""))
  if config.get("rank_by"):
    for i, (agent, v) in enumerate(report_lib.ranking(results, config.rank_by), 1):
      print(f"rank {i}: {agent} {config.rank_by}={'n/a' if v is None else f'{v:.3f}'}")
  print(f"report: {config.out}/report.md")
  print(json.dumps({a: {b: r["metrics"] for b, r in rs.items()}
                    for a, rs in results.items()}))


if __name__ == "__main__":
  cli.run(main)
