"""Replay a whole suite into several agents, score it and write one report.

  python -m eval.run --suite=SUITE --agents=oracle,vad_cascade --out=runs/heldout

SUITE holds benchmark folders (fdb_v1, fdb_v1_5, repcount, charades,
timespeak, cuespeak, proactive_videoqa); each agent's replay goes to
OUT/<agent>/<benchmark>/ (resumable) and the report to OUT/report.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from eval import loaders
from eval.judges import make_judge
from eval.replay import ReplayConfig, agent_from_args, replay
from eval.report import write_report
from eval.score import score_benchmark


def run(suite, agent_names, out, *, args, benchmarks=None, judge=None, vad="webrtc",
        cfg: ReplayConfig | None = None):
  judge = judge or make_judge("rule")
  found = loaders.discover(suite)
  if benchmarks:
    missing = [b for b in benchmarks if b not in found]
    if missing:
      raise ValueError(f"benchmarks {missing} not found under {suite}")
    found = {b: found[b] for b in benchmarks}
  if not found:
    raise ValueError(f"no benchmark folders under {suite}; expected any of "
                     f"{sorted(loaders.LOADERS)}")
  results, agent_meta, manifests = {}, {}, {}
  for name in agent_names:
    agent = agent_from_args(name, args)
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
      replay(agent, loaded.samples, pred_dir, cfg or ReplayConfig(), loaded.errors)
      res = score_benchmark(b, root, pred_dir, judge=judge, vad=vad, loaded=loaded)
      results[name][b] = res.to_json()
  meta = {"suite": suite, "agents": agent_meta, "judge": judge.name,
          "manifests": {b: m for b, m in manifests.items() if m}}
  write_report(out, results, meta)
  return results


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m eval.run", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--suite", required=True)
  p.add_argument("--agents", default="oracle,vad_cascade")
  p.add_argument("--out", required=True)
  p.add_argument("--benchmarks", default="", help="comma list; default: all found")
  p.add_argument("--judge", default="rule")
  p.add_argument("--vad", default="webrtc", choices=("webrtc", "words"))
  p.add_argument("--no_timeline", action="store_true")
  p.add_argument("--recorded_dir", default=None)
  p.add_argument("--checkpoint", default=None, help="training workdir, for the model agent")
  p.add_argument("--end_silence_s", type=float, default=0.6)
  p.add_argument("--response_delay_s", type=float, default=0.0)
  p.add_argument("--tts", default="auto", choices=("auto", "espeak", "placeholder"))
  args = p.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    results = run(args.suite, [a for a in args.agents.split(",") if a], args.out, args=args,
                  benchmarks=[b for b in args.benchmarks.split(",") if b],
                  judge=make_judge(args.judge), vad=args.vad,
                  cfg=ReplayConfig(timeline=not args.no_timeline))
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({a: {b: r["metrics"] for b, r in rs.items()} for a, rs in results.items()}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
