"""Structural zeros in the report: a 0 the agent could not have avoided (it lacks
a capability the metric needs) is marked, in report.md and report.json; a 0 an
able agent scored is not (the companion)."""

import json
import os

from eval.agents import make_agent
from eval.agents.base import CAPABILITIES
from eval.report import structural_zeros, write_report


def test_zero_is_structural_only_when_a_needed_capability_is_missing():
  m = {"mIoU": 0.0, "R1@0.3": 0.0, "R1@0.5": 0.0, "R1@0.7": 0.0, "n": 0}
  flags = structural_zeros("charades", m, {"speech"})
  assert set(flags) == {"mIoU", "R1@0.3", "R1@0.5", "R1@0.7"}
  assert flags["mIoU"] == {"structural_zero": True, "lacks": ["vision"]}
  # Companions: an agent that can see scored 0 by failing; a non-zero figure.
  assert structural_zeros("charades", m, CAPABILITIES) == {}
  assert structural_zeros("charades", {"mIoU": 12.5}, {"speech"}) == {}
  assert structural_zeros("charades", m, None) == {}  # capabilities unknown
  # Lower-is-better and unlisted metrics are never structural.
  assert structural_zeros("repcount", {"MAE": 0.0, "OBO": 0.0}, set()) == {
      "OBO": {"structural_zero": True, "lacks": ["speech", "vision"]}}
  assert structural_zeros("fdb_v1", {"pause_handling/TOR": 0.0}, set()) == {}
  # A late-session column uses its benchmark's requirements.
  assert "turn_taking/TOR" in structural_zeros("fdb_v1@late", {"turn_taking/TOR": 0.0}, set())


def test_agents_declare_what_they_can_do():
  cascade = make_agent("vad_cascade", tts_backend="placeholder")
  assert cascade.capabilities == {"speech"}
  assert make_agent("silent").capabilities == frozenset()
  assert make_agent("oracle", tts_backend="placeholder").capabilities == CAPABILITIES
  for kind in ("timespeak", "cuespeak", "charades", "repcount", "delegation"):
    from eval.scoring import REQUIRES
    assert any(set(caps) - cascade.capabilities for _, caps in REQUIRES[kind]), kind


def _result(benchmark, metrics, by_timing=None):
  r = {"benchmark": benchmark, "judge": "rule", "metrics": metrics, "errors": []}
  if by_timing:
    r["by_timing"] = by_timing
  return r


def test_report_marks_structural_zeros_in_markdown_and_json(tmp_path):
  results = {
      "oracle": {"cuespeak": _result("cuespeak", {"accuracy": 1.0, "n": 1}),
                 "charades": _result("charades", {"mIoU": 0.0, "n": 1})},
      "vad_cascade": {"cuespeak": _result("cuespeak", {"accuracy": 0.0, "n": 1},
                                          {"events": {"accuracy": 0.0}, "audio": {"accuracy": 0.0}}),
                      "charades": _result("charades", {"mIoU": 0.0, "n": 1})}}
  meta = {"suite": "s", "agents": {}, "capabilities": {
      "oracle": CAPABILITIES, "vad_cascade": frozenset({"speech"})}}
  write_report(str(tmp_path), results, meta)
  report = json.load(open(os.path.join(tmp_path, "report.json")))["results"]
  c = report["vad_cascade"]
  assert c["cuespeak"]["metric_flags"]["accuracy"] == {"structural_zero": True,
                                                       "lacks": ["cue_reaction"]}
  assert c["cuespeak"]["metric_flags_by_timing"]["audio"]["accuracy"]["structural_zero"] is True
  assert c["charades"]["metric_flags"]["mIoU"]["lacks"] == ["vision"]
  assert report["oracle"]["charades"]["metric_flags"] == {}  # the oracle's 0 is its own
  md = open(os.path.join(tmp_path, "report.md")).read()
  assert "| mIoU | 0.000 | 0 (structural) |" in md
  assert "| accuracy | 1.000 | 0 (structural) |" in md
  assert "vad_cascade mIoU: lacks vision" in md
  assert "can: speech" in md
