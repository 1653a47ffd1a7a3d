"""Score predictions against a benchmark's references (`python -m experiments.score`).

Metric keys are the names the benchmarks write (`TOR`, `latency_s`, `JSD`,
`PAUC@0.5`, `OBO`, `MAE`, `mIoU`, `R1@0.5`, `accuracy`; FD-bench metrics are
prefixed by their task, e.g. `turn_taking/TOR`). `errors` has one entry per
sample that could not be scored: never a silent zero.
"""

from __future__ import annotations

import os

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

