"""Replay a whole suite into several agents, score it and write one report.

The library behind `python -m experiments.evaluate` (an eval config names the
suite, the agents and the settings). SUITE holds benchmark folders (fdb_v1,
fdb_v1_5, repcount, charades, timespeak, cuespeak, proactive_videoqa); each
agent's replay goes to OUT/<agent>/<benchmark>/ (resumable) and the report to
OUT/report.{md,json,png}.
"""

from __future__ import annotations

import os

from eval import loaders
from eval.judges import make_judge
from eval.replay import ReplayConfig, replay
from eval.report import OBJECTIVES, write_report
from eval.score import score_benchmark, score_both


def find_benchmarks(suite: str, benchmarks=()) -> dict:
  """benchmark -> folder under `suite`: the ones asked for, or all found."""
  found = loaders.discover(suite)
  if benchmarks:
    missing = [b for b in benchmarks if b not in found]
    if missing:
      raise ValueError(f"benchmarks {missing} not found under {suite}")
    found = {b: found[b] for b in benchmarks}
  if not found:
    raise ValueError(f"no benchmark folders under {suite}; expected any of "
                     f"{sorted(loaders.LOADERS)}")
  return found


def run_suite(suite: str, agents: dict, out: str, *, benchmarks=(), judge=None,
              vad: str = "silero", omega: float | None = None, strict: bool = False,
              timing: str = "both", replay_config: ReplayConfig | None = None,
              rank_by: str = "") -> dict:
  """Replays and scores every benchmark of `suite` with each agent; writes the report.

  agents: report label -> Agent (built by the caller, so a bad setting fails
  before any replay). timing: 'both' (default: each benchmark's default source
  as its metrics, both sources side by side and their per-sample
  disagreements in the report), 'default' (each benchmark's default source
  only), 'audio' or 'events' (that source only). rank_by: an objective of
  eval.report.OBJECTIVES to rank the agents by in the report ('' = none).
  Returns label -> benchmark -> ScoreResult.to_json() (+ `by_timing`,
  `disagreements` with 'both').
  """
  if timing not in ("both", "default", "audio", "events"):
    raise ValueError(f"timing must be both|default|audio|events, got {timing!r}")
  if rank_by and rank_by not in OBJECTIVES:
    raise ValueError(f"rank_by: unknown objective {rank_by!r}; known: {sorted(OBJECTIVES)}")
  judge = judge or make_judge("rule")
  found = find_benchmarks(suite, benchmarks)
  results, agent_meta, manifests = {}, {}, {}
  for name, agent in agents.items():
    agent_meta[name] = agent.describe()
    results[name] = {}
    for b, root in found.items():
      try:
        loaded = loaders.load(b, root)
      except ValueError as e:
        results[name][b] = {"benchmark": b, "judge": judge.name, "metrics": {},
                            "errors": [{"key": "", "benchmark": b, "error": str(e)}]}
        continue
      manifests[b] = loaded.manifest
      pred_dir = os.path.join(out, name, b)
      replay(agent, loaded.samples, pred_dir, replay_config or ReplayConfig(),
             loaded.errors)
      kwargs = dict(judge=judge, vad=vad, omega=omega, strict=strict, loaded=loaded)
      if timing == "both":
        results[name][b] = score_both(b, root, pred_dir, **kwargs)
      else:
        results[name][b] = score_benchmark(b, root, pred_dir, **kwargs,
                                           timing=None if timing == "default" else timing).to_json()
  meta = {"suite": suite, "agents": agent_meta, "judge": judge.name, "timing": timing,
          "rank_by": rank_by,
          "manifests": {b: m for b, m in manifests.items() if m}}
  write_report(out, results, meta)
  return results
