"""RepCount-A OBO and MAE (TransRAC `testing/test_looping.py`).

MAE = mean |pred - gt| / (gt + 0.1) (a normalised error); OBO = share with
|pred - gt| <= 1. gt is the CSV `count` (TransRAC's density-map gt can
differ, issue #27). A gt of 0 divides by 0.1 (kept; TransRAC then crashes on
a round() dtype, issue #53, which we do not). The streaming protocol: the
agent counts out loud; the prediction is the last number it says (digits or
number words); saying no number predicts 0 (and is flagged per sample).
"""

from __future__ import annotations

from eval import text as text_lib
from eval.events import utterances
from eval.scoring.common import ScoreResult, collect, mean_or_none


def predicted_count(events) -> int | None:
  numbers = [n for u in utterances(events) for n in text_lib.numbers_in(u.text)]
  return numbers[-1] if numbers else None


def score(samples, get_prediction, judge=None) -> ScoreResult:
  def one(sample, pred):
    gt = sample.reference["count"]
    said = predicted_count(pred.events)
    p = 0 if said is None else said
    return {"gt": gt, "pred": p, "no_number_spoken": said is None,
            "MAE": abs(p - gt) / (gt + 0.1), "OBO": int(abs(p - gt) <= 1)}

  rows, errors = collect(samples, get_prediction, one, "repcount")
  metrics = {"MAE": mean_or_none([r["MAE"] for r in rows]),
             "OBO": mean_or_none([r["OBO"] for r in rows]), "n": len(rows)}
  return ScoreResult("repcount", metrics, rows, errors, "none (numbers)")
