"""`python -m experiments.run_session` runs a trained model over a wav file
(through the eval harness) and writes output.wav of the input's length,
events.jsonl and timeline.png, printing only its result: the libraries' INFO
logs (orbax's checkpoint lines) appear only with -v."""

import json
import os
import re

import numpy as np
import pytest
import soundfile

from interaction import audio_io

# absl's INFO line prefix (I<mmdd> <time>), as orbax logs every restore step.
_INFO = re.compile(r"^I\d{4} ", re.M)


def _wav(path, sr=22050, seconds=0.7):
  t = np.arange(int(sr * seconds)) / sr
  soundfile.write(path, 0.3 * np.sin(2 * np.pi * 200 * t), sr, subtype="PCM_16")
  return path


@pytest.mark.integration
def test_run_session_from_a_checkpoint_is_quiet_and_writes_outputs(tmp_path, workdir,
                                                                   run_module):
  path = _wav(str(tmp_path / "in.wav"))
  out = tmp_path / "out"
  r = run_module("experiments.run_session", f"--checkpoint={workdir}",
                 f"--input={path}", f"--out={out}", "--text=hello")
  assert r.returncode == 0, r.stderr
  summary = json.loads(r.stdout.strip().splitlines()[-1])
  assert r.stdout.strip().count("\n") == 0  # the result line only
  assert not _INFO.search(r.stderr) and "Closing" not in r.stderr, r.stderr
  wave = audio_io.load_audio(path)
  wav, sr = soundfile.read(out / "output.wav")
  assert sr == 16000 and len(wav) == len(wave)
  assert summary["turns"] == -(-len(wave) // 3200)
  assert not np.any(wav[:3200])
  for line in open(out / "events.jsonl"):
    assert set(json.loads(line)) == {"t_start", "t_end", "text", "stream"}
  assert os.path.getsize(out / "timeline.png") > 0


@pytest.mark.integration
def test_checkpoint_logs_show_only_with_verbose(tmp_path, workdir, run_module):
  # Companion of the quiet check above: the same run_session (same checkpoint
  # restore) logs at INFO with -v, so "quiet" is a real check.
  path = _wav(str(tmp_path / "in.wav"), seconds=0.2)
  for verbose in (False, True):
    r = run_module("experiments.run_session", f"--checkpoint={workdir}",
                   f"--input={path}", f"--out={tmp_path / str(verbose)}",
                   *(["-v"] if verbose else []))
    assert r.returncode == 0, r.stderr
    assert bool(_INFO.search(r.stderr)) == verbose, r.stderr


@pytest.mark.integration
def test_replay_of_an_empty_benchmark_folder_is_an_error_naming_it(tmp_path, workdir,
                                                                  run_module):
  (tmp_path / "empty").mkdir()
  r = run_module("experiments.replay", "--agent=model", f"--checkpoint={workdir}",
                 "--benchmark=timespeak", f"--data={tmp_path / 'empty'}",
                 f"--out={tmp_path / 'o'}")
  assert r.returncode == 2 and "empty" in r.stderr, r.stderr


def test_run_session_needs_a_model_and_an_input(tmp_path, run_module):
  path = _wav(str(tmp_path / "in.wav"))
  r = run_module("experiments.run_session", f"--input={path}", f"--out={tmp_path}/o")
  assert r.returncode == 2 and "checkpoint" in r.stderr
  r = run_module("experiments.run_session", "--config=experiments/configs/tiny.py",
                 f"--input={tmp_path}/missing.wav", f"--out={tmp_path}/o")
  assert r.returncode == 2 and "missing.wav" in r.stderr
