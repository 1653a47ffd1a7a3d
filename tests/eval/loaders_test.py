"""Loaders: published formats, odd sample rates, and bad input as per-sample errors."""

import os

import numpy as np
import pytest

from eval import loaders
from eval.score import score_benchmark
from tests.eval import fixtures


def test_fdb_v1_any_sample_rate_is_resampled_to_16k(tmp_path):
  root = fixtures.make_fdb_v1(str(tmp_path))
  res = loaders.load("fdb_v1", root)
  assert res.errors == []
  pause = next(s for s in res.samples if s.task == "pause_handling")  # written at 48 kHz
  assert pause.duration == pytest.approx(4.0)
  assert len(pause.load_audio()) == 64000
  assert {s.task for s in res.samples} == {"pause_handling", "turn_taking", "user_interruption"}


def test_all_formats_load_from_the_fixture_suite(tmp_path):
  suite = fixtures.make_suite(str(tmp_path))
  found = loaders.discover(suite)
  assert set(found) == set(loaders.LOADERS)
  for b, root in found.items():
    res = loaders.load(b, root)
    assert res.samples and not res.errors, b
  rc = loaders.load("repcount", found["repcount"])
  assert {s.id: s.reference["count"] for s in rc.samples} == {"v3": 3, "v0": 0}
  assert rc.samples[0].reference["cycles"] == [(2, 6), (7, 11), (12, 16)]
  ch = loaders.load("charades", found["charades"]).samples
  assert ch[0].reference["segment"] == (1.0, 2.4) and ch[0].duration == pytest.approx(4.0)


def test_malformed_rows_become_per_sample_errors(tmp_path):
  root = fixtures.make_fdb_v1(str(tmp_path))
  bad = os.path.join(root, "turn_taking", "t_bad")
  fixtures.write_wav(os.path.join(bad, "input.wav"), np.zeros(1600, np.float32))
  with open(os.path.join(bad, "turn_taking.json"), "w") as f:
    f.write("{not json")
  missing = os.path.join(root, "pause_handling", "p_missing")
  fixtures.write_wav(os.path.join(missing, "input.wav"), np.zeros(1600, np.float32))
  res = loaders.load("fdb_v1", root)
  assert len(res.samples) == 3
  msgs = {e.key: e.message for e in res.errors}
  assert "malformed JSON" in msgs["turn_taking/t_bad"]
  assert "missing file pause.json" in msgs["pause_handling/p_missing"]


def test_repcount_and_charades_bad_rows(tmp_path):
  rc = tmp_path / "repcount"
  rc.mkdir()
  (rc / "test.csv").write_text(",type,name,count,L1,L2,L3\n0,a,good.mp4,1,0,4,\n"
                               "1,a,odd.mp4,2,0,4,5\n2,a,nan.mp4,many,,,\n")
  res = loaders.load("repcount", str(rc))
  assert [s.id for s in res.samples] == ["good"]
  assert res.samples[0].media_error  # no video file: replay fails, scoring still works
  msgs = " ".join(e.message for e in res.errors)
  assert "odd number" in msgs and "not a number" in msgs
  ch = tmp_path / "charades"
  ch.mkdir()
  (ch / "charades_sta_test.txt").write_text("V1 1.0 2.0##ok\nV2 3.0##no end\nV3 5 4##backwards\n")
  res = loaders.load("charades", str(ch))
  assert len(res.samples) == 1 and len(res.errors) == 2


def test_timespeak_bad_task_json_fields(tmp_path):
  root = fixtures.make_timespeak(str(tmp_path))
  fixtures.write_json(os.path.join(root, "ts0", "task.json"),
                      {"instruction": "x", "instruction_mode": "shout",
                       "instruction_time": [0, 1], "targets": []})
  res = loaders.load("timespeak", root)
  assert len(res.samples) == 1
  assert "instruction_mode" in res.errors[0].message


def test_missing_audio_is_a_media_error_reported_by_replay_and_score(tmp_path):
  root = fixtures.make_timespeak(str(tmp_path / "refs"))
  os.remove(os.path.join(root, "ts1", "input.wav"))
  res = loaders.load("timespeak", root)
  broken = next(s for s in res.samples if s.id == "ts1")
  assert "not found" in broken.media_error
  from eval.agents import make_agent
  from eval.replay import ReplayConfig, replay
  out = str(tmp_path / "out")
  summary = replay(make_agent("oracle", tts_backend="placeholder"), res.samples, out,
                   ReplayConfig(timeline=False, progress=False))
  assert summary["done"] == 1 and len(summary["errors"]) == 1
  scored = score_benchmark("timespeak", root, out)
  assert scored.metrics["n"] == 1 and scored.metrics["accuracy"] == 1.0
  assert "replay failed" in scored.errors[0]["error"]


def test_empty_predictions_and_unknown_ids(tmp_path):
  root = fixtures.make_timespeak(str(tmp_path / "refs"))
  pred = tmp_path / "pred"
  for key in ("ts0", "ts1", "stranger"):
    (pred / key).mkdir(parents=True)
    (pred / key / "events.jsonl").write_text("")
  (pred / "ts1" / "events.jsonl").write_text('{"t_start": 1.0, "text": "no end"}\n')
  res = score_benchmark("timespeak", root, str(pred))
  assert res.metrics["accuracy"] == 0.0 and res.metrics["n"] == 1  # empty = silent, scored
  errs = {e["key"]: e["error"] for e in res.errors}
  assert "missing field" in errs["ts1"]
  assert errs["stranger"] == "prediction for an unknown sample id"


def test_unknown_benchmark_and_missing_root_raise_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown benchmark"):
    loaders.load("nope", str(tmp_path))
  with pytest.raises(ValueError, match="not found"):
    loaders.load("timespeak", str(tmp_path / "absent"))
