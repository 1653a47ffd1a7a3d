"""ProactiveVideoQA PAUC@omega, ported from the published judge script.

Source: ProactiveVideoQA `pauc/judge_llm_scores_openai.py` as ported verbatim
in zyuhan1999/VLMEvalKit `vlmeval/dataset/proactive_videoqa.py`. Per gold
turn: the predictions timed inside `reply_timespan`, deduplicated; at each
new sentence the judge grades all sentences so far (1-3, stored as 0-2);
late scores below the last in-`related_timespan` score are dropped; the
step-function area from start_score 0.5, with x scaled by (1 - omega), over
L * 2. A turn with no score gets 0.25: a silent agent scores 25.0.

A prediction's time: `video_span[1]` in pred.jsonl (as published); for our
events, the first word's start of each utterance (what the model started
saying then). Deviation: a sample with no prediction at all (missing folder,
or no pred.jsonl row) is reported as an error instead of silently scoring
25; an agent that answered nothing in an existing prediction scores 25.
"""

from __future__ import annotations

from eval.events import utterances
from eval.scoring.common import ScoreResult, collect

OMEGAS = (0, 0.5, 1)
MAX_SCORE = 2
START_SCORE = 0.5


def area_under_line_ratio(points, max_x, max_y, omega=0.5, start_score=START_SCORE):
  if not len(points):
    return 0.0
  points = sorted(points, key=lambda p: p[0])
  points = [(x * (1 - omega), y) for x, y in points]
  points.append([max_x, points[-1][1]])
  prev_y, prev_x, area = start_score, 0, 0.0
  max_area = max_x * max_y
  for x1, y1 in points:
    area += (x1 - prev_x) * prev_y
    prev_x, prev_y = x1, y1
  return area / max_area if max_area > 0 else 0.0


def turn_pauc(turn, judge_scores, omega):
  if not judge_scores:
    return START_SCORE / MAX_SCORE
  ts0, ts1 = turn["reply_timespan"]
  points = [[float(t) - ts0, v] for t, v in judge_scores.items()]
  return area_under_line_ratio(points, ts1 - ts0, MAX_SCORE, omega, START_SCORE)


def judge_turn(turn, preds, question, judge):
  """{time: score 0..2} for one gold turn, with the late-score post-filter."""
  ts0, ts1 = turn["reply_timespan"]
  added, scores = [], {}
  for t, sent in preds:
    if not ts0 <= t <= ts1 or sent in added:
      continue
    added.append(sent)
    scores[t] = judge.grade(turn["content"], " ".join(added), question=question,
                            scale=(1, 3)) - 1
  if len(scores) > 1:
    related_end = turn.get("related_timespan", turn["reply_timespan"])[1]
    last_in_related = 0
    for t, s in sorted(scores.items()):
      if t <= related_end:
        last_in_related = s
      elif s < last_in_related:
        del scores[t]
  return scores


def predictions_of(pred):
  if pred.source == "pred.jsonl":
    return [(e.t_start, e.text) for e in pred.events]
  return [(u.t_start, u.text) for u in utterances(pred.events)]


def score(samples, get_prediction, judge, *, omegas=OMEGAS) -> ScoreResult:
  omegas = tuple(sorted(set(omegas)))

  def one(sample, pred):
    preds = predictions_of(pred)
    row = {"turns": []}
    for turn in sample.reference["answer"]:
      js = judge_turn(turn, preds, sample.reference["question"], judge)
      row["turns"].append({"judge_scores": {str(k): v for k, v in js.items()},
                           **{f"PAUC@{w:g}": turn_pauc(turn, js, w) for w in omegas}})
    return row

  rows, errors = collect(samples, get_prediction, one, "proactive_videoqa")
  metrics = {}
  all_turns = [t for r in rows for t in r["turns"]]
  for w in omegas:
    vals = [t[f"PAUC@{w:g}"] for t in all_turns]
    metrics[f"PAUC@{w:g}"] = round(sum(vals) / len(vals) * 100, 2) if vals else None
  metrics["num_videos"] = len(rows)
  metrics["num_turns"] = len(all_turns)
  return ScoreResult("proactive_videoqa", metrics, rows, errors, judge.name)
