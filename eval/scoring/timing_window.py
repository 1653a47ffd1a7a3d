"""TimeSpeak / CueSpeak: the right words inside their timing windows.

A target counts as answered when a model utterance whose text the judge
accepts starts inside the target's window (inclusive); each utterance
answers at most one target (targets are matched in window order, each to
the earliest acceptable unused utterance). Per-sample accuracy = answered /
targets; `accuracy` is the macro average over samples, `target_accuracy` the
micro average over all targets. Utterances are the agent's spoken events
joined across gaps <= 0.3 s, so word-by-word and phrase events score alike.
"""

from __future__ import annotations

from eval.events import utterances
from eval.scoring.common import ScoreResult, collect


def match_targets(targets, utts, judge):
  used = set()
  hits = []
  for t in sorted(targets, key=lambda x: x["window"][0]):
    w0, w1 = t["window"]
    hit = None
    for i, u in enumerate(utts):
      if i in used or not w0 <= u.t_start <= w1:
        continue
      if judge.matches(t["text"], u.text):
        hit = i
        break
    if hit is not None:
      used.add(hit)
    hits.append({"text": t["text"], "window": [w0, w1], "answered": hit is not None,
                 "at": None if hit is None else utts[hit].t_start})
  return hits


def score(samples, get_prediction, judge, *, benchmark: str = "timespeak") -> ScoreResult:
  def one(sample, pred):
    hits = match_targets(sample.reference["targets"], utterances(pred.events), judge)
    return {"targets": hits, "accuracy": sum(h["answered"] for h in hits) / len(hits)}

  rows, errors = collect(samples, get_prediction, one, benchmark)
  n_targets = sum(len(r["targets"]) for r in rows)
  metrics = {"accuracy": sum(r["accuracy"] for r in rows) / len(rows) if rows else None,
             "target_accuracy": (sum(h["answered"] for r in rows for h in r["targets"])
                                 / n_targets if n_targets else None),
             "n": len(rows)}
  return ScoreResult(benchmark, metrics, rows, errors, judge.name)
