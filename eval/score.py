"""Score predictions against a benchmark's references; prints one JSON object.

  python -m eval.score --benchmark=charades --references=SUITE/charades \
      --predictions=runs/oracle/charades
  python -m eval.score --benchmark=proactive_videoqa --references=PVQA \
      --predictions=pred.jsonl --omega=0.5

The keys are the metric names as the benchmarks write them (`TOR`,
`latency_s`, `JSD`, `PAUC@0.5`, `OBO`, `MAE`, `mIoU`, `R1@0.5`, `accuracy`;
FD-bench metrics are prefixed by their task, e.g. `turn_taking/TOR`), plus
`judge`, `n_errors` and `errors` (one entry per sample that could not be
scored: never a silent zero).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from eval import loaders, predictions as pred_lib
from eval.judges import make_judge
from eval.scoring import SCORERS
from eval.scoring.pauc import OMEGAS


def score_benchmark(benchmark, references, predictions, *, judge=None, omega=None,
                    vad="webrtc", aligner=None, strict=False, loaded=None):
  """Returns a ScoreResult; raises ValueError only for unusable roots/arguments."""
  if benchmark not in SCORERS:
    raise ValueError(f"unknown benchmark {benchmark!r}; known: {sorted(SCORERS)}")
  judge = judge or make_judge("rule")
  loaded = loaded or loaders.load(benchmark, references)
  extra_errors = []
  if os.path.isfile(predictions):
    if not predictions.endswith(".jsonl"):
      raise ValueError(f"predictions file must be a pred.jsonl, got {predictions}")
    table, row_errors = pred_lib.read_pred_jsonl(predictions)
    extra_errors += [{"key": "", "benchmark": benchmark, "error": e} for e in row_errors]

    def get_prediction(sample):
      if sample.id not in table:
        raise ValueError(f"no prediction rows for question_id {sample.id}")
      return table[sample.id]

    known = {s.id for s in loaded.samples} | {e.key.split("/")[-1] for e in loaded.errors}
    unknown = sorted(set(table) - known)
  elif os.path.isdir(predictions):
    def get_prediction(sample):
      return pred_lib.read_prediction(predictions, sample)

    known = ({s.key for s in loaded.samples} | {s.id for s in loaded.samples}
             | {e.key for e in loaded.errors})
    unknown = sorted(pred_lib.prediction_keys(predictions) - known - {"."})
  else:
    raise ValueError(f"predictions not found: {predictions}")
  kwargs = {}
  if benchmark == "proactive_videoqa":
    kwargs["omegas"] = OMEGAS + ((omega,) if omega is not None else ())
  elif benchmark in ("fdb_v1", "fdb_v1_5"):
    kwargs.update(vad=vad, aligner=aligner)
  elif benchmark == "charades":
    kwargs["strict"] = strict
  result = SCORERS[benchmark](loaded.samples, get_prediction, judge, **kwargs)
  result.errors = ([e.to_json() for e in loaded.errors] + extra_errors + result.errors
                   + [{"key": k, "benchmark": benchmark,
                       "error": "prediction for an unknown sample id"} for k in unknown])
  return result


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m eval.score", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--benchmark", required=True, choices=sorted(SCORERS))
  p.add_argument("--references", required=True)
  p.add_argument("--predictions", required=True)
  p.add_argument("--omega", type=float, default=None)
  p.add_argument("--judge", default="rule")
  p.add_argument("--vad", default="webrtc", choices=("webrtc", "words"))
  p.add_argument("--strict", action="store_true", help="Charades: IoU > m instead of >=")
  p.add_argument("--details", default=None, help="also write per-sample JSON here")
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    result = score_benchmark(args.benchmark, args.references, args.predictions,
                             judge=make_judge(args.judge), omega=args.omega, vad=args.vad,
                             strict=args.strict)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.details:
    with open(args.details, "w") as f:
      json.dump(result.to_json(), f, indent=1)
  print(json.dumps({**result.metrics, "judge": result.judge,
                    "n_errors": len(result.errors), "errors": result.errors}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
