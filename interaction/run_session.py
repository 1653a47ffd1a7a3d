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

from absl import flags
from ml_collections import config_flags

from interaction import audio_io
from experiments import cli
from interaction.file_session import load_config_and_params, run

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Training workdir to load.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (only without --checkpoint).", lock_config=True)
_INPUT = flags.DEFINE_string("input", None, "Input audio file (any rate; mono).")
_VIDEO = flags.DEFINE_string("video", None, "Optional .npz video (frames, fps).")
_TEXT = flags.DEFINE_string("text", None, "Optional text typed at t=0.")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
flags.mark_flags_as_required(["input", "out"])


def main(argv):
  del argv
  config, params = load_config_and_params(_CHECKPOINT.value, _CONFIG.value)
  wave = audio_io.load_audio(_INPUT.value)
  video = None
  if _VIDEO.value:
    from eval.samples import load_video
    video = load_video(_VIDEO.value)
  summary = run(config, params, wave, _OUT.value, video=video, text=_TEXT.value)
  print(json.dumps(summary))


if __name__ == "__main__":
  cli.run(main)
