"""The grain pipeline: batch contract, exact resume, disjoint shards, bad input."""

import json
import pathlib

import numpy as np
import pytest

from data_pipeline import episode as episode_lib
from data_pipeline import pipeline
from data_pipeline import synthetic
from interaction.tokenizer import TOKENIZER


@pytest.fixture
def make_config(base_config):
  def make(source="synthetic", path="", turns=6, batch=3, video=False):
    c = base_config()
    c.data.source, c.data.path = source, path
    c.data.turns, c.data.batch_size = turns, batch
    c.layout.video.enabled = video
    c.layout.video.height = c.layout.video.width = 80
    return c
  return make


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("video", [False, True])
def test_synthetic_batches_follow_the_layout_contract(video, make_config):
  config = make_config(video=video)
  batch = next(pipeline.make_train_iter(config))
  expected = pipeline.batch_spec(config)
  assert set(batch) == set(expected)
  for k, (shape, dtype) in expected.items():
    assert batch[k].shape == shape, k
    assert batch[k].dtype == dtype, k
  assert batch["user_audio"].min() >= 0 and batch["user_audio"].max() < 16
  assert (batch["model_mel"] >= -7).all() and (batch["model_mel"] <= 2).all()
  # The synthetic user speaks: some audio is above the silence bin.
  assert (batch["user_audio"] > 0).any()
  assert np.isin(batch["user_text"], [TOKENIZER.empty_id] + list(range(256))).all()
  if video:
    assert batch["video_present"].any()
    assert not batch["video_present"][~batch["turn_mask"]].any()


def _run(config, steps, restore_at=None):
  it = pipeline.make_train_iter(config)
  out = []
  for k in range(steps):
    if k == restore_at:
      state = json.loads(json.dumps(it.get_state()))  # must survive JSON
      it = pipeline.make_train_iter(config)
      it.set_state(state)
    out.append(next(it))
  return out


@pytest.mark.parametrize("source", ["synthetic", "episodes"])
def test_restored_iterator_continues_exactly(source, tiny_episodes, make_config):
  config = make_config(source, str(tiny_episodes) if source == "episodes" else "")
  straight = _run(config, 6)
  resumed = _run(config, 6, restore_at=3)
  for a, b in zip(straight, resumed):
    _assert_batches_equal(a, b)


def test_resume_check_can_fail(make_config):
  # The companion of the exact-resume test: a fresh iterator (no set_state)
  # does not give batch k+1, so the comparison above has teeth.
  config = make_config()
  it = pipeline.make_train_iter(config)
  for _ in range(3):
    next(it)
  later = next(it)
  fresh = next(pipeline.make_train_iter(config))
  assert not np.array_equal(later["user_audio"], fresh["user_audio"])


def test_orbax_round_trip(tmp_path, make_config):
  import orbax.checkpoint as ocp
  config = make_config()
  it = pipeline.make_train_iter(config)
  next(it)
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckpt:
    ckpt.save(tmp_path / "data", args=pipeline.orbax_save_args(it))
    state = ckpt.restore(tmp_path / "data", args=pipeline.orbax_restore_args())
  want = next(it)
  it2 = pipeline.make_train_iter(config)
  it2.set_state(state)
  _assert_batches_equal(want, next(it2))


def test_two_processes_get_disjoint_shards(tiny_episodes, make_config):
  seen = []
  for p in range(2):
    config = make_config("episodes", str(tiny_episodes), batch=1)
    config.data.crop = "start"
    it = pipeline.make_train_iter(config, process_index=p, process_count=2)
    # Each fixture episode types its own letter at t=0 (see tiny_episodes).
    seen.append({int(next(it)["user_text"][0, 0, 0]) for _ in range(9)})
  assert len(seen[0]) == 3 and len(seen[1]) == 3
  assert not seen[0] & seen[1]


def test_two_processes_synthetic_disjoint(make_config):
  a = pipeline.make_train_iter(make_config(batch=4), process_index=0, process_count=2)
  b = pipeline.make_train_iter(make_config(batch=4), process_index=1, process_count=2)
  ba, bb = next(a), next(b)
  for i in range(4):
    for j in range(4):
      assert not np.array_equal(ba["user_audio"][i], bb["user_audio"][j])


def test_bad_process_index_is_a_clear_error(make_config):
  with pytest.raises(ValueError, match="process_index"):
    pipeline.make_train_iter(make_config(), process_index=2, process_count=2)


def test_bad_source_is_a_clear_error(make_config):
  with pytest.raises(ValueError, match="data.source"):
    pipeline.make_train_iter(make_config("nope"))


@pytest.fixture(scope="module")
def tiny_episodes(tmp_path_factory) -> pathlib.Path:
  """Six short episodes on disk, each typing its own letter at t=0."""
  root = tmp_path_factory.mktemp("episodes")
  for i in range(6):
    ep = synthetic.random_episode(7, i, turns=6, turn_seconds=0.2,
                                  sample_rate=16000)
    ep.user_text = [{"t": 0.0, "text": chr(ord("A") + i)}]
    episode_lib.write_episode(root / "turn_taking" / f"ep{i}", ep)
  return root


def _corrupt(root: pathlib.Path) -> dict[str, pathlib.Path]:
  import soundfile
  bad = {}
  for name in ("corrupt", "truncated", "empty", "stereo", "video", "json"):
    src = root / "turn_taking" / "ep0"
    dst = root / "bad" / name
    dst.mkdir(parents=True)
    for f in src.iterdir():
      (dst / f.name).write_bytes(f.read_bytes())
    bad[name] = dst
  (bad["corrupt"] / "user.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
  data = (bad["truncated"] / "user.wav").read_bytes()
  (bad["truncated"] / "user.wav").write_bytes(data[:len(data) // 2])
  soundfile.write(bad["empty"] / "user.wav", np.zeros(0, np.float32), 16000,
                  subtype="PCM_16")
  soundfile.write(bad["stereo"] / "model.wav", np.zeros((3200, 2), np.float32),
                  16000, subtype="PCM_16")
  (bad["json"] / "episode.json").write_text("{not json")
  doc = json.loads((bad["video"] / "episode.json").read_text())
  doc["video"] = {"file": "video.npz", "fps": 5.0}
  (bad["video"] / "episode.json").write_text(json.dumps(doc))
  (bad["video"] / "video.npz").write_bytes(b"not a zip")
  return bad


def test_bad_input_is_skipped_counted_and_logged_once(tmp_path, tiny_episodes, caplog, make_config):
  root = tmp_path / "data"
  for f in tiny_episodes.rglob("*"):
    if f.is_file():
      dst = root / f.relative_to(tiny_episodes)
      dst.parent.mkdir(parents=True, exist_ok=True)
      dst.write_bytes(f.read_bytes())
  bad = _corrupt(root)
  config = make_config("episodes", str(root), batch=4, video=True)
  it = pipeline.make_train_iter(config)
  with caplog.at_level("WARNING"):
    for _ in range(12):  # 48 good examples = 8 epochs of the 6 good episodes
      batch = next(it)
      assert batch["turn_mask"].any(axis=1).all()
  stats = it.stats()
  # Each finished epoch meets the 6 bad ones; the 8th may stop part-way.
  assert 7 * len(bad) <= stats["skipped"] <= 8 * len(bad), stats
  assert stats["examples"] == 48
  assert {"AudioError", "VideoError", "EpisodeError"} <= set(stats["skipped_by_kind"])
  for path in bad.values():
    assert sum(str(path) in r.getMessage() for r in caplog.records) == 1, path


def test_all_bad_input_stops_with_a_clear_error(tmp_path, tiny_episodes, monkeypatch, make_config):
  root = tmp_path / "data"
  (root / "x" / "e").mkdir(parents=True)
  (root / "x" / "e" / "episode.json").write_text("{}")
  monkeypatch.setattr(pipeline, "_MAX_CONSECUTIVE_SKIPS", 20)
  with pytest.raises(RuntimeError, match="bad episodes in a row"):
    next(pipeline.make_train_iter(make_config("episodes", str(root), batch=1)))
