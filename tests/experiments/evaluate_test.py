"""`python -m experiments.evaluate` replays and scores a generated suite from an
eval config; every eval config loads and builds the agents it runs."""

import glob
import importlib
import json
import os

import pytest

from experiments import agents as agents_lib
from tests.experiments.conftest import REPO

EVAL_CONFIGS = sorted(os.path.basename(p)[:-3] for p in
                      glob.glob(os.path.join(REPO, "experiments", "configs", "eval*.py")))


def test_eval_config_set():
  assert "eval_heldout" in EVAL_CONFIGS


@pytest.mark.parametrize("name", EVAL_CONFIGS)
def test_eval_config_loads_and_builds_its_agents(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  config = module.get_config()
  assert config.name == name
  assert "python -m experiments.evaluate" in module.__doc__  # says how to run it
  config.replay.tts = "placeholder"
  agents = agents_lib.agents_from_config(config)
  assert list(agents) == [a.strip() for a in config.run_agents.split(",")]


def test_agent_settings_are_checked_before_any_replay():
  from experiments.configs import eval_heldout
  config = eval_heldout.get_config()
  config.run_agents = "oracle,model"
  with pytest.raises(ValueError, match="agents.model: .*checkpoint"):
    agents_lib.agents_from_config(config)
  config.run_agents = "oracle,nope"
  with pytest.raises(ValueError, match="no section agents.nope"):
    agents_lib.agents_from_config(config)
  config = eval_heldout.get_config()
  config.agents.vad_cascade.end_silence_s = 0.0
  with pytest.raises(ValueError, match="agents.vad_cascade: end_silence_s"):
    agents_lib.agents_from_config(config)


@pytest.mark.integration
def test_evaluate_replays_and_scores_a_generated_suite(tmp_path, run_module):
  from data_pipeline import generate
  # One sample of each family that has a benchmark with a spoken answer, a
  # video and a turn-taking reference; the oracle must score perfectly.
  families = ["turn_taking", "timespeak", "visual_start_stop", "visual_counting"]
  generate.generate(families, 1, tmp_path / "suite", split="heldout", workers=1,
                    progress=False)
  out = tmp_path / "report"
  args = ["--config=experiments/configs/eval_heldout.py",
          f"--config.suite={tmp_path / 'suite'}", f"--config.out={out}",
          "--config.run_agents=oracle", "--config.replay.progress=False"]
  r = run_module("experiments.evaluate", *args)
  assert r.returncode == 0, r.stderr
  printed = json.loads(r.stdout.strip().splitlines()[-1])
  report = json.load(open(out / "report.json"))
  o = {b: res["metrics"] for b, res in report["results"]["oracle"].items()}
  assert printed == {"oracle": o}
  assert set(o) == {"fdb_v1", "timespeak", "charades", "repcount"}
  assert o["timespeak"]["accuracy"] == 1.0 and o["timespeak"]["n"] == 1
  assert o["charades"]["mIoU"] == pytest.approx(100.0)
  assert o["repcount"]["OBO"] == 1.0 and o["repcount"]["MAE"] == 0.0
  assert o["fdb_v1"]["turn_taking/TOR"] == 1.0
  # FD-bench is scored from the audio by default; both sources are in the report.
  fdb = report["results"]["oracle"]["fdb_v1"]
  assert fdb["timing"] == "audio" and fdb["by_timing"]["audio"] == o["fdb_v1"]
  assert fdb["by_timing"]["events"]["turn_taking/latency_s"] == 0.0
  assert o["fdb_v1"]["turn_taking/latency_s"] <= 0.1
  assert report["results"]["oracle"]["timespeak"]["timing"] == "events"
  assert all(not res["errors"] for res in report["results"]["oracle"].values())
  assert os.path.exists(out / "report.md")
  assert "timing source audio vs events" in open(out / "report.md").read()
  # Rerunning resumes: no sample is replayed again, the scores are the same.
  metas = glob.glob(str(out / "oracle" / "*" / "**" / "meta.json"), recursive=True)
  assert len(metas) == 4
  stamps = {m: os.stat(m).st_mtime_ns for m in metas}
  again = run_module("experiments.evaluate", *args)
  assert again.returncode == 0, again.stderr
  assert json.loads(again.stdout.strip().splitlines()[-1]) == printed
  assert {m: os.stat(m).st_mtime_ns for m in metas} == stamps


def test_evaluate_needs_suite_and_out(run_module, tmp_path):
  r = run_module("experiments.evaluate", "--config=experiments/configs/eval_heldout.py")
  assert r.returncode == 2 and "suite: set it" in r.stderr
  r = run_module("experiments.evaluate", "--config=experiments/configs/eval_heldout.py",
                 f"--config.suite={tmp_path}", f"--config.out={tmp_path}/o",
                 "--config.agents.oracle.voice=x")
  assert r.returncode == 2 and "--config.agents.oracle.voice" in r.stderr


@pytest.mark.integration
def test_evaluate_reads_a_bare_fdbench_v1_layout(tmp_path, run_module):
  """Task folders directly under the suite, as Full-Duplex-Bench publishes them."""
  from tests.eval import fixtures
  bare = tmp_path / "release"
  d = bare / "candor_turn_taking" / "1"
  fixtures.write_wav(str(d / "input.wav"), fixtures.user_audio(5.0, [(0.3, 1.8)]))
  fixtures.write_json(str(d / "turn_taking.json"),
                      [{"text": "[TURN-TAKING]", "timestamp": [1.8, 2.2]}])
  r = run_module("experiments.evaluate", "--config=experiments/configs/eval_heldout.py",
                 f"--config.suite={bare}", f"--config.out={tmp_path / 'out'}",
                 "--config.run_agents=oracle", "--config.replay.progress=False",
                 "--config.replay.tts=placeholder", "--config.score.timing=events")
  assert r.returncode == 0, r.stderr
  printed = json.loads(r.stdout.strip().splitlines()[-1])
  assert printed["oracle"]["fdb_v1"]["turn_taking/n"] == 1
  assert printed["oracle"]["fdb_v1"]["turn_taking/TOR"] == 1.0


@pytest.mark.integration
def test_score_of_an_empty_benchmark_folder_fails_naming_it(tmp_path, run_module):
  empty = tmp_path / "fdb_v1"
  empty.mkdir()
  r = run_module("experiments.score", "--benchmark=fdb_v1", f"--references={empty}",
                 f"--predictions={empty}")
  assert r.returncode == 2 and f"{empty}" in r.stderr and "holds no samples" in r.stderr


def test_model_agent_sampling_settings_reach_its_session_config():
  """temperature and flow_temperature override the session's; negatives are refused."""
  built = agents_lib.build_agent("model", {"config": "tiny", "temperature": 0.7,
                                           "flow_temperature": 0.25})
  session = built.config.session
  assert (session.temperature, session.flow_temperature) == (0.7, 0.25)
  default = agents_lib.build_agent("model", {"config": "tiny"}).config.session
  assert default.flow_temperature == 1.0
  with pytest.raises(ValueError, match="flow_temperature must be >= 0"):
    agents_lib.build_agent("model", {"config": "tiny", "flow_temperature": -1.0})
