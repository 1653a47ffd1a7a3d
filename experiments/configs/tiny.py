"""tiny: the test-suite config. Builds and trains in seconds on a CPU.

Run:
  python -m experiments.main --config=experiments/configs/tiny.py --workdir=/tmp/tiny

Expect: 30 steps in well under a minute on 2 cores, loss falling from about
6 (text) + 1-2 (flow). Uses in-memory synthetic episodes (no espeak-ng needed)
and 40x40 video frames, so every embedder and the MoE path are exercised.

`--mode=train_and_eval` (or `--mode=eval` on a trained workdir) also evaluates
it on a small held-out suite (one turn_taking and one timespeak episode,
generated with espeak-ng into the workdir's eval_suite/) with the oracle, the
VAD cascade and the model; the untrained-sized model's scores are noise, the
point is that the whole train -> eval path runs.
"""

from experiments.configs import common


def get_config():
  c = common.base_config()
  c.name = "tiny"
  c.layout.video.enabled = True
  c.layout.video.height = 40
  c.layout.video.width = 40
  m = c.model
  m.d_model = 32
  m.num_layers = 2
  m.num_heads = 4
  m.num_kv_heads = 2
  m.head_dim = 8
  m.d_ff = 64
  m.ffn = "moe"
  m.first_dense_layers = 1
  m.moe.num_experts = 4
  m.moe.top_k = 2
  m.moe.d_ff = 32
  m.moe.num_shared_experts = 1
  m.time_embed_dim = 16
  m.flow.width = 32
  m.flow.depth = 1
  m.flow.num_steps = 2
  m.kernels.split_size = 32
  c.data.source = "synthetic"
  c.data.turns = 6
  c.data.batch_size = 2
  c.train.steps = 30
  c.train.lr = 1e-2
  c.train.warmup_steps = 3
  c.train.log_every = 5
  c.train.ckpt_every = 10
  c.eval.families = "turn_taking,timespeak"
  c.eval.num_per_family = 1
  return c
