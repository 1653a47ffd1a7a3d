r"""Train the learned streaming vocoder on the generated espeak speech.

  python -m experiments.train_vocoder --config=experiments/configs/vocoder.py \
      --workdir=WORKDIR

WORKDIR is the interaction model's workdir: the vocoder is written next to the
model's checkpoints, into WORKDIR/vocoder/ (config.json, checkpoints/<step>/,
metrics.jsonl), where sessions, the model agent and run_session find it.
Rerunning the same command resumes from the last checkpoint (the crops of
step s are a pure function of (data.seed, s), so a resumed run sees the
batches an uninterrupted one would). See the config's docstring for the data
and what to expect.

The loss is reconstruction only (no discriminator, to train in minutes on a
CPU): multi-resolution STFT (spectral convergence + log magnitude) and the L1
of the layout's log10 mel, between the vocoder's output and the original
waveform aligned by the vocoder's fixed delay, plus the L1 of the predicted
log magnitudes against the target's STFT on the synthesis grid. Each crop
runs the streaming network from a silent state over warm-up frames first (its
receptive field, the overlapping windows, the held-over frame), and only
frames after them carry the loss, so training sees what a session computes.
"""

import os
import time

from absl import flags
from ml_collections import config_flags

from experiments import cli
from experiments.vocoder_trainer import train_vocoder

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Vocoder config (experiments/configs/vocoder.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The model's workdir; the vocoder is written to WORKDIR/vocoder.")


def main(argv):
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None or not _WORKDIR.value:
    raise ValueError("--config (experiments/configs/vocoder.py) and --workdir are required")
  t0 = time.time()
  _, _, step = train_vocoder(_CONFIG.value, _WORKDIR.value)
  print(f"finished at step {step} in {time.time() - t0:.0f} s; vocoder in "
        f"{os.path.join(_WORKDIR.value, 'vocoder')}")
  return 0


if __name__ == "__main__":
  cli.run(main)
