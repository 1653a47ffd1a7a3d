"""Golden tests: hand-computed numbers for every scorer."""

import json
import os

import numpy as np
import pytest

from eval.events import TextEvent
from eval.judges import RuleJudge
from eval.predictions import Prediction
from eval.score import score_benchmark
from eval.scoring import charades, fdb_v1, fdb_v1_5, pauc, repcount, timing_window
from tests.eval import fixtures

JUDGE = RuleJudge()


def _pred_folder(root, key, words=None, events=None):
  d = os.path.join(root, key)
  os.makedirs(d, exist_ok=True)
  if words is not None:  # FD-bench output.json word chunks
    fixtures.write_json(os.path.join(d, "output.json"), {
        "text": " ".join(w for _, _, w in words),
        "chunks": [{"text": w, "timestamp": [a, b]} for a, b, w in words]})
  if events is not None:
    with open(os.path.join(d, "events.jsonl"), "w") as f:
      for e in events:
        f.write(json.dumps(e.to_json()) + "\n")


# ----------------------------------------------------------------------------- PAUC


def _anno(root):
  return fixtures.make_proactive(root)


@pytest.mark.parametrize("omega", [0, 0.5, 1])
def test_silent_agent_scores_pauc_25_at_every_omega(tmp_path, omega):
  refs = _anno(str(tmp_path / "refs"))
  _pred_folder(str(tmp_path / "pred"), "WEB/q0", events=[])
  res = score_benchmark("proactive_videoqa", refs, str(tmp_path / "pred"), judge=JUDGE,
                        omega=omega)
  assert res.metrics[f"PAUC@{omega:g}"] == 25.0
  assert res.errors == []


def test_pauc_hand_computed_step_area():
  # Reply span [10, 20]; score 1 (partial) at t=12, 2 (exact) at t=16.
  turn = {"reply_timespan": (10.0, 20.0), "related_timespan": (10.0, 20.0)}
  scores = {12.0: 1, 16.0: 2}
  # omega=0: 2*0.5 + 4*1 + 4*2 = 13 over 10*2 -> 0.65
  assert pauc.turn_pauc(turn, scores, 0) == pytest.approx(0.65)
  # omega=0.5: x = 1, 3; area = 1*0.5 + 2*1 + 7*2 = 16.5 -> 0.825
  assert pauc.turn_pauc(turn, scores, 0.5) == pytest.approx(0.825)
  # omega=1: last score only -> 2/2
  assert pauc.turn_pauc(turn, scores, 1) == pytest.approx(1.0)


def test_pauc_late_worse_scores_are_dropped_and_sentences_deduplicated():
  class Fixed(RuleJudge):
    def grade(self, reference, prediction, *, question="", scale=(1, 3)):
      return 3 if "right" in prediction and "wrong" not in prediction else (
          2 if "right" in prediction else 1)
  turn = {"content": "x", "reply_timespan": (0.0, 10.0), "related_timespan": (0.0, 4.0)}
  preds = [(1.0, "right"), (2.0, "right"), (6.0, "wrong")]
  scores = pauc.judge_turn(turn, preds, "q", Fixed())
  # (2.0, "right") is a duplicate; the t=6 score (1) < last in-related (2) -> dropped.
  assert scores == {1.0: 2}


def test_pauc_missing_prediction_is_an_error_not_a_silent_25(tmp_path):
  refs = _anno(str(tmp_path / "refs"))
  os.makedirs(tmp_path / "pred")
  res = score_benchmark("proactive_videoqa", refs, str(tmp_path / "pred"), judge=JUDGE)
  assert res.metrics["PAUC@0"] is None
  assert len(res.errors) == 1 and "q0" in res.errors[0]["key"]


def test_pauc_reads_pred_jsonl_with_video_span_end_times(tmp_path):
  refs = _anno(str(tmp_path / "refs"))
  path = tmp_path / "pred.jsonl"
  rows = [{"question_id": "q0", "video_span": [0, 1.0], "answerable": "Yes",
           "model_response": "The cat jumps onto the table."},
          {"question_id": "q0", "video_span": [1.0, 2.0], "answerable": "No",
           "model_response": "ignored"},
          {"question_id": "ghost", "video_span": [0, 1], "answerable": "Yes",
           "model_response": "x"},
          "not json"]
  path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
  res = score_benchmark("proactive_videoqa", refs, str(path), judge=JUDGE)
  assert res.metrics["PAUC@0"] == 100.0  # exact answer at reply start
  errors = " ".join(e["error"] for e in res.errors)
  assert "bad row" in errors and "unknown sample id" in errors


# ----------------------------------------------------------------------------- FD-bench v1


def test_fdb_v1_tor_and_latencies_hand_computed(tmp_path):
  refs = fixtures.make_fdb_v1(str(tmp_path / "refs"))
  pred = str(tmp_path / "pred")
  # Pause: two short words in 0.5 s -> not a turn (TOR 0).
  _pred_folder(pred, "pause_handling/p0", words=[(1.4, 1.6, "uh"), (1.7, 1.9, "yeah")])
  # Turn-taking: starts 0.3 s after the turn end (1.8) and lasts 1.5 s -> TOR 1, 0.3 s.
  _pred_folder(pred, "turn_taking/t0",
               words=[(2.1, 2.5, "well"), (2.6, 3.0, "that"), (3.1, 3.6, "depends")])
  # Interruption ends at 3.0; a word at 2.5 is cropped away; the rest starts at 2.9
  # (before the end: latency clamped to 0) and spans 1.6 s with 4 words -> TOR 1.
  _pred_folder(pred, "user_interruption/u0",
               words=[(2.5, 2.8, "so"), (2.9, 3.2, "the"), (3.3, 3.6, "weather"),
                      (3.7, 4.0, "there"), (4.1, 4.5, "is")])
  res = score_benchmark("fdb_v1", refs, pred, judge=JUDGE)
  m = res.metrics
  assert m["pause_handling/TOR"] == 0
  assert m["turn_taking/TOR"] == 1 and m["turn_taking/latency_s"] == pytest.approx(0.3)
  assert m["user_interruption/TOR"] == 1
  assert m["user_interruption/latency_s"] == 0.0
  assert res.errors == []


@pytest.mark.parametrize("words, tor", [
    ([], 0),
    ([(0.0, 0.5, "a"), (0.5, 0.9, "b"), (0.9, 0.99, "c")], 0),         # < 1 s, 3 words
    ([(0.0, 0.2, "a"), (0.2, 0.4, "b"), (0.4, 0.6, "c"), (0.6, 0.8, "d")], 1),  # 4 words
    ([(0.0, 0.5, "a"), (0.6, 1.0, "b")], 1),                           # exactly 1 s
    ([(0.0, 0.5, "a"), (0.7, None, "b")], 0),                          # None end: use start
])
def test_took_turn_rule(words, tor):
  assert fdb_v1.took_turn(words) == tor


def test_no_backchannel_gives_jsd_1():
  tor, freq, jsd, n = fdb_v1.backchannel_one([], [], 10.0, gt_dist=None)
  assert (tor, freq, jsd, n) == (0, 0.0, 1.0, 0)
  # A long turn first: the loop stops before any backchannel is recorded.
  tor, _, jsd, n = fdb_v1.backchannel_one([(1.0, 5.0)], [], 10.0, gt_dist=None)
  assert (tor, jsd, n) == (1, 1.0, 0)


def test_backchannel_jsd_matches_scipy_on_hand_histogram():
  from scipy.spatial.distance import jensenshannon
  gt = [0.25, 0.25, 0.25, 0.25, 0.0, 0.0]
  # 1.0 s of audio -> 6 bins of 0.2 s; a segment 0.1-0.3 covers bins 0 and 1.
  tor, freq, jsd, n = fdb_v1.backchannel_one([(0.1, 0.3)], [(0.1, 0.3, "mhm")], 1.0, gt)
  hist = np.array([1, 1, 0, 0, 0, 0]) + 1e-10
  assert n == 1 and tor == 0 and freq == 1.0
  assert jsd == pytest.approx(jensenshannon(hist / hist.sum(), gt))


def test_backchannel_without_ground_truth_key_is_a_sample_error(tmp_path):
  d = tmp_path / "fdb_v1" / "icc_backchannel" / "7"
  fixtures.write_wav(str(d / "input.wav"), np.zeros(16000, np.float32))
  pred = str(tmp_path / "pred")
  _pred_folder(pred, "icc_backchannel/7", words=[(0.2, 0.4, "mhm")])
  res = score_benchmark("fdb_v1", str(tmp_path / "fdb_v1"), pred, judge=JUDGE,
                        timing="events")
  assert len(res.errors) == 1 and "ground-truth distribution" in res.errors[0]["error"]


# ----------------------------------------------------------------------------- FD-bench v1.5


def test_v15_interval_utilities_hand_computed():
  user = [(1.0, 2.0), (5.0, 6.0)]
  model = [(1.5, 3.0), (6.5, 8.0)]
  assert fdb_v1_5.overlaps(user, model) == [[1.5, 2.0]]
  # Both user segments' next model start after their end is 6.5; the later
  # user end (shorter gap) is kept per model start.
  assert fdb_v1_5.response_gaps(user, model) == [[6.0, 6.5]]


def test_v15_behavior_rules():
  j = RuleJudge()
  kw = dict(overlap=(3.0, 3.5), current_turn_text="what about the weather", context_text="")
  assert j.behavior(words=[], **kw) == "C_UNKNOWN"
  talk = [(1.0 + 0.3 * i, 1.2 + 0.3 * i, f"w{i}") for i in range(12)]  # 1.0 .. 4.5 s
  assert j.behavior(words=talk, **kw) == "C_RESUME"
  stopped = talk[:6] + [(4.2, 4.5, "the"), (4.5, 4.9, "weather"), (4.9, 5.2, "is")]
  assert j.behavior(words=stopped, **kw) == "C_RESPOND"
  assert j.behavior(words=talk[:6] + [(4.2, 4.5, "sorry?")], **kw) == "C_UNCERTAIN_HANDLING"


# ----------------------------------------------------------------------------- Charades


@pytest.mark.parametrize("pred, gt, expected", [
    ((0.0, 1.0), (2.0, 3.0), 0.0),          # disjoint
    ((1.0, 2.0), (1.0, 2.0), 1.0),          # identical
    ((1.5, 2.0), (1.0, 3.0), 0.25),         # nested
    ((0.0, 1.0), (1.0, 2.0), 0.0),          # touching
    ((0.0, 2.0), (1.0, 3.0), 1 / 3),        # partial overlap
])
def test_charades_iou_corner_cases(pred, gt, expected):
  assert charades.iou(pred, gt) == pytest.approx(expected)
  assert charades.iou(gt, pred) == pytest.approx(expected)


def test_charades_recall_thresholds_and_protocol(tmp_path):
  refs = fixtures.make_charades(str(tmp_path / "refs"))  # VA 1.0-2.4, VB 0.6-1.8
  pred = str(tmp_path / "pred")
  ev = lambda t, w: TextEvent(t, t + 0.2, w)  # noqa: E731
  # VA: start 1.0, stop at 2.4 with chatter in between -> IoU 1.
  _pred_folder(pred, "VA_L1", events=[ev(0.4, "hmm"), ev(1.0, "start"), ev(1.5, "still"),
                                      ev(2.4, "stop")])
  # VB: says "start" at 1.2, never "stop" -> runs to the video end (3.0 s):
  # IoU = (1.8-1.2)/(3.0-0.6) = 0.25.
  _pred_folder(pred, "VB_L2", events=[ev(1.2, "Start!")])
  res = score_benchmark("charades", refs, pred)
  ious = sorted(r["IoU"] for r in res.per_sample)
  assert ious == pytest.approx([0.25, 1.0])
  assert res.metrics["mIoU"] == pytest.approx(62.5)
  assert res.metrics["R1@0.3"] == 50.0 and res.metrics["R1@0.7"] == 50.0


def test_charades_rounding_rule_and_strict_mode():
  class S:  # minimal sample stand-in
    key, task, duration_hint = "x", "", 10.0
    reference = {"segment": (0.0, 1.0)}
  # IoU = 0.6955 rounds to 0.70 -> counts at 0.7 (VTimeLLM), not with strict '>'.
  events = [TextEvent(0.0, 0.1, "start"), TextEvent(0.6955, 0.8, "stop")]
  get = lambda s: Prediction(events)  # noqa: E731
  lax = charades.score([S()], get).metrics["R1@0.7"]
  strict = charades.score([S()], get, strict=True).metrics["R1@0.7"]
  assert (lax, strict) == (100.0, 0.0)


# ----------------------------------------------------------------------------- RepCount


@pytest.mark.parametrize("pred, gt, obo, mae", [
    (5, 4, 1, 1 / 4.1),     # |p-g| = 1 counts
    (6, 4, 0, 2 / 4.1),     # 2 does not
    (3, 4, 1, 1 / 4.1),
    (0, 0, 1, 0.0),         # zero-count video, right
    (1, 0, 1, 10.0),        # zero-count video: divides by 0.1
    (2, 0, 0, 20.0),
])
def test_repcount_obo_boundary_and_zero_count(pred, gt, obo, mae):
  class S:
    key, task = "v", ""
    reference = {"count": gt}
  said = [TextEvent(1.0, 1.2, "I counted"), TextEvent(1.2, 1.5, str(pred))]
  res = repcount.score([S()], lambda s: Prediction(said))
  assert res.metrics["OBO"] == obo
  assert res.metrics["MAE"] == pytest.approx(mae)


def test_repcount_last_number_word_is_the_prediction():
  events = [TextEvent(0.5, 0.7, "one"), TextEvent(1.5, 1.7, "two"),
            TextEvent(2.5, 2.9, "twenty-one")]
  assert repcount.predicted_count(events) == 21
  assert repcount.predicted_count([TextEvent(0, 1, "no idea")]) is None


# ----------------------------------------------------------------------------- TimeSpeak


def test_timing_windows_each_utterance_answers_one_target():
  targets = [{"text": "banana", "window": (2.0, 3.0)}, {"text": "banana", "window": (2.5, 4.0)}]
  one = [TextEvent(2.6, 3.0, "banana")]
  from eval.events import utterances
  hits = timing_window.match_targets(targets, utterances(one), JUDGE)
  assert [h["answered"] for h in hits] == [True, False]
  two = one + [TextEvent(3.6, 3.9, "Banana.")]
  hits = timing_window.match_targets(targets, utterances(two), JUDGE)
  assert [h["answered"] for h in hits] == [True, True]
  late = [TextEvent(4.01, 4.3, "banana")]
  assert not any(h["answered"] for h in timing_window.match_targets(
      targets, utterances(late), JUDGE))


def test_timespeak_macro_average_over_samples(tmp_path):
  refs = fixtures.make_timespeak(str(tmp_path / "refs"))
  pred = str(tmp_path / "pred")
  _pred_folder(pred, "ts0", events=[TextEvent(2.7, 3.0, "banana")])
  _pred_folder(pred, "ts1", events=[TextEvent(2.0, 2.5, "the answer is forty two")])
  res = score_benchmark("timespeak", refs, pred, judge=JUDGE)
  assert res.metrics["accuracy"] == 1.0
  _pred_folder(pred, "ts1", events=[TextEvent(2.0, 2.5, "forty three")])
  res = score_benchmark("timespeak", refs, pred, judge=JUDGE)
  assert res.metrics["accuracy"] == 0.5
