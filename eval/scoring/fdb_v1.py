"""Full-Duplex-Bench v1 scorers, following the published evaluation scripts.

`eval_pause_handling.py`, `eval_smooth_turn_taking.py`,
`eval_user_interruption.py`, `eval_backchannel.py` (FDB @d7336bd), as
published. Quirks, and what we do:
- TOR rule: empty -> 0; TOR=1 unless duration < 1 s and <= 3 words, over the
  whole output (no time window). Kept.
- A last word with no end time: pause handling uses its start (kept, for
  every task; the other scripts would crash on it).
- Latency clamped at 0 and averaged only over TOR=1 samples. Kept. With no
  TOR=1 sample the scripts print 0.0; we report null instead (no silent 0).
- Interruption: the ASR runs on the output cropped at the interruption's end;
  from word events we keep words ending after the crop, start clipped to it.
- Interruption rating: gpt-4-turbo 0-5 in the original; here the configured
  judge (named in the result). The double append of the score does not
  change the mean; not reproduced.
- Timing source (eval/score.py): `audio` = the recogniser's words and the
  VAD's segments of output.wav, as FD-bench (parakeet ASR + Silero VAD);
  `events` = the agent's own words, speech where they are.
- Backchannel: Silero VAD (ONNX, eval/vad.py; webrtcvad as an option) on
  output.wav at 16 kHz (the published code assumes 16 kHz without saying so;
  we always resample). TOR is overwritten per segment, so
  the last segment wins: kept. No backchannel -> JSD = 1: kept. JSD is
  scipy's jensenshannon (a distance, natural log): kept. The ground-truth
  distribution is `icc_gt_distribution.json` keyed by sample id; a sample
  whose id is not a key is an error (never a fallback to another key).
- The pairing of output.json with turn_taking.json by os.listdir order is not
  reproduced: we pair by folder.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import scipy.interpolate
import scipy.spatial.distance

from eval.scoring.common import ScoreResult, collect, mean_or_none, std_or_none

TURN_DURATION_THRESHOLD = 1
TURN_NUM_WORDS_THRESHOLD = 3
WINDOW_SIZE = 0.2
EPSILON = 1e-10
TIME_THRESHOLD = 3


def took_turn(words) -> int:
  """The TOR rule over (t0, t1|None, text) words in output order."""
  if len(words) == 0:
    return 0
  last = words[-1][1] if words[-1][1] is not None else words[-1][0]
  duration = last - words[0][0]
  if duration < TURN_DURATION_THRESHOLD and len(words) <= TURN_NUM_WORDS_THRESHOLD:
    return 0
  return 1


def _latency(words, t_ref):
  t0 = words[0][0]
  if t0 is None or not math.isfinite(t0):
    # max(0, nan) is 0.0: a bad time would score as the best latency.
    raise ValueError(f"first word {words[0][2]!r} has no finite start time ({t0!r})")
  return max(0.0, t0 - t_ref)


def crop_words(words, t_crop):
  """Words an ASR would hear in the output cropped at t_crop (times stay absolute)."""
  out = []
  for t0, t1, w in words:
    end = t0 if t1 is None else t1
    if end > t_crop or t0 >= t_crop:
      out.append((max(t0, t_crop), t1, w))
  return out


def backchannel_one(segments, words, duration, gt_dist):
  """eval_backchannel.py on one sample -> (TOR, freq, JSD, n_backchannels)."""
  tor = 0
  predictions = []
  for seg_start, seg_end in segments:
    dur = seg_end - seg_start
    if dur > TIME_THRESHOLD:
      tor = 1
      break
    cur = []
    for t_start, t_end, text in words:
      if t_start is None or (t_end is None and t_start < seg_end):
        continue
      if t_end is None:
        t_end = t_start
      if t_start >= seg_start and t_end <= seg_end:
        cur.append(text)
      elif t_start <= seg_end and t_end > seg_end:
        cur.append(text)
      elif t_start <= seg_start and t_end > seg_start:
        cur.append(text)
    if len(cur) > 3:
      tor = 1
    elif dur < 1:
      tor = 0 if len(cur) <= 2 else 1
    else:
      tor = 1
    predictions.append([seg_start, seg_end])
  freq = len(predictions) / duration
  if not predictions:
    return tor, freq, 1.0, 0
  if gt_dist is None:
    raise ValueError("backchannels found but no ground-truth distribution for this id "
                     "(icc_gt_distribution.json)")
  bins = [0] * (int(duration / WINDOW_SIZE) + 1)
  for a, b in predictions:
    for i in range(int(a / WINDOW_SIZE), int(b / WINDOW_SIZE) + 1):
      if i < len(bins):
        bins[i] += 1
  hist = np.array(bins) + EPSILON
  hist = hist / hist.sum()
  x_gt = np.linspace(0, 1, len(gt_dist))
  x_pred = np.linspace(0, 1, len(hist))
  gt = scipy.interpolate.interp1d(x_gt, gt_dist, kind="linear", fill_value="extrapolate")(x_pred)
  return tor, freq, float(scipy.spatial.distance.jensenshannon(hist, gt)), len(predictions)


def _output_duration(sample, pred) -> float:
  """Freq's denominator: output.wav's length, as the script (len(wav) / sr);
  without one, the input's."""
  if pred.audio_duration is not None:
    return pred.audio_duration
  if pred.audio_path:
    from interaction import audio_io
    return audio_io.wav_duration(pred.audio_path)
  return sample.duration


def _gt_distribution(sample):
  for d in (sample.path, os.path.dirname(sample.path), os.path.dirname(os.path.dirname(sample.path))):
    p = os.path.join(d, "icc_gt_distribution.json")
    if os.path.exists(p):
      with open(p) as f:
        return json.load(f).get(sample.id)
  return None


def score(samples, get_prediction, judge) -> ScoreResult:
  """get_prediction gives each sample's prediction under the chosen timing source
  (eval.predictions.timing_view), its speech segments included."""

  def one(sample, pred):
    words = pred.words()
    ref, task = sample.reference, sample.task
    if task == "pause_handling":
      return {"TOR": took_turn(words)}
    if task == "turn_taking":
      tor = took_turn(words)
      return {"TOR": tor, "latency_s": _latency(words, ref["turn"][0][0]) if tor else None}
    if task == "user_interruption":
      words = crop_words(words, ref["interrupt"][1])
      tor = took_turn(words)
      row = {"TOR": tor, "latency_s": None, "rating": None}
      if tor:
        row["latency_s"] = _latency(words, ref["interrupt"][1])
        row["rating"] = judge.interruption_rating(
            ref["interrupt_text"], " ".join(w for _, _, w in words), ref["context_text"])
      return row
    if task == "backchannel":
      segments = pred.speech_segments("backchannel VAD")
      duration = _output_duration(sample, pred)
      tor, freq, jsd, n = backchannel_one(segments, words, duration, _gt_distribution(sample))
      return {"TOR": tor, "Freq": freq, "JSD": jsd, "backchannels": n}
    raise ValueError(f"unknown FD-bench v1 task {task!r}")

  rows, errors = collect(samples, get_prediction, one, "fdb_v1")
  metrics = {}
  for task in sorted({r["task"] for r in rows}):
    tr = [r for r in rows if r["task"] == task]
    metrics[f"{task}/n"] = len(tr)
    for k in ("TOR", "latency_s", "rating", "Freq", "JSD"):
      if any(k in r for r in tr):
        metrics[f"{task}/{k}"] = mean_or_none([r.get(k) for r in tr])
    if task == "backchannel":
      metrics[f"{task}/JSD_std"] = std_or_none([r["JSD"] for r in tr])
  return ScoreResult("fdb_v1", metrics, rows, errors, judge.name)
