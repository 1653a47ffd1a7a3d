r"""Run a streaming session over a file on a simulated clock.

  python -m interaction.run_session --checkpoint=WORKDIR --input=FILE.wav \
      [--video=FILE.npz] [--text="typed at t=0"] --out=DIR

WORKDIR is a training run's workdir (config.json + checkpoints/). Without
--checkpoint, `--config=FILE` runs a randomly initialised model (for smoke
tests; its output is noise). Writes DIR/output.wav (the input's length: the
model's voice, silent for its first 200 ms because the output block of turn t
is spoken during turn t+1), DIR/events.jsonl (one line per word: t_start,
t_end, text, stream) and DIR/timeline.png (user speech, model speech and model
text over time).
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from data_pipeline import features
from experiments import cli

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Training workdir to load.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (only without --checkpoint).", lock_config=True)
_INPUT = flags.DEFINE_string("input", None, "Input audio file (any rate; mono).")
_VIDEO = flags.DEFINE_string("video", None, "Optional .npz video (frames, fps).")
_TEXT = flags.DEFINE_string("text", None, "Optional text typed at t=0.")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
flags.mark_flags_as_required(["input", "out"])


def load_config_and_params(checkpoint: str | None, config=None):
  from experiments import trainer
  if checkpoint:
    return trainer.load_trained(checkpoint)
  if config is None:
    raise ValueError("give --checkpoint=WORKDIR, or --config=FILE for a random model")
  logging.warning("no --checkpoint: running a randomly initialised model")
  return config, trainer.create_train_state(config)["params"]


def frame_for_turn(video, t: float, height: int, width: int):
  """The video frame shown at time t (None past the end), resized to the layout."""
  idx = int(t * video.fps + 1e-6)
  if idx >= len(video.frames):
    return None
  frame = video.frames[idx]
  if frame.shape[:2] != (height, width):
    frame = features.resize_frames(frame[None], height, width)[0]
  return frame


def run(config, params, wave: np.ndarray, out_dir: str, *, video=None,
        text: str | None = None, progress: bool = True) -> dict:
  """Streams `wave` (16 kHz) through one session; writes the three outputs."""
  from eval.events import TextEvent, write_events
  from eval.timeline import draw
  from interaction.layout import Stream
  from interaction.session import Sessions

  sessions = Sessions(config, params, batch_size=1)
  spec = sessions.spec
  n = len(wave)
  n_turns = -(-n // spec.samples_per_turn)
  padded = np.zeros(n_turns * spec.samples_per_turn, np.float32)
  padded[:n] = wave
  out_audio = np.zeros(n_turns * spec.samples_per_turn + spec.samples_per_turn,
                       np.float32)
  events = []
  has_video = spec.count(Stream.VIDEO) > 0
  for t in tqdm(range(n_turns), desc="session", unit="turn", disable=not progress):
    chunk = padded[t * spec.samples_per_turn:(t + 1) * spec.samples_per_turn]
    frame = None
    if video is not None and has_video:
      frame = frame_for_turn(video, t * spec.turn_seconds, spec.video_height,
                             spec.video_width)
    r = sessions.step(chunk, video=frame, user_text=text if t == 0 else None)
    # Turn t's output block is what the model says during turn t+1.
    start = (t + 1) * spec.samples_per_turn
    out_audio[start:start + spec.samples_per_turn] = r.audio[0]
    events.extend(r.events[0])
  out_audio = out_audio[:n]
  os.makedirs(out_dir, exist_ok=True)
  features.write_wav(os.path.join(out_dir, "output.wav"), out_audio,
                     spec.sample_rate)
  text_events = [TextEvent(**e) for e in events if e["t_start"] < n / spec.sample_rate]
  write_events(os.path.join(out_dir, "events.jsonl"), text_events)
  draw(os.path.join(out_dir, "timeline.png"), wave, out_audio, text_events,
       title=f"{config.name}: {n_turns} micro-turns")
  return {"turns": n_turns, "samples": n, "events": len(text_events)}


def main(argv):
  del argv
  config, params = load_config_and_params(_CHECKPOINT.value, _CONFIG.value)
  wave = features.load_audio(_INPUT.value)
  video = None
  if _VIDEO.value:
    from eval.samples import load_video
    video = load_video(_VIDEO.value)
  summary = run(config, params, wave, _OUT.value, video=video, text=_TEXT.value)
  print(json.dumps(summary))


if __name__ == "__main__":
  cli.run(main)
