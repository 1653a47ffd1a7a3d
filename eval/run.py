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
from eval.report import write_report
from eval.score import score_benchmark


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
              vad: str = "webrtc", omega: float | None = None, strict: bool = False,
              replay_config: ReplayConfig | None = None) -> dict:
  """Replays and scores every benchmark of `suite` with each agent; writes the report.

  agents: report label -> Agent (built by the caller, so a bad setting fails
  before any replay). Returns label -> benchmark -> ScoreResult.to_json().
  """
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
      res = score_benchmark(b, root, pred_dir, judge=judge, vad=vad, omega=omega,
                            strict=strict, loaded=loaded)
      results[name][b] = res.to_json()
  meta = {"suite": suite, "agents": agent_meta, "judge": judge.name,
          "manifests": {b: m for b, m in manifests.items() if m}}
  write_report(out, results, meta)
  return results
