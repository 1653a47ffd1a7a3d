"""Charades-STA mIoU and R1@{0.3,0.5,0.7}.

IoU = max(0, min(e, ê) - max(s, ŝ)) / (max(e, ê) - min(s, ŝ)). R1@m follows
VTimeLLM `eval/metric.py`: IoU rounded to 2 dp, then `>= m` (2D-TAN-style code
uses a strict `>`: `strict=True`). mIoU = mean IoU x 100. The streaming
protocol: the segment is (time of the first "start", time of the first
"stop" after it); no "start" -> no prediction, IoU 0 (flagged per sample);
"start" but no "stop" -> the segment runs to the end of the video.
"""

from __future__ import annotations

from eval import text as text_lib
from eval.events import split_words
from eval.scoring.common import ScoreResult, collect

THRESHOLDS = (0.3, 0.5, 0.7)


def iou(pred, gt) -> float:
  (s, e), (gs, ge) = pred, gt
  union = max(e, ge) - min(s, gs)
  if union <= 0:
    return 1.0 if (s, e) == (gs, ge) else 0.0  # two identical points
  return max(0.0, min(e, ge) - max(s, gs)) / union


def predicted_segment(events, duration):
  start = None
  for w in split_words(events):
    tok = text_lib.tokens(w.text)
    if start is None and tok == ["start"]:
      start = w.t_start
    elif start is not None and tok == ["stop"]:
      return (start, w.t_start)
  return None if start is None else (start, duration)


def score(samples, get_prediction, judge=None, *, strict: bool = False) -> ScoreResult:
  def one(sample, pred):
    seg = predicted_segment(pred.events, sample.duration_hint or _duration(sample))
    gt = sample.reference["segment"]
    value = 0.0 if seg is None else iou(seg, gt)
    return {"pred": seg, "gt": list(gt), "IoU": value, "no_prediction": seg is None}

  rows, errors = collect(samples, get_prediction, one, "charades")
  metrics = {"n": len(rows)}
  if rows:
    metrics["mIoU"] = sum(r["IoU"] for r in rows) / len(rows) * 100
    for m in THRESHOLDS:
      hit = [(r["IoU"] > m) if strict else (round(r["IoU"], 2) >= m) for r in rows]
      metrics[f"R1@{m}"] = sum(hit) / len(rows) * 100
  else:
    metrics["mIoU"] = None
    for m in THRESHOLDS:
      metrics[f"R1@{m}"] = None
  return ScoreResult("charades", metrics, rows, errors, "none (keywords start/stop)")


def _duration(sample):
  try:
    return sample.duration
  except ValueError:
    return float("inf")  # video missing: an unterminated segment stays open-ended
