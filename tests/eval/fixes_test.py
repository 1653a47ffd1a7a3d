"""Harness defects that benchmark folders written outside the project exposed
(issue 13), one test each; every test fails without its fix."""

import os

import numpy as np
import pytest

from eval import loaders
from eval.agents import make_agent
from eval.judges import LLMJudge, RuleJudge
from eval.replay import ReplayConfig, replay, replay_sample
from eval.score import score_benchmark
from tests.eval import fixtures

CFG = ReplayConfig(timeline=False, progress=False)


def _turn_taking(root, sid, audio, t_turn, output_words=None, with_input=True):
  d = os.path.join(root, sid)
  if with_input:
    fixtures.write_wav(os.path.join(d, "input.wav"), audio)
  fixtures.write_json(os.path.join(d, "turn_taking.json"),
                      [{"text": "[TURN-TAKING]", "timestamp": [t_turn, t_turn + 0.4]}])
  if output_words is not None:
    fixtures.write_json(os.path.join(d, "output.json"), {
        "text": " ".join(w for _, _, w in output_words),
        "chunks": [{"text": w, "timestamp": [a, b]} for a, b, w in output_words]})
  return d


def _order_suite(tmp_path):
  """A ends in digital silence; B opens with quiet noise, then speech at 3 s."""
  rng = np.random.default_rng(0)
  a = fixtures.user_audio(5.0, [(0.3, 1.5)])
  b = fixtures.user_audio(6.0, [(3.0, 4.2)]) + (0.003 * rng.standard_normal(96000)).astype(np.float32)
  root = str(tmp_path / "fdb_v1" / "turn_taking")
  _turn_taking(root, "a", a, 1.5)
  _turn_taking(root, "b", b, 4.2)
  return {s.id: s for s in loaders.load("fdb_v1", str(tmp_path / "fdb_v1")).samples}


def _agents(tmp_path, samples):
  recorded = str(tmp_path / "recorded")
  replay(make_agent("oracle", tts_backend="placeholder"), list(samples.values()), recorded, CFG)
  return {"silent": lambda: make_agent("silent"),
          "oracle": lambda: make_agent("oracle", tts_backend="placeholder"),
          # aggressiveness 2: the setting whose order dependence the issue measured
          "vad_cascade(webrtc 2)": lambda: make_agent("vad_cascade", tts_backend="placeholder",
                                                      vad="webrtc", aggressiveness=2),
          "vad_cascade(default)": lambda: make_agent("vad_cascade", tts_backend="placeholder"),
          "vad_cascade(silero)": lambda: make_agent("vad_cascade", tts_backend="placeholder",
                                                    vad="silero"),
          "recorded": lambda: make_agent("recorded", recorded_dir=recorded)}


def test_every_agent_scores_a_sample_the_same_alone_and_after_another(tmp_path):
  # Before the fix the cascade kept one webrtcvad across samples: after A's
  # trailing silence it heard B's quiet noise as speech and opened B's turn at 0 s.
  samples = _order_suite(tmp_path)
  for name, make in _agents(tmp_path, samples).items():
    for first, then in (("a", "b"), ("b", "a")):
      alone_audio, alone_events, _ = replay_sample(make(), samples[then], CFG)
      agent = make()
      replay_sample(agent, samples[first], CFG)
      audio, events, _ = replay_sample(agent, samples[then], CFG)
      assert events == alone_events, (name, first, then)
      assert np.array_equal(audio, alone_audio), (name, first, then)


def test_cascade_turn_opens_at_the_speech_not_at_zero_after_a_silent_ending(tmp_path):
  samples = _order_suite(tmp_path)
  agent = make_agent("vad_cascade", tts_backend="placeholder", vad="webrtc", aggressiveness=2)
  replay_sample(agent, samples["a"], CFG)
  replay_sample(agent, samples["b"], CFG)
  assert agent.turns[0]["turn"][0] == pytest.approx(3.0, abs=0.15)


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_output_json_times_are_per_sample_errors(tmp_path, bad):
  root = str(tmp_path / "fdb_v1" / "turn_taking")
  audio = fixtures.user_audio(5.0, [(0.3, 1.8)])
  good = [(2.1, 2.5, "well"), (2.6, 3.0, "that"), (3.1, 3.6, "depends")]
  _turn_taking(root, "ok", audio, 1.8, good)
  d = _turn_taking(root, "bad", audio, 1.8, good)
  # json.dump cannot write NaN into a chunk list the way a buggy ASR dump does.
  with open(os.path.join(d, "output.json"), "w") as f:
    f.write('{"text": "well that depends", "chunks": [{"text": "well", "timestamp": [%s, 2.5]},'
            ' {"text": "that", "timestamp": [2.6, 3.0]}, {"text": "depends",'
            ' "timestamp": [3.1, 3.6]}]}' % bad)
  res = score_benchmark("fdb_v1", str(tmp_path / "fdb_v1"), str(tmp_path / "fdb_v1"))
  assert res.metrics["turn_taking/n"] == 1
  assert res.metrics["turn_taking/latency_s"] == pytest.approx(0.3)  # not pulled to 0 by NaN
  assert len(res.errors) == 1 and res.errors[0]["key"] == "turn_taking/bad"
  assert "not a finite time" in res.errors[0]["error"]


def test_reference_past_the_end_of_the_input_is_a_per_sample_error(tmp_path):
  root = str(tmp_path / "fdb_v1" / "turn_taking")
  _turn_taking(root, "ok", fixtures.user_audio(5.0, [(0.3, 1.8)]), 1.8)
  _turn_taking(root, "cut", fixtures.user_audio(3.0, [(0.3, 2.9)]), 4.5)  # truncated input
  res = loaders.load("fdb_v1", str(tmp_path / "fdb_v1"))
  assert [s.id for s in res.samples] == ["ok"]
  assert len(res.errors) == 1 and res.errors[0].key == "turn_taking/cut"
  assert "past the end of input.wav" in res.errors[0].message
  summary = replay(make_agent("silent"), res.samples, str(tmp_path / "out"), CFG, res.errors)
  assert summary["done"] == 1 and len(summary["errors"]) == 1
  scored = score_benchmark("fdb_v1", str(tmp_path / "fdb_v1"), str(tmp_path / "out"),
                           timing="events")
  assert scored.metrics["turn_taking/n"] == 1
  assert [e["key"] for e in scored.errors] == ["turn_taking/cut"]


@pytest.mark.parametrize("as_root", ["task", "benchmark"])
def test_fdbench_task_folder_without_input_wav_scores(tmp_path, as_root):
  """Full-Duplex-Bench's scorers need only output.json and the task json."""
  bench = tmp_path / "fdb_v1"
  task = str(bench / "candor_turn_taking")
  _turn_taking(task, "7", None, 1.8, [(2.1, 2.5, "well"), (2.6, 3.0, "that"),
                                      (3.1, 3.6, "depends")], with_input=False)
  root = task if as_root == "task" else str(bench)
  res = score_benchmark("fdb_v1", root, root)
  assert res.metrics["turn_taking/n"] == 1 and res.metrics["turn_taking/TOR"] == 1.0
  assert res.metrics["turn_taking/latency_s"] == pytest.approx(0.3)
  assert res.errors == []


def test_empty_benchmark_folder_is_an_error_naming_it(tmp_path):
  empty = tmp_path / "fdb_v1"
  empty.mkdir()
  with pytest.raises(ValueError, match=f"{empty}.*holds no samples"):
    score_benchmark("fdb_v1", str(empty), str(empty))
  with pytest.raises(ValueError, match="holds no samples"):
    loaders.load("timespeak", str(empty))


def test_a_load_error_is_reported_once(tmp_path):
  # The task folder is the root and is not named after its task: its load error
  # used to come back a second time as "prediction for an unknown sample id".
  task = str(tmp_path / "candor_turn_taking")
  words = [(2.1, 2.5, "well"), (2.6, 3.0, "that"), (3.1, 3.6, "depends")]
  _turn_taking(task, "1", fixtures.user_audio(5.0, [(0.3, 1.8)]), 1.8, words)
  d = _turn_taking(task, "2", fixtures.user_audio(5.0, [(0.3, 1.8)]), 1.8, words)
  with open(os.path.join(d, "turn_taking.json"), "w") as f:
    f.write("{not json")
  res = score_benchmark("fdb_v1", task, task)
  assert res.metrics["turn_taking/n"] == 1
  assert len(res.errors) == 1, res.errors
  assert res.errors[0]["key"] == "candor_turn_taking/2"
  assert "malformed JSON" in res.errors[0]["error"]


def test_bare_fdbench_v1_layout_is_discovered(tmp_path):
  bare = tmp_path / "fdb_release"
  _turn_taking(str(bare / "candor_turn_taking"), "1", fixtures.user_audio(5.0, [(0.3, 1.8)]), 1.8)
  d = bare / "candor_pause_handling" / "2"
  fixtures.write_wav(str(d / "input.wav"), fixtures.user_audio(4.0, [(0.2, 1.2), (2.2, 3.0)]))
  fixtures.write_json(str(d / "pause.json"), [{"text": "[PAUSE]", "timestamp": [1.2, 2.2]}])
  found = loaders.discover(str(bare))
  assert found == {"fdb_v1": str(bare)}
  res = loaders.load("fdb_v1", found["fdb_v1"])
  assert {s.task for s in res.samples} == {"turn_taking", "pause_handling"} and not res.errors
  # A folder of benchmark folders is read as before; an unrelated folder finds nothing.
  fixtures.make_timespeak(str(tmp_path / "suite"))
  assert set(loaders.discover(str(tmp_path / "suite"))) == {"timespeak"}
  (tmp_path / "other" / "x").mkdir(parents=True)
  assert loaders.discover(str(tmp_path / "other")) == {}


def test_rule_judge_rates_an_echo_of_the_users_words_irrelevant(tmp_path):
  j = RuleJudge()
  turn = "hold on, I have another question"
  assert j.interruption_rating(turn, turn, "tell me about paris") == 0
  assert j.interruption_rating(turn, f"Okay. {turn}?", "") == 0
  assert j.interruption_rating(turn, "Sure, go ahead: another question.", "") == 5
  assert j.interruption_rating(turn, "the sky looks blue because", "") == 1
  # Through the scorer: an echo of the interruption rates 0, a reply does not.
  refs = fixtures.make_fdb_v1(str(tmp_path / "refs"))
  for reply, rating in (("what about the weather there", 0),
                        ("sure, the weather there is sunny and warm", 5)):
    pred = tmp_path / f"pred{rating}"
    d = pred / "user_interruption" / "u0"
    words = [(3.2 + 0.4 * i, 3.5 + 0.4 * i, w) for i, w in enumerate(reply.split())]
    fixtures.write_json(str(d / "output.json"), {
        "text": reply, "chunks": [{"text": w, "timestamp": [a, b]} for a, b, w in words]})
    res = score_benchmark("fdb_v1", refs, str(pred))
    row = next(r for r in res.per_sample if r["task"] == "user_interruption")
    assert row["TOR"] == 1 and row["rating"] == rating


def test_llm_judge_gets_the_published_interruption_prompt():
  seen = []

  def fake(system, user):
    seen.append((system, user))
    return "Analysis: it repeats.\nI would rate the AI's response as 1."
  j = LLMJudge(fake, "fake")
  assert j.interruption_rating("stop", "stop", "ctx") == 1
  assert "interrupting turn" in seen[0][0] and "User interrupting turn: stop" in seen[0][1]
