"""vocoder: the learned streaming vocoder (interaction/learned_vocoder.py), trained
on the generated espeak speech, to replace Griffin-Lim as a session's audio out.

Run (WORKDIR is the interaction model's workdir; the vocoder lands next to it):
  python -m experiments.train_vocoder --config=experiments/configs/vocoder.py \
      --workdir=WORKDIR

Data: `--config.data.path=DIR` when set, else WORKDIR/data (the episodes the
model trains on) when it exists, else `data.generate_per_family` episodes of
the speech families generated once into WORKDIR/vocoder/data (about 20 s).
Both speakers of every episode (train voices only) are used.

Expect: 498,306 parameters; on the shared 2-core CPU 1.5-5 steps/s, so about
1,200 steps before `train.max_minutes` (8) stops the run with a checkpoint in
WORKDIR/vocoder/checkpoints. The head starts at zero, so step 0 is already the
analytic vocoder (mel envelope + PGHI phase); over the run the loss falls from
~1.80 to ~1.55, the predicted-magnitude L1 from ~0.67 to ~0.61 (ln) and the
mel L1 from ~0.116 to ~0.088 (log10). Rerunning resumes. Sessions, the model
agent and run_session then use it (Griffin-Lim without it);
`python -m experiments.bench vocoder --vocoder=WORKDIR` measures it.
"""

import ml_collections

from experiments.configs import common


def get_config():
  c = ml_collections.ConfigDict()
  c.name = "vocoder"
  # The mel space. A WORKDIR that holds a model (config.json) replaces it
  # with that model's layout (vocoder_trainer.with_model_layout): a session
  # refuses a vocoder of another mel space.
  c.layout = common.layout_config()

  v = c.vocoder = ml_collections.ConfigDict()
  v.dim = 128                 # causal ConvNeXt width
  v.blocks = 4
  v.kernel = 7                # depthwise kernel (frames)
  v.in_kernel = 3
  v.ffn_mult = 3
  v.n_fft = 512               # synthesis STFT size (hop = the mel hop, 200)
  v.lookahead = 1             # frames the net sees ahead; delay = (lookahead+1)*hop + n_fft/2
  v.max_log_gain = 4.6        # bound on the learned gain over the mel envelope (40 dB)
  v.phase_tol = 1e-5          # bins this far below a frame's peak are not phase-locked

  d = c.data = ml_collections.ConfigDict()
  d.path = ""                 # episode dir; '' = WORKDIR/data, else generated (below)
  d.families = ("turn_taking,pause_handling,user_interruption,backchannel,timespeak,"
                "cuespeak,delegation")   # speech families (no rendered video needed)
  d.generate_per_family = 10
  d.crop_frames = 64          # frames per crop that carry the loss (0.8 s)
  d.batch_size = 16
  d.speech_fraction = 0.9     # crops centred on a speech frame; the rest anywhere
  d.gain_db = 6.0             # random level change of +-gain_db per crop
  d.mel_noise = 0.05          # std of noise on the input log10 mel (flow-head error)
  d.seed = 0

  t = c.train = ml_collections.ConfigDict()
  t.steps = 3000
  t.lr = 3e-3
  t.warmup_steps = 100
  t.end_lr_ratio = 0.1
  t.weight_decay = 0.0
  t.b1 = 0.9                   # AdamW moments (the trainer's make_optimizer)
  t.b2 = 0.999
  t.grad_clip = 1.0
  t.seed = 0
  t.stft_sizes = "1024,512,256"   # multi-resolution STFT loss (hop = size / 4)
  t.mel_loss_weight = 1.0
  t.mag_loss_weight = 1.0     # log-magnitude L1 of the predicted frames vs the target's STFT
  t.log_every = 25
  t.ckpt_every = 250
  t.keep_checkpoints = 2
  t.max_minutes = 8.0         # >0: stop (and checkpoint) after this wall time
  return c
