"""`python -m experiments.bench NAME` runs one benchmark with absl flags and prints
its figures as one JSON object on the last line."""

import json

import pytest


@pytest.mark.integration
def test_replay_benchmark_runs_and_prints_json(run_module):
  r = run_module("experiments.bench", "replay", "--samples=1", "--seconds=2", "--rounds=1")
  assert r.returncode == 0, r.stderr
  figures = json.loads(r.stdout.strip().splitlines()[-1])
  assert figures["silent_realtime_ratio"] > 0 and "silent_ms" in figures
  assert figures["samples"] == 1 and figures["rounds"] == 1  # the flags reached it


def test_bench_names_and_flag_errors(run_module):
  r = run_module("experiments.bench")
  assert r.returncode == 2 and "replay" in r.stdout and "kernels" in r.stdout
  r = run_module("experiments.bench", "nope")
  assert r.returncode == 2 and "unknown benchmark 'nope'" in r.stderr
  r = run_module("experiments.bench", "replay", "--sampels=1")
  assert r.returncode == 2 and "sampels" in r.stderr
