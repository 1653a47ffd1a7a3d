r"""Run a model's streaming session over a file on a simulated clock.

  python -m experiments.run_session --checkpoint=WORKDIR --input=FILE.wav \
      [--video=FILE.npz] [--text="typed at t=0"] --out=DIR

WORKDIR is a training run's workdir (config.json + checkpoints/); its voice is
the learned vocoder in WORKDIR/vocoder/ when one was trained there
(`python -m experiments.train_vocoder`), else Griffin-Lim (`--vocoder` picks
another, or `--vocoder=griffin_lim`). Without
--checkpoint, `--config=FILE` runs a randomly initialised model (for smoke
tests; its output is noise). The file goes through the eval harness
(eval.replay) with the model agent, so it is heard exactly as a benchmark
sample is: resampled to 16 kHz, 200 ms per step. Writes DIR/output.wav (the
input's length: the model's voice, silent for its first 200 ms because the
output block of turn t is spoken during turn t+1), DIR/events.jsonl (one line
per word: t_start, t_end, text, stream) and DIR/timeline.png (user speech,
model speech and model text over time); prints one JSON object.
"""

import json
import os

from absl import flags
from ml_collections import config_flags

from eval.agents import make_agent
from eval.replay import ReplayConfig, replay_to_dir
from eval.samples import Sample
from experiments import agents as agents_lib
from experiments import cli

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Training workdir to load.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (only without --checkpoint).", lock_config=True)
_INPUT = flags.DEFINE_string("input", None, "Input audio file (any rate; mono).")
_VIDEO = flags.DEFINE_string("video", None, "Optional .npz video (frames, fps).")
_TEXT = flags.DEFINE_string("text", None, "Optional text typed at t=0.")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_VOCODER = flags.DEFINE_string(
    "vocoder", "", "Audio out: '' = the checkpoint's vocoder/ when trained "
    "(experiments.train_vocoder), else Griffin-Lim; 'griffin_lim'; or a vocoder "
    "checkpoint (its dir or a workdir holding vocoder/).")
flags.mark_flags_as_required(["input", "out"])


def file_sample(audio_path: str, video_path: str | None = None,
                text: str | None = None) -> Sample:
  """A media file as a harness sample with no reference (nothing to score)."""
  for p in (audio_path, video_path):
    if p and not os.path.exists(p):
      raise ValueError(f"not found: {p}")
  name = os.path.splitext(os.path.basename(audio_path))[0]
  return Sample(id=name, benchmark="session", task="", path=audio_path, reference={},
                audio_path=audio_path, video_path=video_path,
                user_text=[(0.0, text)] if text else [])


def main(argv):
  del argv
  sample = file_sample(_INPUT.value, _VIDEO.value, _TEXT.value)  # fails before loading
  config, params = agents_lib.load_model(_CHECKPOINT.value, _CONFIG.value)
  vocoder = agents_lib.load_vocoder(_CHECKPOINT.value, _VOCODER.value)
  agent = make_agent("model", config=config, params=params, checkpoint=_CHECKPOINT.value,
                     vocoder=vocoder)
  stats = replay_to_dir(agent, sample, _OUT.value, ReplayConfig(resume=False))
  print(json.dumps({"turns": stats["steps"], "seconds": round(stats["audio_s"], 3),
                    "events": stats["events"], "out": _OUT.value,
                    "vocoder": vocoder.source if vocoder else agents_lib.GRIFFIN_LIM}))


if __name__ == "__main__":
  cli.run(main)
