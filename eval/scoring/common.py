"""What every scorer returns, and the per-sample error discipline."""

from __future__ import annotations

import dataclasses
import math
import statistics


@dataclasses.dataclass
class ScoreResult:
  benchmark: str
  metrics: dict
  per_sample: list
  errors: list
  judge: str
  notes: list = dataclasses.field(default_factory=list)
  timing: str = "events"      # the timing source scored: 'audio' | 'events'
  # timing 'audio': sample key -> seconds of speech by text and by audio.
  speech: dict = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict:
    return {"benchmark": self.benchmark, "judge": self.judge, "timing": self.timing,
            "metrics": self.metrics, "per_sample": self.per_sample, "errors": self.errors,
            "notes": self.notes, "speech": self.speech}


def mean_or_none(values):
  """Mean, or None (shown as n/a) when there is nothing to average: never a silent 0."""
  values = [v for v in values if v is not None]
  return float(statistics.fmean(values)) if values else None


def std_or_none(values):
  values = [v for v in values if v is not None]
  if not values:
    return None
  m = statistics.fmean(values)
  return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))  # np.std (ddof=0)


def collect(samples, get_prediction, score_one, benchmark):
  """Runs `score_one(sample, prediction) -> dict` per sample, catching bad input.

  Returns (rows, errors). A ValueError (missing file, malformed row, ...) in
  reading or scoring one sample becomes an error row; the others go on.
  """
  rows, errors = [], []
  for s in samples:
    try:
      pred = get_prediction(s)
      row = score_one(s, pred)
    except ValueError as e:
      errors.append({"key": s.key, "benchmark": benchmark, "error": str(e)})
      continue
    row = {"key": s.key, "task": s.task, **row}
    rows.append(row)
  return rows, errors
