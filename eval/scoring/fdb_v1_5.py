"""Full-Duplex-Bench v1.5: behaviour tags and timing intervals.

- Behaviour (`eval_behavior.py`): gpt-4o labels the first new model segment
  after the overlap C_RESPOND / C_RESUME / C_UNCERTAIN_HANDLING / C_UNKNOWN;
  output = ratio of each tag, rounded to 2 dp. Here: the configured judge.
  `desired_rate` (ours) is the share of the tag FD-bench v1.5 calls the
  desirable behaviour for the task (RESPOND for interruptions, RESUME for
  backchannel, talking to others and background speech).
- Timing (`get_timing.py`): VAD segments of input.wav (user, merged at gaps
  <= 0.6 s) and output.wav (model, <= 0.5 s), `latency_stop_list` = user x
  model intersections keeping the shortest per rounded end time,
  `latency_resp_list` = [user_end, next model start > user_end]. Silero VAD
  (ONNX, eval/vad.py). Model segments follow the timing source (eval/score.py):
  `audio` = the VAD on output.wav, `events` = where the agent's words are.
  The repo has no aggregate;
  `stop_latency_s` / `resp_latency_s` (ours) are the mean interval lengths
  over all samples, as third-party aggregators compute them.
"""

from __future__ import annotations

from eval import vad as vad_lib
from eval.judges import BEHAVIOR_TAGS
from eval.scoring.common import ScoreResult, collect, mean_or_none

USER_MERGE_GAP = 0.6
MODEL_MERGE_GAP = 0.5
DESIRED = {"user_interruption": "C_RESPOND", "user_backchannel": "C_RESUME",
           "talking_to_other": "C_RESUME", "background_speech": "C_RESUME"}


def overlaps(user, model):
  raw = []
  i = j = 0
  while i < len(user) and j < len(model):
    u_s, u_e = user[i]
    m_s, m_e = model[j]
    s, e = max(u_s, m_s), min(u_e, m_e)
    if e > s:
      raw.append((s, e))
    if u_e < m_e:
      i += 1
    else:
      j += 1
  best = {}
  for s, e in raw:
    key = int(round(e * 1000))
    if key not in best or (e - s) < (best[key][1] - best[key][0]):
      best[key] = (s, e)
  return [[round(s, 3), round(e, 3)] for s, e in sorted(best.values(), key=lambda x: x[1])]


def response_gaps(user, model):
  model_starts = [s for s, _ in model]
  tmp = {}
  for _, u_e in user:
    nxt = next((s for s in model_starts if s > u_e), None)
    if nxt is None:
      continue
    key = int(round(nxt * 1000))
    cand = [round(u_e, 3), round(nxt, 3)]
    if key not in tmp or cand[0] > tmp[key][0]:
      tmp[key] = cand
  return [iv for _, iv in sorted(tmp.items(), key=lambda kv: kv[1][1])]


def score(samples, get_prediction, judge, *, vad: str = "silero") -> ScoreResult:
  """get_prediction gives each sample's prediction under the chosen timing source
  (eval.predictions.timing_view); the user's segments always come from the VAD
  (`vad`) on input.wav, as in get_timing.py."""

  def one(sample, pred):
    words = pred.words()
    ref = sample.reference
    tag = judge.behavior(overlap=ref["overlap"], words=words,
                         current_turn_text=ref["current_turn_text"],
                         context_text=ref["context_text"])
    if sample.media_error:
      raise ValueError(f"timing needs the user's input.wav: {sample.media_error}")
    user = vad_lib.merge(vad_lib.speech_segments(sample.load_audio(), vad=vad), USER_MERGE_GAP)
    model = vad_lib.merge(pred.speech_segments("model timing"), MODEL_MERGE_GAP)
    return {"behavior": tag, "latency_stop_list": overlaps(user, model),
            "latency_resp_list": response_gaps(user, model)}

  rows, errors = collect(samples, get_prediction, one, "fdb_v1_5")
  metrics = {}
  for task in sorted({r["task"] for r in rows}):
    tr = [r for r in rows if r["task"] == task]
    metrics[f"{task}/n"] = len(tr)
    for tag in BEHAVIOR_TAGS:
      metrics[f"{task}/{tag}"] = round(sum(r["behavior"] == tag for r in tr) / len(tr), 2)
    if task in DESIRED:
      metrics[f"{task}/desired_rate"] = round(
          sum(r["behavior"] == DESIRED[task] for r in tr) / len(tr), 2)
    metrics[f"{task}/stop_latency_s"] = mean_or_none(
        [e - s for r in tr for s, e in r["latency_stop_list"]])
    metrics[f"{task}/resp_latency_s"] = mean_or_none(
        [e - s for r in tr for s, e in r["latency_resp_list"]])
  return ScoreResult("fdb_v1_5", metrics, rows, errors, judge.name,
                     [f"user speech: {vad_lib.describe(vad)} on input.wav",
                      "stop/resp latency aggregate is ours (the repo has none)"])
