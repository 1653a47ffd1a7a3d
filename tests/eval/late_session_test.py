"""The late-session column (eval/late.py): FD-bench turn-taking and pause samples
replayed after earlier conversation in one session, scored on the sample's part
with its times shifted back; the companion shows that without the shift the
same replay mis-scores."""

import glob
import json
import os

import numpy as np
import pytest

from eval import late, loaders
from eval.agents import make_agent
from eval.events import read_events, write_events
from eval.replay import ReplayConfig, replay, replay_sample
from eval.samples import LoadResult
from eval.score import score_benchmark
from interaction import audio_io
from tests.eval import fixtures

CFG = ReplayConfig(timeline=False, progress=False)


def _suite(tmp_path):
  """Two turn-taking samples (a, b: 3 s each) and one pause sample (p: 4 s)."""
  root = tmp_path / "suite" / "fdb_v1"
  for sid, speech, t in (("a", [(0.3, 1.5)], 1.5), ("b", [(0.4, 1.6)], 1.6)):
    d = root / "turn_taking" / sid
    fixtures.write_wav(str(d / "input.wav"), fixtures.user_audio(3.0, speech))
    fixtures.write_json(str(d / "turn_taking.json"),
                        [{"text": "[TURN-TAKING]", "timestamp": [t, t + 0.4]}])
  d = root / "pause_handling" / "p"
  fixtures.write_wav(str(d / "input.wav"), fixtures.user_audio(4.0, [(0.2, 1.2), (2.2, 3.0)]))
  fixtures.write_json(str(d / "pause.json"), [{"text": "[PAUSE]", "timestamp": [1.2, 2.2]}])
  return str(root), loaders.load("fdb_v1", str(root))


def test_prefix_is_the_other_turn_taking_samples_in_whole_chunks(tmp_path):
  _, res = _suite(tmp_path)
  by = {s.id: s for s in late.late_samples(res.samples, 10.0, gap_s=1.0)}
  assert set(by) == {"a", "b", "p"}
  # One clip = 3 s of audio + 1 s gap = 4 s (whole chunks); >= 10 s -> three clips.
  assert [c.id for _, c in by["a"].clips] == ["b", "b", "b"]      # never itself
  assert [c.id for _, c in by["p"].clips] == ["a", "b", "a"]      # cycled in key order
  assert by["a"].prefix_s == pytest.approx(12.0)
  a = by["a"]
  x, own, b = a.load_audio(), a.base.load_audio(), a.clips[0][1].load_audio()
  assert len(x) == 12 * 16000 + len(own) and a.duration == pytest.approx(15.0)
  assert np.array_equal(x[12 * 16000:], own)
  assert np.array_equal(x[:len(b)], b) and not np.any(x[len(b):4 * 16000])
  assert np.array_equal(x[4 * 16000:4 * 16000 + len(b)], b)
  # The agent sees the reference on the session clock; scoring keeps the base's.
  assert a.reference["turn"][0][0] == pytest.approx(1.5 + 12.0)
  assert a.base.reference["turn"][0][0] == pytest.approx(1.5)
  assert a.key == a.base.key == "turn_taking/a"
  assert late.late_samples(res.samples, 0.0) == []


def test_late_replay_scores_on_the_sample_clock_and_without_the_shift_it_does_not(tmp_path):
  root, res = _suite(tmp_path)
  samples = late.late_samples(res.samples, 6.0)
  prefix = {s.key: s.prefix_s for s in samples}
  assert all(p >= 6.0 for p in prefix.values())
  out = str(tmp_path / "late")
  replay(make_agent("oracle", tts_backend="placeholder"), samples, out, CFG)
  for s in samples:
    d = os.path.join(out, s.key)
    wav = audio_io.load_audio(os.path.join(d, "output.wav"))
    assert len(wav) == len(s.base.load_audio())  # cut to the sample's part
    meta = json.load(open(os.path.join(d, "meta.json")))
    assert meta["status"] == "done"
    assert meta["late_session"]["prefix_s"] == pytest.approx(s.prefix_s)
  bases = LoadResult([s.base for s in samples], [])
  scored = score_benchmark("fdb_v1", root, out, loaded=bases, timing="events")
  m = scored.metrics
  assert scored.errors == []
  assert m["turn_taking/TOR"] == 1.0 and m["turn_taking/latency_s"] == 0.0
  assert m["pause_handling/TOR"] == 0.0
  # Companion: the same session cut but not shifted back mis-scores the latency
  # (by the prefix's length).
  unshifted = str(tmp_path / "unshifted")
  for s in samples:
    d = os.path.join(out, s.key)
    session = read_events(os.path.join(d, "session_events.jsonl"))
    _, events = late.to_sample_clock(np.zeros(1), session, s.prefix_s, shift=False)
    os.makedirs(os.path.join(unshifted, s.key))
    write_events(os.path.join(unshifted, s.key, "events.jsonl"), events)
  wrong = score_benchmark("fdb_v1", root, unshifted, loaded=bases, timing="events").metrics
  lat = np.mean([prefix[k] for k in prefix if k.startswith("turn_taking")])
  assert wrong["turn_taking/latency_s"] == pytest.approx(lat)
  assert wrong["turn_taking/latency_s"] != m["turn_taking/latency_s"]


def test_the_agent_keeps_its_state_across_the_prefix(tmp_path):
  _, res = _suite(tmp_path)
  s = next(x for x in late.late_samples(res.samples, 6.0) if x.id == "a")
  agent = make_agent("vad_cascade", tts_backend="placeholder")
  _, session_events, _ = replay_sample(agent, s, CFG)
  # One session: the cascade answered the prefix's turns before the sample's own.
  assert len(agent.turns) == len(s.clips) + 1
  assert agent.turns[-1]["turn"][0] == pytest.approx(s.prefix_s + 0.3, abs=0.15)
  _, events = late.to_sample_clock(np.zeros(1), session_events, s.prefix_s)
  assert events and events[0].t_start >= 1.5 + 0.45  # its reply, on the sample's clock


def test_run_suite_adds_the_late_column_resumably(tmp_path):
  from eval.run import run_suite
  root, _ = _suite(tmp_path)
  suite = os.path.dirname(root)
  out = str(tmp_path / "out")
  agents = {"oracle": make_agent("oracle", tts_backend="placeholder")}
  res = run_suite(suite, agents, out, timing="events", replay_config=CFG, late_session_s=6.0)
  plain, lt = res["oracle"]["fdb_v1"], res["oracle"]["fdb_v1@late"]
  assert lt["benchmark"] == "fdb_v1@late" and lt["errors"] == []
  assert lt["metrics"] == plain["metrics"]  # the oracle is as good late as fresh
  assert "late session" in lt["notes"][0]
  metas = glob.glob(os.path.join(out, "oracle", "fdb_v1@late_6s", "*", "*", "meta.json"))
  assert len(metas) == 3
  md = open(os.path.join(out, "report.md")).read()
  assert "## fdb_v1@late" in md and "| metric | oracle · plain | oracle · late |" in md
  assert json.load(open(os.path.join(out, "report.json")))["meta"]["late_session_s"] == 6.0
  stamps = {m: os.stat(m).st_mtime_ns for m in metas}
  again = run_suite(suite, agents, out, timing="events", replay_config=CFG, late_session_s=6.0)
  assert again["oracle"]["fdb_v1@late"]["metrics"] == lt["metrics"]
  assert {m: os.stat(m).st_mtime_ns for m in metas} == stamps  # resumed, not replayed
  with pytest.raises(ValueError, match="late_session_s"):
    run_suite(suite, agents, out, late_session_s=-1.0)


def test_late_column_without_turn_taking_samples_is_an_error_not_a_silent_gap(tmp_path):
  from eval.run import run_late
  root = fixtures.make_fdb_v1(str(tmp_path))
  res = loaders.load("fdb_v1", root)
  only = LoadResult([s for s in res.samples if s.task == "user_interruption"], [])
  r = run_late(make_agent("silent"), only, root, str(tmp_path / "o"), 6.0, timing="events")
  assert r["metrics"] == {} and "no turn_taking or pause_handling" in r["errors"][0]["error"]


def test_eval_config_carries_the_late_session_seconds():
  from experiments import agents as agents_lib
  from experiments.configs import eval_heldout
  c = eval_heldout.get_config()
  assert c.late_session is False and c.late_session_s == 120.0
  assert agents_lib.late_session_seconds(c) == 0.0
  c.late_session = True
  assert agents_lib.late_session_seconds(c) == 120.0
  c.late_session_s = 0.0
  with pytest.raises(ValueError, match="late_session_s"):
    agents_lib.late_session_seconds(c)
