"""Running a streaming session over a whole file on a simulated clock.

The library behind `python -m interaction.run_session` and the eval model
agent: loading a model from a training workdir, and streaming a waveform
(plus optional video and typed text) through one session, writing
output.wav, events.jsonl and timeline.png.
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging
from tqdm import tqdm

from interaction import audio_io

from data_pipeline import video as video_lib


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
    frame = video_lib.resize_frames(frame[None], height, width)[0]
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
  audio_io.write_wav(os.path.join(out_dir, "output.wav"), out_audio,
                     spec.sample_rate)
  text_events = [TextEvent(**e) for e in events if e["t_start"] < n / spec.sample_rate]
  write_events(os.path.join(out_dir, "events.jsonl"), text_events)
  draw(os.path.join(out_dir, "timeline.png"), wave, out_audio, text_events,
       title=f"{config.name}: {n_turns} micro-turns")
  return {"turns": n_turns, "samples": n, "events": len(text_events)}
