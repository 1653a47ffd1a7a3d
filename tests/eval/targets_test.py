"""The main job's targets table: values from the audio source, medians of
per-sample latencies, misses by how much, missing metrics never passing."""

from eval import targets


def _result(audio: dict, events: dict | None = None, per_sample_audio=None):
  r = {"metrics": events or audio, "by_timing": {"audio": audio, "events": events or audio}}
  if per_sample_audio is not None:
    r["per_sample_by_timing"] = {"audio": per_sample_audio, "events": []}
  return r


def _rows(results):
  return {r["target"]: r for r in targets.target_rows(results)}


def test_values_come_from_the_audio_and_misses_say_by_how_much():
  results = {
      "model": {"timespeak": _result({"accuracy": 0.5}, events={"accuracy": 0.9}),
                "cuespeak": _result({"accuracy": 0.85})},
      "vad_cascade": {"timespeak": _result({"accuracy": 0.0})},
  }
  rows = _rows(results)
  ts = rows["TimeSpeak accuracy"]
  assert ts["value"] == 0.5 and ts["met"] is False          # not the events' 0.9
  assert abs(ts["missed_by"] - 0.3) < 1e-9
  assert ts["better_than_baseline"] is True
  assert rows["CueSpeak accuracy"]["met"] is True
  # Nothing scored: not measured, never met.
  assert rows["counting OBO"]["value"] is None and rows["counting OBO"]["met"] is None
  md = targets.targets_markdown(list(rows.values()))
  assert "not measured" in md and "| TimeSpeak accuracy | >= 0.8 | 0.5 |" in md


def test_latency_target_is_the_median_of_the_samples():
  per = [{"task": "turn_taking", "latency_s": x} for x in (0.2, 0.3, 2.0)]
  results = {"model": {"fdb_v1": _result({"turn_taking/latency_s": 0.833,
                                          "turn_taking/TOR": 1.0}, per_sample_audio=per)}}
  row = _rows(results)["turn-taking latency (median over samples), s"]
  assert row["value"] == 0.3 and row["met"] is True
  # Companion: without per-sample rows the mean (0.833) is all there is, and misses.
  results["model"]["fdb_v1"].pop("per_sample_by_timing")
  results["model"]["fdb_v1"]["per_sample"] = []
  row = _rows(results)["turn-taking latency (median over samples), s"]
  assert row["value"] == 0.833 and row["met"] is False


def test_late_session_within_ten_percent():
  plain = {"turn_taking/TOR": 1.0, "turn_taking/latency_s": 0.5, "pause_handling/TOR": 0.1}
  late = {"turn_taking/TOR": 0.95, "turn_taking/latency_s": 0.7, "pause_handling/TOR": 0.1}
  rows = _rows({"model": {"fdb_v1": _result(plain), "fdb_v1@late": _result(late)}})
  assert rows["late session turn_taking/TOR within 10% of plain"]["met"] is True
  lat = rows["late session turn_taking/latency_s within 10% of plain"]
  assert lat["met"] is False and abs(lat["missed_by"] - 0.3) < 1e-9
  assert rows["late session pause_handling/TOR within 10% of plain"]["met"] is True


def test_silence_does_not_meet_the_pause_and_late_targets():
  """An agent that never speaks has pause TOR 0 and late == plain: neither
  counts as met (companion: the same figures with turns taken do)."""
  silent = {"turn_taking/TOR": 0.0, "pause_handling/TOR": 0.0}
  rows = _rows({"model": {"fdb_v1": _result(silent), "fdb_v1@late": _result(silent)}})
  assert rows["take-over on pauses"]["met"] is None
  assert "vacuous" in rows["take-over on pauses"]["note"]
  assert rows["late session pause_handling/TOR within 10% of plain"]["met"] is None
  talks = {"turn_taking/TOR": 1.0, "pause_handling/TOR": 0.0}
  rows = _rows({"model": {"fdb_v1": _result(talks), "fdb_v1@late": _result(talks)}})
  assert rows["take-over on pauses"]["met"] is True
  assert rows["late session pause_handling/TOR within 10% of plain"]["met"] is True
