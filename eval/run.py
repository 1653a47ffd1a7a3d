"""Replay a whole suite into several agents, score it and write one report.

The library behind `python -m experiments.evaluate` (an eval config names the
suite, the agents and the settings). SUITE holds benchmark folders (fdb_v1,
fdb_v1_5, repcount, charades, timespeak, cuespeak, proactive_videoqa,
delegation); each agent's replay goes to OUT/<agent>/<benchmark>/ (resumable)
and the report to OUT/report.{md,json,png}. With `late_session_s` > 0 the
FD-bench v1 turn-taking and pause samples are also replayed after that much
earlier conversation (eval/late.py) into OUT/<agent>/fdb_v1@late_<s>s/ and
reported as `fdb_v1@late`.
"""

from __future__ import annotations

import os

from eval import late as late_lib
from eval import loaders
from eval.judges import make_judge
from eval.replay import ReplayConfig, replay
from eval.samples import LoadResult
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


def _score(b, root, pred_dir, timing, **kwargs) -> dict:
  if timing == "both":
    return score_both(b, root, pred_dir, **kwargs)
  return score_benchmark(b, root, pred_dir, **kwargs,
                         timing=None if timing == "default" else timing).to_json()


def run_late(agent, loaded, root: str, pred_dir: str, late_session_s: float, *,
             timing: str = "both", replay_config: ReplayConfig | None = None,
             **score_kwargs) -> dict:
  """The late-session column of one agent on FD-bench v1 (eval/late.py): replays
  each turn-taking and pause sample after `late_session_s` of earlier
  conversation into `pred_dir`, scores the sample parts; the result JSON has
  benchmark `fdb_v1@late`."""
  label = late_lib.label("fdb_v1")
  samples = late_lib.late_samples(loaded.samples, late_session_s)
  if not samples:
    return {"benchmark": label, "judge": getattr(score_kwargs.get("judge"), "name", ""),
            "metrics": {}, "errors": [{"key": "", "benchmark": label, "error":
                                       "late session: no turn_taking or pause_handling "
                                       "samples to replay"}]}
  replay(agent, samples, pred_dir, replay_config or ReplayConfig())
  bases = LoadResult([s.base for s in samples], [], loaded.manifest)
  r = _score("fdb_v1", root, pred_dir, timing, loaded=bases, **score_kwargs)
  r["benchmark"] = label
  for e in r.get("errors", []):
    e["benchmark"] = label
  prefix = sorted({round(s.prefix_s, 1) for s in samples})
  r["notes"] = [f"late session: each sample after {prefix[0]:g}"
                + (f"-{prefix[-1]:g}" if len(prefix) > 1 else "")
                + f" s of earlier conversation (>= {late_session_s:g} s asked)"] + r.get("notes", [])
  return r


def run_suite(suite: str, agents: dict, out: str, *, benchmarks=(), judge=None,
              vad: str = "silero", omega: float | None = None, strict: bool = False,
              timing: str = "both", replay_config: ReplayConfig | None = None,
              rank_by: str = "", late_session_s: float = 0.0) -> dict:
  """Replays and scores every benchmark of `suite` with each agent; writes the report.

  agents: report label -> Agent (built by the caller, so a bad setting fails
  before any replay). timing: 'both' (default: each benchmark's default source
  as its metrics, both sources side by side and their per-sample
  disagreements in the report), 'default' (each benchmark's default source
  only), 'audio' or 'events' (that source only). rank_by: an objective of
  eval.report.OBJECTIVES to rank the agents by in the report ('' = none).
  late_session_s: > 0 adds the late-session column `fdb_v1@late` (FD-bench v1
  turn-taking and pause samples after that many seconds of earlier
  conversation in the same session; eval/late.py). Returns label -> benchmark
  -> ScoreResult.to_json() (+ `by_timing`, `disagreements` with 'both';
  `metric_flags` marking structural zeros, eval/report.py).
  """
  if timing not in ("both", "default", "audio", "events"):
    raise ValueError(f"timing must be both|default|audio|events, got {timing!r}")
  if rank_by and rank_by not in OBJECTIVES:
    raise ValueError(f"rank_by: unknown objective {rank_by!r}; known: {sorted(OBJECTIVES)}")
  if not late_session_s >= 0:
    raise ValueError(f"late_session_s must be >= 0, got {late_session_s}")
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
      kwargs = dict(judge=judge, vad=vad, omega=omega, strict=strict)
      results[name][b] = _score(b, root, pred_dir, timing, loaded=loaded, **kwargs)
      if b == "fdb_v1" and late_session_s > 0:
        results[name][late_lib.label(b)] = run_late(
            agent, loaded, root, os.path.join(out, name, late_lib.folder(late_session_s)),
            late_session_s, timing=timing, replay_config=replay_config, **kwargs)
  meta = {"suite": suite, "agents": agent_meta, "judge": judge.name, "timing": timing,
          "rank_by": rank_by, "late_session_s": late_session_s,
          "capabilities": {name: getattr(agent, "capabilities", None)
                           for name, agent in agents.items()},
          "manifests": {b: m for b, m in manifests.items() if m}}
  write_report(out, results, meta)
  return results
