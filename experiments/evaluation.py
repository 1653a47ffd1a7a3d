"""The eval run behind `python -m experiments.evaluate` and the main job's eval
phase (experiments/main_job.py): an eval config in, agent -> benchmark ->
ScoreResult JSON out. A library module (no flags), so the training entry point
can call it in its own process.
"""

from eval.judges import make_judge
from eval.replay import ReplayConfig
from eval.run import find_benchmarks, run_suite
from experiments import agents as agents_lib
from experiments import cli


def evaluate(config) -> dict:
  """Runs the eval config; returns agent -> benchmark -> ScoreResult JSON."""
  for field in ("suite", "out"):
    if not config[field]:
      raise ValueError(f"{field}: set it, e.g. --config.{field}=DIR")
  benchmarks = cli.comma_list(config.benchmarks)
  find_benchmarks(config.suite, benchmarks)  # a bad suite fails before agents load
  agents = agents_lib.agents_from_config(config)
  r = config.replay
  replay_config = ReplayConfig(pace=r.pace, lag_chunks=r.lag_chunks, timeline=r.timeline,
                               resume=r.resume, progress=r.progress)
  s = config.score
  return run_suite(config.suite, agents, config.out, benchmarks=benchmarks,
                   judge=make_judge(s.judge), vad=s.vad, timing=s.timing, omega=s.omega,
                   strict=s.strict, replay_config=replay_config,
                   rank_by=config.get("rank_by", ""),
                   late_session_s=agents_lib.late_session_seconds(config))
