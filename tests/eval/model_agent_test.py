"""The model agent in the harness: the tiny model (fresh parameters) replayed on
a generated sample and on wav files writes output.wav of the input's length,
silent for its first 200 ms, and well-formed events.jsonl."""

import functools
import json
import os

import numpy as np
import pytest
import soundfile

from eval import loaders
from eval.agents import make_agent
from eval.agents.base import CHUNK_SAMPLES
from eval.replay import ReplayConfig, replay, replay_to_dir
from eval.samples import Sample
from experiments.configs import tiny
from interaction import audio_io
from interaction.params import init_params

CFG = ReplayConfig(timeline=False, progress=False)


@functools.lru_cache(maxsize=None)
def _agent():
  """One agent for the module: the compiled session step is kept across samples."""
  config = tiny.get_config()
  return make_agent("model", config=config, params=init_params(config, 0))


def _check_events(path):
  rows = [json.loads(line) for line in open(path)]
  for ev in rows:
    assert set(ev) == {"t_start", "t_end", "text", "stream"}
  return rows


def test_model_agent_replays_a_generated_sample(tmp_path):
  from data_pipeline import generate
  # Charades-style: video frames (resized to tiny's 40x40) and a typed query.
  generate.generate(["visual_start_stop"], 1, tmp_path / "suite", split="heldout",
                    workers=1, progress=False)
  loaded = loaders.load("charades", str(tmp_path / "suite" / "charades"))
  assert len(loaded.samples) == 1 and not loaded.errors
  sample = loaded.samples[0]
  assert sample.video_path and sample.user_text
  out = tmp_path / "out"
  summary = replay(_agent(), loaded.samples, str(out), CFG)
  assert summary["done"] == 1 and not summary["errors"], summary["errors"]
  d = out / sample.key
  wav, sr = soundfile.read(d / "output.wav")
  assert sr == audio_io.SAMPLE_RATE and len(wav) == len(sample.load_audio())
  assert not np.any(wav[:CHUNK_SAMPLES])  # turn 0's output is spoken during turn 1
  assert np.any(wav[CHUNK_SAMPLES:])      # a fresh model still makes (noisy) sound
  for ev in _check_events(d / "events.jsonl"):
    assert ev["t_start"] >= 0.2 - 1e-9 and ev["t_start"] < sample.duration
  meta = json.load(open(d / "meta.json"))
  assert meta["status"] == "done" and meta["agent"]["name"] == "model"
  assert meta["agent"]["config"] == "tiny"


@pytest.mark.parametrize("sr,seconds", [(16000, 1.05), (22050, 0.7)])
def test_model_agent_on_a_wav_file_writes_outputs_of_the_input_length(tmp_path, sr,
                                                                        seconds):
  """What `python -m experiments.run_session` does with a file (any sample rate)."""
  n = int(sr * seconds)
  t = np.arange(n) / sr
  path = str(tmp_path / "in.wav")
  soundfile.write(path, 0.3 * np.sin(2 * np.pi * 200 * t), sr, subtype="PCM_16")
  sample = Sample(id="in", benchmark="session", task="", path=path, reference={},
                  audio_path=path)
  out_dir = tmp_path / "out"
  stats = replay_to_dir(_agent(), sample, str(out_dir),
                        ReplayConfig(timeline=True, progress=False))
  wave = audio_io.load_audio(path)
  out, out_sr = soundfile.read(out_dir / "output.wav")
  assert out_sr == 16000
  assert abs(len(out) / out_sr - n / sr) < 1.0 / 16000 * 2
  assert len(out) == len(wave)
  assert stats["steps"] == -(-len(wave) // CHUNK_SAMPLES)
  assert not np.any(out[:CHUNK_SAMPLES])
  assert len(_check_events(out_dir / "events.jsonl")) == stats["events"]
  assert os.path.getsize(out_dir / "timeline.png") > 0


def test_model_agent_needs_config_and_params():
  with pytest.raises(ValueError, match="config and its params"):
    make_agent("model", config=tiny.get_config(), params=None)


def test_model_agent_scores_a_sample_the_same_alone_and_after_another(tmp_path):
  """reset() opens a fresh session: nothing of the previous sample carries over."""
  from tests.eval import fixtures
  root = tmp_path / "fdb_v1" / "turn_taking"
  for sid, speech in (("a", [(0.2, 1.0)]), ("b", [(0.4, 1.2)])):
    d = root / sid
    fixtures.write_wav(str(d / "input.wav"), fixtures.user_audio(1.6, speech))
    fixtures.write_json(str(d / "turn_taking.json"),
                        [{"text": "[TURN-TAKING]", "timestamp": [speech[0][1], 1.4]}])
  samples = {s.id: s for s in loaders.load("fdb_v1", str(tmp_path / "fdb_v1")).samples}
  from eval.replay import replay_sample
  alone_audio, alone_events, _ = replay_sample(_agent(), samples["b"], CFG)
  replay_sample(_agent(), samples["a"], CFG)
  audio, events, _ = replay_sample(_agent(), samples["b"], CFG)
  assert events == alone_events
  np.testing.assert_allclose(audio, alone_audio, atol=1e-6)


def test_model_agent_takes_background_text_and_declares_its_capabilities(tmp_path):
  """A delegation sample through the real session: the tool result goes to the
  background_text stream in its chunk, and the tiny model,
  with video and background slots, claims every capability."""
  from eval.agents.base import CAPABILITIES
  from tests.eval import fixtures
  root = fixtures.make_delegation(str(tmp_path / "suite"))
  sample = loaders.load("delegation", root).samples[0]
  agent = _agent()
  assert agent.capabilities == CAPABILITIES
  from eval.replay import replay_sample
  seen = []
  step = agent.sessions.step

  def spy(*args, **kwargs):
    seen.append(kwargs.get("background_text"))
    return step(*args, **kwargs)
  agent.sessions.step = spy
  try:
    audio, events, stats = replay_sample(agent, sample, CFG)
  finally:
    del agent.sessions.step
  assert stats["steps"] == 40 and len(audio) == 8 * 16000
  assert [i for i, t in enumerate(seen) if t] == [17]
  assert all(e.stream in ("model_text", "control") for e in events)
