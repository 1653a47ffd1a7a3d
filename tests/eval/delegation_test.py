"""Delegation: the loader (background text events), the replay feeding background
text per chunk, the model agent's control tokens, the scorer (hand-made cases,
each with a companion that must fail), the oracle perfect, the cascade a
structural zero."""

import inspect
import json
import os

import numpy as np
import pytest

from eval import loaders
from eval.agents import make_agent
from eval.agents.base import CHUNK_SAMPLES, Agent, OutputChunk
from eval.events import CONTROL, TextEvent, read_events
from eval.predictions import Prediction
from eval.replay import ReplayConfig, replay, replay_sample
from eval.scoring import delegation
from tests.eval import fixtures

CFG = ReplayConfig(timeline=False, progress=False)


def _loaded(tmp_path, tasks=None):
  root = fixtures.make_delegation(str(tmp_path / "suite"), tasks)
  return root, loaders.load("delegation", root)


class _S:  # a minimal sample for the scorer
  key, task = "d", ""

  def __init__(self, **ref):
    self.reference = {"question_end": 1.8, "delegate_window": (1.8, 3.0),
                      "answer": "it is 21 degrees and sunny in paris",
                      "answer_window": (4.5, 8.0), **ref}


def _score(events):
  return delegation.score([_S()], lambda s: Prediction(events)).per_sample[0]


def _ctl(t):
  return TextEvent(t, t, "<delegate>", CONTROL)


def test_loader_reads_task_json_and_background_events(tmp_path):
  _, res = _loaded(tmp_path)
  assert res.errors == [] and [s.id for s in res.samples] == ["d0", "d1"]
  s = res.samples[0]
  assert s.benchmark == "delegation" and s.background_text == [(3.4, "weather: paris 21C sunny")]
  assert s.user_text == [] and s.question.startswith("what is the weather")
  assert s.reference["delegate_window"] == (1.8, 3.0)
  assert s.reference["answer_window"] == (4.5, 8.0)
  # input.wav holds 4 s of question; the replay lasts the task's 8 s.
  assert s.duration == pytest.approx(8.0) and len(s.load_audio()) == 8 * 16000


def test_loader_bad_task_json_is_a_per_sample_error(tmp_path):
  bad = {"d0": dict(fixtures.DELEGATION_TASKS["d0"], background=[[1.0]]),
         "d1": dict(fixtures.DELEGATION_TASKS["d1"], question_end=5.0),  # past input.wav
         "d2": {k: v for k, v in fixtures.DELEGATION_TASKS["d0"].items() if k != "answer"}}
  _, res = _loaded(tmp_path, bad)
  assert res.samples == []
  msgs = {e.key: e.message for e in res.errors}
  assert "background[0]" in msgs["d0"]
  assert "question_end" in msgs["d1"] and "past the end" in msgs["d1"]
  assert "lacks field 'answer'" in msgs["d2"]


class _Listener(Agent):
  """Records the background text of every chunk."""
  name = "listener"

  def reset(self, sample):
    self.heard = {}

  def step(self, chunk):
    if chunk.background_text:
      self.heard[chunk.index] = chunk.background_text
    return OutputChunk.silence()


def test_replay_feeds_background_text_in_its_chunk(tmp_path):
  _, res = _loaded(tmp_path)
  agent = _Listener()
  replay_sample(agent, res.samples[0], CFG)
  assert agent.heard == {17: "weather: paris 21C sunny"}  # 3.4 s = chunk 17


class _FakeSessions:
  """Stands in for interaction.session.Sessions: records what each step got and
  says `<delegate>` (a control event) in turn 10."""

  def __init__(self):
    from interaction.layout import LayoutSpec
    from experiments.configs import tiny
    self.spec = LayoutSpec.from_config(tiny.get_config().layout)
    self.turn, self.calls = 0, []

  def reset(self):
    self.turn, self.calls = 0, []

  def step(self, audio, *, video=None, user_text=None, background_text=None):
    import types
    self.calls.append(background_text)
    t0 = (self.turn + 1) * 0.2
    ev = [{"t_start": t0, "t_end": t0 + 0.2, "text": "<delegate>", "stream": "control"}] \
        if self.turn == 10 else []
    self.turn += 1
    return types.SimpleNamespace(audio=np.zeros((1, CHUNK_SAMPLES), np.float32), events=[ev])


def test_model_agent_feeds_background_text_and_records_control_tokens(tmp_path):
  from eval.agents.model import ModelAgent
  from interaction.session import Sessions
  # The session API takes background text per step (the fake mirrors it).
  assert "background_text" in inspect.signature(Sessions.step).parameters
  from experiments.configs import tiny
  agent = ModelAgent.__new__(ModelAgent)  # no model: the fake session answers
  agent.sessions = _FakeSessions()
  agent.config, agent.checkpoint, agent.vocoder = tiny.get_config(), None, None
  _, res = _loaded(tmp_path)
  out = str(tmp_path / "out")
  replay(agent, res.samples[:1], out, CFG)
  calls = agent.sessions.calls
  assert calls[17] == "weather: paris 21C sunny"
  assert [c for i, c in enumerate(calls) if i != 17] == [None] * (len(calls) - 1)
  (ev,) = read_events(os.path.join(out, "d0", "events.jsonl"))
  assert (ev.text, ev.stream, ev.t_start) == ("<delegate>", CONTROL, pytest.approx(2.2))
  assert _score([ev])["delegated"]


def test_delegate_inside_the_window_scores_and_outside_gives_zero():
  assert _score([_ctl(2.0)])["delegated"]
  assert _score([_ctl(1.8)])["delegated"]      # the window's start, the question's end
  # Companions: outside the window (late, or before it opens), or not a control event.
  assert not _score([_ctl(3.5)])["delegated"]
  assert not _score([TextEvent(2.0, 2.2, "<delegate>")])["delegated"]  # spoken, not control
  res = delegation.score([_S()], lambda s: Prediction([_ctl(3.5)]))
  assert res.metrics["accuracy"] == 0.0


def test_delegating_before_the_question_ends_is_a_miss():
  row = _score([_ctl(1.0), _ctl(2.0)])
  assert row["early_delegate"] and not row["delegated"]
  # Window opening before the question ends: in the window but too early still fails.
  early = delegation.score([_S(delegate_window=(1.0, 3.0))],
                           lambda s: Prediction([_ctl(1.2)])).per_sample[0]
  assert not early["delegated"] and early["early_delegate"]


def test_answer_needs_half_the_content_words_inside_the_window():
  said = lambda t, text: TextEvent(t, t + 1.0, text)  # noqa: E731
  # Content words: 21, degrees, sunny, paris.
  assert _score([said(5.0, "twenty one degrees and sunny")])["answered"]        # 3/4
  assert _score([said(5.0, "paris is at 21")])["answered"]                      # 2/4
  # Companions: one content word of four; the right words before the window opens.
  assert not _score([said(5.0, "it is sunny")])["answered"]
  assert not _score([said(3.0, "it is 21 degrees and sunny in paris")])["answered"]
  # The window bounds the answer's start: an answer begun in it counts in full.
  late_start = [said(7.5, "it is"), said(8.6, "21 degrees and sunny")]  # joined: 0.1 s gap
  assert _score(late_start)["answered"]
  # An utterance begun before the window: only its words inside the window count.
  assert not _score([said(3.6, "paris sunny and it is 21 degrees")])["answered"]


def test_audio_timing_takes_the_delegate_from_events_and_words_from_the_recogniser():
  own = [_ctl(2.0), TextEvent(5.0, 6.0, "it is 21 degrees and sunny in paris")]
  heard = [TextEvent(5.0, 5.2, "twenty"), TextEvent(5.2, 5.4, "one"),
           TextEvent(5.4, 5.8, "degrees")]  # the recogniser's words: 2 of 4
  pred = Prediction(heard, timing="audio", text_events=own)
  row = delegation.score([_S()], lambda s: pred).per_sample[0]
  assert row["delegated"] and row["answer_recall"] == 0.5 and row["answered"]


def test_oracle_scores_one_and_the_cascade_is_a_structural_zero(tmp_path):
  from eval.run import run_suite
  suite = str(tmp_path / "suite")
  fixtures.make_delegation(suite)
  agents = {"oracle": make_agent("oracle", tts_backend="placeholder"),
            "vad_cascade": make_agent("vad_cascade", tts_backend="placeholder")}
  out = str(tmp_path / "out")
  res = run_suite(suite, agents, out, timing="events", replay_config=CFG)
  o, c = res["oracle"]["delegation"], res["vad_cascade"]["delegation"]
  assert o["errors"] == [] and c["errors"] == []
  assert o["metrics"]["accuracy"] == 1.0 and o["metrics"]["answer_accuracy"] == 1.0
  assert o["metrics"]["n"] == 2 and o["metric_flags"] == {}
  assert c["metrics"]["accuracy"] == 0.0 and c["metrics"]["answer_accuracy"] == 0.0
  assert c["metric_flags"]["accuracy"] == {"structural_zero": True, "lacks": ["delegation"]}
  assert c["metric_flags"]["answer_accuracy"]["lacks"] == ["background_text"]
  report = json.load(open(os.path.join(out, "report.json")))
  assert report["results"]["vad_cascade"]["delegation"]["metric_flags"]["accuracy"][
      "structural_zero"] is True
  md = open(os.path.join(out, "report.md")).read()
  row = next(line for line in md.splitlines() if line.startswith("| accuracy |"))
  assert row == "| accuracy | 1.000 | 0 (structural) |"
