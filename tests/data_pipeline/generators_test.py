"""Synthetic episodes: ground truth agrees with the audio and video they contain."""

import csv
import json

import numpy as np
import pytest

from data_pipeline import episode as episode_lib
from data_pipeline import generate
from data_pipeline import generators
from data_pipeline import pipeline
from data_pipeline import tts

FAMILIES = list(generators.FAMILIES)
SAMPLES = [(f, i) for f in FAMILIES for i in range(2)]


@pytest.fixture(scope="module")
def samples():
  return {(f, i): generate.make_sample(f, "train", 0, i) for f, i in SAMPLES}


def energy_segments(wave, sr=16000, frame_s=0.01, rel_db=-40.0, merge_gap=0.45):
  """Speech segments by frame energy (10 ms RMS within rel_db of the loudest frame)."""
  hop = int(sr * frame_s)
  n = len(wave) // hop
  rms = np.sqrt(np.mean(wave[:n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
  on = 20 * np.log10(rms / rms.max()) > rel_db
  segs, start = [], None
  for i, v in enumerate(np.append(on, False)):
    if v and start is None:
      start = i
    elif not v and start is not None:
      segs.append([start * frame_s, i * frame_s])
      start = None
  return merge(segs, merge_gap)


def merge(intervals, gap):
  out = []
  for s, e in sorted(intervals):
    if out and s - out[-1][1] < gap:
      out[-1][1] = max(out[-1][1], e)
    else:
      out.append([s, e])
  return out


@pytest.mark.parametrize("family,index", SAMPLES)
def test_speech_ground_truth_matches_an_energy_detector(samples, family, index):
  ep, _ = samples[(family, index)]
  for stream, wave in (("user_speech", ep.user_audio), ("model_speech", ep.model_audio)):
    truth = merge([list(x) for x in ep.task[stream]], 0.45)
    if not truth:
      assert np.abs(wave).max() == 0, stream
      continue
    found = energy_segments(wave)
    assert len(found) == len(truth), (stream, found, truth)
    np.testing.assert_allclose(np.array(found), np.array(truth), atol=0.05,
                               err_msg=f"{family}/{stream}")


def test_energy_check_can_fail(samples):
  # The companion: shift the ground truth by 100 ms and the comparison fails.
  ep, _ = samples[("turn_taking", 0)]
  truth = np.array(merge([list(x) for x in ep.task["user_speech"]], 0.45)) + 0.1
  assert not np.allclose(np.array(energy_segments(ep.user_audio)), truth, atol=0.05)


def _object_track(video):
  """Per frame, the centroid of the bright moving object (colour >= 160 in all channels)."""
  mask = (video >= 160).all(axis=-1)
  ys, xs = np.mgrid[:video.shape[1], :video.shape[2]]
  n = mask.sum(axis=(1, 2))
  assert (n > 0).all()
  return np.stack([(mask * ys).sum(axis=(1, 2)) / n, (mask * xs).sum(axis=(1, 2)) / n], 1)


def _moving_runs(track):
  moving = np.abs(track - track[0]).max(axis=1) > 0.5
  runs, start = [], None
  for i, v in enumerate(np.append(moving, False)):
    if v and start is None:
      start = i
    elif not v and start is not None:
      runs.append((start, i - 1))
      start = None
  return runs


@pytest.mark.parametrize("index", [0, 1, 2])
def test_repetition_times_match_the_rendered_motion(index):
  ep, refs = generate.make_sample("visual_counting", "heldout", 3, index)
  runs = _moving_runs(_object_track(ep.video))
  # Each repetition leaves rest at frame s and returns at frame e (exclusive run).
  assert [[a - 1, b + 1] for a, b in runs] == ep.task["rep_frames"]
  row = refs["row"]
  assert row[2] == ep.task["count"] == len(runs)
  assert row[3:] == [i for pair in ep.task["rep_frames"] for i in pair]
  # The model says the running count after each repetition ends.
  counts = [p["text"] for p in ep.model_text]
  assert counts == generators._NUMBER_WORDS[1:len(runs) + 1]
  for p, (_, e) in zip(ep.model_text, ep.task["reps"]):
    assert e < p["t_start"] < e + 0.5


@pytest.mark.parametrize("index", [0, 1])
def test_start_stop_event_matches_the_rendered_motion(index):
  ep, refs = generate.make_sample("visual_start_stop", "heldout", 3, index)
  runs = _moving_runs(_object_track(ep.video))
  t_s, t_e = ep.task["event"]
  fps = ep.video_fps
  assert runs == [(round(t_s * fps), round(t_e * fps) - 1)]
  vid, start, rest = refs["line"].split(" ", 2)
  end, sentence = rest.split("##")
  assert vid == ep.id and float(start) == pytest.approx(t_s, abs=0.005)
  assert float(end) == pytest.approx(t_e, abs=0.005) and sentence == ep.task["sentence"]
  said = [(p["text"], p["t_start"]) for p in ep.model_text]
  assert [s for s, _ in said] == ["start", "stop"]
  assert t_s < said[0][1] < t_s + 0.5 and t_e < said[1][1] < t_e + 0.5


def test_cuespeak_answers_follow_each_cue_word(samples):
  for i in range(2):
    ep, refs = samples[("cuespeak", i)]
    task = refs["files"]["task.json"]
    # The cue sentences (a spoken instruction also holds the cue word, untargeted).
    cue_ends = [w["t_end"] for p in ep.user_speech if p["t_start"] >= task["instruction_time"][1]
                for w in p["words"] if w["text"].lower() == task["cue_word"]]
    assert len(cue_ends) == len(task["targets"]) >= 1
    answers = [p for p in ep.model_text if p["text"] == ep.task["response"]]
    for end, tgt, ans in zip(cue_ends, task["targets"], answers):
      assert tgt["window"][0] == pytest.approx(end, abs=1e-3)
      assert tgt["window"][0] <= ans["t_start"] <= tgt["window"][1]


def test_timespeak_targets_hold_the_model_speech(samples):
  for i in range(2):
    ep, refs = samples[("timespeak", i)]
    task = refs["files"]["task.json"]
    assert set(task) == {"id", "family", "instruction", "instruction_mode",
                         "instruction_time", "cue_word", "targets", "duration"}
    starts = [p["t_start"] for p in ep.model_text]
    for tgt in task["targets"]:
      assert any(tgt["window"][0] <= s <= tgt["window"][1] for s in starts)


def test_interruption_stops_the_model(samples):
  ep, refs = samples[("user_interruption", 0)]
  i0, i1 = ep.task["interrupt"]
  stop = ep.task["model_stop"]
  assert i0 < stop < i0 + 0.5
  sr = ep.sample_rate
  assert np.abs(ep.model_audio[int((stop + 0.03) * sr):int(i1 * sr)]).max() == 0
  assert refs["files"]["interrupt.json"][0]["timestamp"] == [i0, i1]


def test_delegation_emits_delegate_before_the_result(samples):
  ep, _ = samples[("delegation", 0)]
  delegate = [p for p in ep.model_text if p["text"] == "<delegate>"]
  assert len(delegate) == 1 and len(ep.background_text) == 1
  assert delegate[0]["t_start"] < ep.background_text[0]["t"] < ep.task["answer_start"]


def test_samples_are_deterministic_and_splits_differ():
  a, _ = generate.make_sample("turn_taking", "train", 5, 3)
  b, _ = generate.make_sample("turn_taking", "train", 5, 3)
  c, _ = generate.make_sample("turn_taking", "heldout", 5, 3)
  np.testing.assert_array_equal(a.user_audio, b.user_audio)
  assert a.meta["voices"]["user"]["voice"] in tts.TRAIN_VOICES
  assert c.meta["voices"]["user"]["voice"] in tts.HELDOUT_VOICES
  assert not set(tts.TRAIN_VOICES) & set(tts.HELDOUT_VOICES)


def test_episode_round_trip(tmp_path, samples):
  ep, _ = samples[("visual_counting", 0)]
  episode_lib.write_episode(tmp_path / "e", ep)
  back = episode_lib.read_episode(tmp_path / "e")
  assert back.id == ep.id and back.task == json.loads(json.dumps(ep.task))
  np.testing.assert_allclose(back.user_audio, ep.user_audio, atol=1 / 32767)
  np.testing.assert_array_equal(back.video, ep.video)
  assert back.model_text == json.loads(json.dumps(ep.model_text))


def test_missing_espeak_says_how_to_install(monkeypatch):
  monkeypatch.setattr(tts, "_ENGINE", None)
  monkeypatch.setattr(tts.ctypes.util, "find_library", lambda name: None)

  def no_lib(name):
    raise OSError(f"{name}: cannot open shared object file")
  monkeypatch.setattr(tts.ctypes, "CDLL", no_lib)
  with pytest.raises(tts.EspeakNotFound, match="apt-get install -y espeak-ng"):
    tts.synthesize("hello")


def test_generate_writes_episodes_and_eval_suites(tmp_path, base_config):
  out = tmp_path / "data"
  generate.generate(list(FAMILIES), 1, out, split="heldout", seed=1, workers=1,
                    progress=False)
  for suite, files in [("fdb_v1/turn_taking", ["input.wav", "turn_taking.json", "transcription.json"]),
                       ("fdb_v1/pause_handling", ["input.wav", "pause.json"]),
                       ("fdb_v1/user_interruption", ["input.wav", "interrupt.json"]),
                       ("fdb_v1_5/user_backchannel", ["input.wav", "clean_input.wav", "metadata.json"]),
                       ("timespeak", ["input.wav", "task.json"]),
                       ("cuespeak", ["input.wav", "task.json"]),
                       ("delegation", ["input.wav", "task.json"])]:
    manifest = json.loads((out / suite / "manifest.json").read_text())
    assert manifest["voice_set"] == "heldout" and manifest["seed"] == 1
    for f in files:
      assert (out / suite / manifest["ids"][0] / f).is_file(), (suite, f)
  pause = json.loads(next((out / "fdb_v1/pause_handling").glob("*/pause.json")).read_text())
  assert pause[0]["text"] == "[PAUSE]" and len(pause[0]["timestamp"]) == 2
  with open(out / "repcount" / "test.csv") as f:
    rows = list(csv.reader(f))
  assert rows[0][:4] == ["", "type", "name", "count"]
  assert (out / "repcount" / "videos" / f"{rows[1][2]}.npz").is_file()
  line = (out / "charades" / "charades_sta_test.txt").read_text().splitlines()[0]
  vid = line.split(" ")[0]
  with np.load(out / "charades" / "videos" / f"{vid}.npz") as z:
    assert z["frames"].dtype == np.uint8 and float(z["fps"]) == generators.VIDEO_FPS
  # And the grain pipeline trains on what was written.
  config = base_config()
  config.data.source, config.data.path = "episodes", str(out / "episodes")
  config.data.turns, config.data.batch_size = 8, 3
  config.layout.video.enabled = True
  batch = next(pipeline.make_train_iter(config))
  assert batch["user_audio"].shape == (3, 8, 16, 80)
