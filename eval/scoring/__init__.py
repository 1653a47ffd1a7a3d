"""One scorer per benchmark; `score_benchmark` dispatches by name."""

from __future__ import annotations

import functools

from eval.scoring import charades, fdb_v1, fdb_v1_5, pauc, repcount, timing_window
from eval.scoring.common import ScoreResult

SCORERS = {
    "fdb_v1": fdb_v1.score,
    "fdb_v1_5": fdb_v1_5.score,
    "proactive_videoqa": pauc.score,
    "repcount": repcount.score,
    "charades": charades.score,
    "timespeak": functools.partial(timing_window.score, benchmark="timespeak"),
    "cuespeak": functools.partial(timing_window.score, benchmark="cuespeak"),
}

# Which way is better, for the report (True = higher is better).
HIGHER_IS_BETTER = {"TOR": None, "latency_s": False, "rating": True, "Freq": None,
                    "JSD": False, "MAE": False, "OBO": True, "mIoU": True,
                    "accuracy": True, "target_accuracy": True, "desired_rate": True}

__all__ = ["SCORERS", "ScoreResult", "HIGHER_IS_BETTER"]
