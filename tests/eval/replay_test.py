"""The harness, the agents, and the suite report (oracle perfect, cascade limited)."""

import json
import os

import numpy as np
import pytest

from eval import loaders
from eval.agents import make_agent
from eval.agents.base import CHUNK_SAMPLES, Agent, OutputChunk
from eval.events import TextEvent, read_events
from eval.replay import ReplayConfig, replay, replay_sample
from tests.eval import fixtures

CFG = ReplayConfig(timeline=False, progress=False)


def _samples(tmp_path, bench="timespeak"):
  root = fixtures.make_suite(str(tmp_path / "suite"))
  return loaders.load(bench, os.path.join(root, bench)).samples


class Echo(Agent):
  """Says 'hi' in every window and back-dates one event to test clamping."""
  name = "echo"

  def step(self, chunk):
    ev = [TextEvent(chunk.out_t, chunk.out_t + 0.1, "hi")]
    if chunk.index == 3:
      ev.append(TextEvent(0.0, 0.1, "backdated"))
    return OutputChunk(np.full(CHUNK_SAMPLES, 0.1, np.float32), ev)


def test_output_has_input_length_and_one_chunk_lag(tmp_path):
  s = _samples(tmp_path)[0]
  audio, events, stats = replay_sample(Echo(), s, CFG)
  assert len(audio) == len(s.load_audio())
  assert np.all(audio[:CHUNK_SAMPLES] == 0) and np.all(audio[CHUNK_SAMPLES:] == 0.1)
  assert events[0].t_start == pytest.approx(0.2)
  assert stats["clamped_events"] == 1
  back = [e for e in events if e.text == "backdated"][0]
  assert back.t_start == pytest.approx(0.8)  # moved to its window, not back in time


def test_replay_is_deterministic_and_resumable(tmp_path):
  samples = _samples(tmp_path)
  out1, out2 = str(tmp_path / "a"), str(tmp_path / "b")
  agent = make_agent("vad_cascade", tts_backend="placeholder")
  s1 = replay(agent, samples, out1, CFG)
  replay(agent, samples, out2, CFG)
  for s in samples:
    for name in ("events.jsonl", "output.wav"):
      assert (open(os.path.join(out1, s.key, name), "rb").read()
              == open(os.path.join(out2, s.key, name), "rb").read())
  assert s1["done"] == len(samples)
  again = replay(agent, samples, out1, CFG)
  assert again["skipped"] == len(samples) and again["done"] == 0


def test_agent_errors_are_per_sample(tmp_path):
  class Bad(Agent):
    name = "bad"

    def step(self, chunk):
      return OutputChunk(np.zeros(10, np.float32), [])
  samples = _samples(tmp_path)
  summary = replay(Bad(), samples, str(tmp_path / "o"), CFG)
  assert len(summary["errors"]) == len(samples)
  assert "expected 3200" in summary["errors"][0]["error"]
  meta = json.load(open(tmp_path / "o" / samples[0].key / "meta.json"))
  assert meta["status"] == "error"


def test_cascade_answers_after_turn_end_but_never_unprompted(tmp_path):
  samples = {s.id: s for s in _samples(tmp_path)}
  agent = make_agent("vad_cascade", tts_backend="placeholder", end_silence_s=0.6)
  _, events, _ = replay_sample(agent, samples["ts1"], CFG)  # spoken "what is 12 plus 30"
  # webrtcvad keeps flagging speech ~0.1 s after the voice stops (its hangover).
  assert agent.turns and agent.turns[0]["turn"][1] == pytest.approx(1.6, abs=0.15)
  first = events[0].t_start
  assert first >= 1.6 + 0.6  # the VAD's end-of-turn silence comes first
  from eval import text as text_lib
  assert "42" in text_lib.tokens(" ".join(e.text for e in events))
  # Video-only sample, no speech: the typed query is acknowledged, nothing more.
  ch = loaders.load("charades", str(tmp_path / "suite" / "charades")).samples[0]
  _, events, _ = replay_sample(agent, ch, CFG)
  words = " ".join(e.text for e in events).lower()
  assert "start" not in words.split() and "stop" not in words.split()


def test_recorded_agent_reproduces_a_replay(tmp_path):
  samples = _samples(tmp_path)
  first = str(tmp_path / "first")
  replay(make_agent("oracle", tts_backend="placeholder"), samples, first, CFG)
  again = str(tmp_path / "again")
  replay(make_agent("recorded", recorded_dir=first), samples, again, CFG)
  for s in samples:
    assert (read_events(os.path.join(first, s.key, "events.jsonl"))
            == read_events(os.path.join(again, s.key, "events.jsonl")))


@pytest.mark.integration
def test_suite_report_oracle_perfect_cascade_structurally_limited(tmp_path):
  from eval.run import run_suite
  suite = fixtures.make_suite(str(tmp_path / "suite"))
  agents = {"oracle": make_agent("oracle", tts_backend="placeholder"),
            "vad_cascade": make_agent("vad_cascade", tts_backend="placeholder",
                                      end_silence_s=0.6, response_delay_s=0.0)}
  out = str(tmp_path / "out")
  # The placeholder voice is no speech to Silero: score the words the agents say
  # they said (the audio source is tested with espeak in generate_roundtrip_test).
  res = run_suite(suite, agents, out, timing="events",
                  replay_config=ReplayConfig(timeline=True, progress=False))
  o = {b: r["metrics"] for b, r in res["oracle"].items()}
  c = {b: r["metrics"] for b, r in res["vad_cascade"].items()}
  assert o["timespeak"]["accuracy"] == 1.0 and o["cuespeak"]["accuracy"] == 1.0
  assert o["charades"]["mIoU"] == pytest.approx(100.0) and o["repcount"]["OBO"] == 1.0
  assert o["repcount"]["MAE"] == 0.0 and o["proactive_videoqa"]["PAUC@0"] == 100.0
  assert o["fdb_v1"]["pause_handling/TOR"] == 0 and o["fdb_v1"]["turn_taking/TOR"] == 1
  assert o["fdb_v1"]["turn_taking/latency_s"] == 0.0
  assert o["fdb_v1"]["user_interruption/rating"] == 5
  assert o["fdb_v1_5"]["user_backchannel/desired_rate"] == 1.0
  # The cascade: no timed speech, no cue reaction, no visual triggers.
  assert c["cuespeak"]["accuracy"] == 0.0
  assert c["charades"]["mIoU"] == 0.0
  assert c["proactive_videoqa"]["PAUC@0"] == 25.0
  assert c["fdb_v1"]["pause_handling/TOR"] == 1.0     # it talks into the pause
  assert c["fdb_v1"]["turn_taking/latency_s"] >= 0.6  # VAD end-of-turn silence
  # Delegation: the oracle delegates in the window and answers; the cascade cannot.
  assert o["delegation"]["accuracy"] == 1.0 and o["delegation"]["answer_accuracy"] == 1.0
  assert c["delegation"]["accuracy"] == 0.0
  # Its zeros where it cannot act are marked structural (its capabilities).
  flags = {b: r["metric_flags"] for b, r in res["vad_cascade"].items()}
  assert flags["cuespeak"]["accuracy"]["lacks"] == ["cue_reaction"]
  assert flags["charades"]["mIoU"]["lacks"] == ["vision"]
  assert flags["delegation"]["accuracy"]["lacks"] == ["delegation"]
  assert "accuracy" not in flags["timespeak"]  # it answers one TimeSpeak sample
  assert all(not r["metric_flags"] for r in res["oracle"].values())
  ts = {r["key"]: r["accuracy"] for r in res["vad_cascade"]["timespeak"]["per_sample"]}
  assert ts == {"ts0": 0.0, "ts1": 1.0}  # answers "12 plus 30"; cannot speak at 2 s later
  assert all(not r["errors"] for a in res.values() for r in a.values())
  md = open(os.path.join(out, "report.md")).read()
  assert "rule-based (offline)" in md and "| accuracy |" in md
  assert "| mIoU | 100.000 | 0 (structural) |" in md
  assert os.path.exists(os.path.join(out, "report.png"))
  assert os.path.exists(os.path.join(out, "oracle", "timespeak", "ts0", "timeline.png"))


def test_suite_benchmarks_must_exist(tmp_path):
  from eval.run import find_benchmarks
  suite = fixtures.make_suite(str(tmp_path / "suite"))
  assert set(find_benchmarks(suite, ["timespeak"])) == {"timespeak"}
  assert "charades" in find_benchmarks(suite)
  with pytest.raises(ValueError, match="nope"):
    find_benchmarks(suite, ["timespeak", "nope"])
  with pytest.raises(ValueError, match="no benchmark folders"):
    find_benchmarks(str(tmp_path / "empty"))
