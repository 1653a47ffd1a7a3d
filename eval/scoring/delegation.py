"""Delegation: hand the question to the background model in time, then answer it.

Per sample (task.json, eval/loaders.py):
- `delegated`: the agent emitted `<delegate>` (an event of stream `control`)
  inside `delegate_window` (inclusive) and never before `question_end`: a
  delegation before the user has finished asking is a miss, even with a
  second one in the window. `accuracy` = share of samples delegated.
- `answered`: what the agent says in `answer_window` holds at least half
  (`ANSWER_RECALL`) of the answer's content words (eval.text.content_tokens:
  normalised, number words as digits, stop words out). What it says there:
  every utterance (words joined over gaps <= 0.3 s) that starts inside the
  window (inclusive), in full (the window bounds the answer's start, as the
  generator writes it: a long answer may end after it), plus the words that
  start inside it of an utterance begun earlier. `answer_accuracy` = share of
  samples answered. Under timing
  `events` the words are the agent's own spoken text; under `audio` they are
  the recogniser's words on output.wav. `<delegate>` always comes from the
  agent's events (a control token is not heard).
Times are compared with a 1e-4 s slack (events.jsonl keeps 4 decimals).
"""

from __future__ import annotations

from eval import text as text_lib
from eval.events import CONTROL, split_words
from eval.scoring.common import ScoreResult, collect

DELEGATE = "<delegate>"
ANSWER_RECALL = 0.5
EPS = 1e-4


def delegate_times(events) -> list[float]:
  """Start times of the `<delegate>` control events, in order."""
  return sorted(e.t_start for e in events
                if e.stream == CONTROL and e.text.strip() == DELEGATE)


def delegated(times, question_end: float, window) -> tuple[bool, bool]:
  """(in the window and none early, any early) for `<delegate>` times."""
  w0, w1 = window
  early = any(t < question_end - EPS for t in times)
  hit = any(w0 - EPS <= t <= w1 + EPS for t in times)
  return hit and not early, early


UTTERANCE_GAP_S = 0.3


def said_in_window(words, window) -> str:
  """The text said in `window` (module docstring) from (t0, t1|None, word) in order."""
  w0, w1 = window
  utts: list[list] = []
  last_end = None
  for t0, t1, w in sorted(words, key=lambda x: x[0]):
    end = t0 if t1 is None else t1
    if utts and t0 - last_end <= UTTERANCE_GAP_S:
      utts[-1].append((t0, w))
      last_end = max(last_end, end)
    else:
      utts.append([(t0, w)])
      last_end = end
  out = []
  for u in utts:
    if w0 - EPS <= u[0][0] <= w1 + EPS:
      out += [w for _, w in u]
    else:
      out += [w for t, w in u if w0 - EPS <= t <= w1 + EPS]
  return " ".join(out)


def answer_recall(words, answer: str, window) -> float:
  """Share of the answer's content words in what is said in `window`."""
  said = said_in_window(words, window)
  keys = set(text_lib.content_tokens(answer)) or set(text_lib.tokens(answer))
  if not keys:
    return 0.0
  return len(keys & set(text_lib.tokens(said))) / len(keys)


def score(samples, get_prediction, judge=None) -> ScoreResult:
  def one(sample, pred):
    ref = sample.reference
    own = pred.text_events if pred.text_events is not None else pred.events
    times = delegate_times(own)
    ok, early = delegated(times, ref["question_end"], ref["delegate_window"])
    if pred.fdb_words is not None:
      words = pred.words()
    else:
      words = [(w.t_start, w.t_end, w.text) for w in split_words(pred.events)]
    recall = answer_recall(words, ref["answer"], ref["answer_window"])
    return {"delegate_times": [round(t, 4) for t in times], "delegated": ok,
            "early_delegate": early, "answer_recall": recall,
            "answered": recall >= ANSWER_RECALL - 1e-9}

  rows, errors = collect(samples, get_prediction, one, "delegation")
  n = len(rows)
  metrics = {"accuracy": sum(r["delegated"] for r in rows) / n if n else None,
             "answer_accuracy": sum(r["answered"] for r in rows) / n if n else None,
             "early_rate": sum(r["early_delegate"] for r in rows) / n if n else None,
             "n": n}
  return ScoreResult("delegation", metrics, rows, errors,
                     "none (control token; answer content words)")
