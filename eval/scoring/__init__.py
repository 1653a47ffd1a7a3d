"""One scorer per benchmark; `score_benchmark` dispatches by name."""

from __future__ import annotations

import fnmatch
import functools

from eval.scoring import charades, delegation, fdb_v1, fdb_v1_5, pauc, repcount, timing_window
from eval.scoring.common import ScoreResult

SCORERS = {
    "fdb_v1": fdb_v1.score,
    "fdb_v1_5": fdb_v1_5.score,
    "proactive_videoqa": pauc.score,
    "repcount": repcount.score,
    "charades": charades.score,
    "timespeak": functools.partial(timing_window.score, benchmark="timespeak"),
    "cuespeak": functools.partial(timing_window.score, benchmark="cuespeak"),
    "delegation": delegation.score,
}

# What an agent must be able to do (eval.agents.base.CAPABILITIES) to score
# above 0 on a metric: benchmark -> [(metric name or fnmatch pattern,
# capabilities)]. Only metrics where 0 is the floor and higher is better. An
# agent lacking one of them that scores 0 scores a structural zero (the report
# marks it). Late-session labels (`fdb_v1@late`) use their benchmark's entry.
REQUIRES = {
    "fdb_v1": [("turn_taking/TOR", ("speech",)), ("user_interruption/TOR", ("speech",)),
               ("user_interruption/rating", ("speech",))],
    "fdb_v1_5": [("*/desired_rate", ("speech",))],
    "timespeak": [("accuracy", ("speech", "timed_speech")),
                  ("target_accuracy", ("speech", "timed_speech"))],
    "cuespeak": [("accuracy", ("speech", "cue_reaction")),
                 ("target_accuracy", ("speech", "cue_reaction"))],
    "charades": [("mIoU", ("speech", "vision")), ("R1@*", ("speech", "vision"))],
    "repcount": [("OBO", ("speech", "vision"))],
    "delegation": [("accuracy", ("delegation",)),
                   ("answer_accuracy", ("speech", "background_text"))],
}

# Which way is better, for the report (True = higher is better).
HIGHER_IS_BETTER = {"TOR": None, "latency_s": False, "rating": True, "Freq": None,
                    "JSD": False, "MAE": False, "OBO": True, "mIoU": True,
                    "accuracy": True, "target_accuracy": True, "desired_rate": True,
                    "answer_accuracy": True, "early_rate": False}


def required_capabilities(benchmark: str, metric: str) -> set:
  """Capabilities a metric needs to be above 0 (empty: none known)."""
  need = set()
  for pattern, caps in REQUIRES.get(benchmark.split("@", 1)[0], []):
    if fnmatch.fnmatchcase(metric, pattern):
      need |= set(caps)
  return need


__all__ = ["SCORERS", "ScoreResult", "HIGHER_IS_BETTER", "REQUIRES", "required_capabilities"]
