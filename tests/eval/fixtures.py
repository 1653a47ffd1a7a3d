"""Tiny hand-made benchmark folders in the agreed formats, built in tmp_path."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import soundfile

SR = 16000


def speechlike(seconds: float, sr: int = SR, f0: float = 120.0) -> np.ndarray:
  """A voiced buzz that webrtcvad calls speech (stand-in for a recorded voice)."""
  t = np.arange(int(seconds * sr)) / sr
  x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 15))
  x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
  return (0.3 * x / np.abs(x).max()).astype(np.float32)


def user_audio(duration: float, speech: list, sr: int = SR) -> np.ndarray:
  """Silence of `duration` with speech-like audio over each (t0, t1)."""
  x = np.zeros(int(duration * sr), np.float32)
  for t0, t1 in speech:
    seg = speechlike(t1 - t0, sr)
    a = int(t0 * sr)
    x[a:a + len(seg)] = seg[:len(x) - a]
  return x


def write_wav(path, x, sr=SR):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  soundfile.write(path, x, sr, subtype="PCM_16")


def write_json(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)


def write_video(path, n_frames: int, fps: float = 5.0, size: int = 8):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  frames = np.zeros((n_frames, size, size, 3), np.uint8)
  frames[:, :, :, 0] = (np.arange(n_frames) % 255)[:, None, None]
  np.savez(path, frames=frames, fps=np.float32(fps))


def make_timespeak(root, family="timespeak"):
  base = os.path.join(root, family)
  tasks = {
      "ts0": {"instruction": "In two seconds, say banana.", "instruction_mode": "text",
              "instruction_time": [0.5, 0.5], "cue_word": None,
              "targets": [{"text": "banana", "window": [2.5, 3.5]}], "duration": 5.0},
      "ts1": {"instruction": "What is 12 plus 30?", "instruction_mode": "speech",
              "instruction_time": [0.4, 1.6], "cue_word": None,
              "targets": [{"text": "42", "window": [1.6, 4.0]}], "duration": 5.0},
  }
  if family == "cuespeak":
    tasks = {"cs0": {"instruction": "Whenever I say apple, say pear.",
                     "instruction_mode": "speech", "instruction_time": [0.3, 1.5],
                     "cue_word": "apple",
                     "targets": [{"text": "pear", "window": [3.2, 4.5]}], "duration": 5.0}}
  for sid, task in tasks.items():
    task = {"id": sid, "family": family, **task}
    speech = [task["instruction_time"]] if task["instruction_mode"] == "speech" else []
    if family == "cuespeak":
      speech.append([2.6, 3.0])  # the cue word
    write_wav(os.path.join(base, sid, "input.wav"), user_audio(task["duration"], speech))
    write_json(os.path.join(base, sid, "task.json"), task)
  write_json(os.path.join(base, "manifest.json"),
             {"ids": sorted(tasks), "family": family, "seed": 0, "voice_set": "heldout"})
  return base


def make_fdb_v1(root):
  base = os.path.join(root, "fdb_v1")
  d = os.path.join(base, "pause_handling", "p0")
  # 48 kHz input: loaders must resample.
  write_wav(os.path.join(d, "input.wav"), user_audio(4.0, [(0.2, 1.2), (2.2, 3.0)], 48000),
            48000)
  write_json(os.path.join(d, "pause.json"), [{"text": "[PAUSE]", "timestamp": [1.2, 2.2]}])
  d = os.path.join(base, "turn_taking", "t0")
  write_wav(os.path.join(d, "input.wav"), user_audio(5.0, [(0.3, 1.8)]))
  write_json(os.path.join(d, "turn_taking.json"),
             [{"text": "[TURN-TAKING]", "timestamp": [1.8, 2.2]}])
  d = os.path.join(base, "user_interruption", "u0")
  write_wav(os.path.join(d, "input.wav"), user_audio(6.0, [(0.2, 1.2), (2.0, 3.0)]))
  write_json(os.path.join(d, "interrupt.json"),
             [{"context": "tell me about paris", "interrupt": "what about the weather there",
               "timestamp": [2.0, 3.0]}])
  return base


def make_fdb_v1_5(root):
  base = os.path.join(root, "fdb_v1_5")
  d = os.path.join(base, "user_backchannel", "b0")
  x = user_audio(7.0, [(0.2, 1.5), (3.5, 3.9)])
  write_wav(os.path.join(d, "input.wav"), x)
  write_wav(os.path.join(d, "clean_input.wav"), user_audio(7.0, [(0.2, 1.5)]))
  write_json(os.path.join(d, "metadata.json"),
             {"context_text": "tell me a story", "current_turn_text": "uh huh",
              "timestamps": [3.5, 3.9]})
  return base


def make_repcount(root):
  base = os.path.join(root, "repcount")
  os.makedirs(base, exist_ok=True)
  with open(os.path.join(base, "test.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["", "type", "name", "count", "L1", "L2", "L3", "L4", "L5", "L6"])
    w.writerow([0, "squat", "v3.mp4", 3, 2, 6, 7, 11, 12, 16])
    w.writerow([1, "jump", "v0.mp4", 0, "", "", "", "", "", ""])
  write_video(os.path.join(base, "videos", "v3.npz"), 20)
  write_video(os.path.join(base, "videos", "v0.npz"), 10)
  return base


def make_charades(root):
  base = os.path.join(root, "charades")
  os.makedirs(base, exist_ok=True)
  with open(os.path.join(base, "charades_sta_test.txt"), "w") as f:
    f.write("VA 1.0 2.4##person opens a door.\nVB 0.6 1.8##person sits down.\n")
  write_video(os.path.join(base, "videos", "VA.npz"), 20)
  write_video(os.path.join(base, "videos", "VB.npz"), 15)
  return base


def make_proactive(root):
  base = os.path.join(root, "proactive_videoqa", "WEB")
  write_json(os.path.join(base, "anno.json"), [{
      "video": "w0.mp4", "question_id": "q0", "duration": 4.0,
      "conversation": [{"role": "user", "content": "Tell me when the cat jumps.", "time": 0}],
      "answer": [{"content": "The cat jumps onto the table.", "related_timespan": [1.0, 2.0],
                  "reply_timespan": [1.0, 3.0]}]}])
  write_video(os.path.join(base, "videos", "w0.npz"), 20)
  return os.path.dirname(base)


DELEGATION_TASKS = {
    # input.wav holds only the question (4 s); the replay lasts `duration`.
    "d0": {"question": "what is the weather in paris right now", "question_end": 1.8,
           "delegate_window": [1.8, 3.0], "background": [[3.4, "weather: paris 21C sunny"]],
           "answer": "it is 21 degrees and sunny in paris", "answer_window": [4.5, 8.0],
           "duration": 8.0},
    "d1": {"question": "when does the next train to boston leave", "question_end": 2.0,
           "delegate_window": [2.0, 3.2], "background": [[3.6, "trains: boston 7:15"]],
           "answer": "the next train to boston leaves at 7 15", "answer_window": [4.8, 8.0],
           "duration": 8.0},
}


def make_delegation(root, tasks=None):
  """delegation/<id>/{input.wav,task.json}: the task.json format the generator writes."""
  base = os.path.join(root, "delegation")
  tasks = DELEGATION_TASKS if tasks is None else tasks
  for sid, task in tasks.items():
    task = {"id": sid, "family": "delegation", **task}
    write_wav(os.path.join(base, sid, "input.wav"),
              user_audio(4.0, [(0.3, task["question_end"])]))
    write_json(os.path.join(base, sid, "task.json"), task)
  write_json(os.path.join(base, "manifest.json"),
             {"ids": sorted(tasks), "family": "delegation", "seed": 0, "voice_set": "heldout"})
  return base


def make_suite(root):
  make_timespeak(root, "timespeak")
  make_timespeak(root, "cuespeak")
  make_fdb_v1(root)
  make_fdb_v1_5(root)
  make_repcount(root)
  make_charades(root)
  make_proactive(root)
  make_delegation(root)
  return root
