"""demo: the CPU main job. Trains a small audio+text interaction model for a few
minutes on episodes generated with espeak-ng, checkpoints and prints metrics.

Run (after `python -m experiments.generate --family=all --num=64 --out=/tmp/demo/data`):
  python -m experiments.main --config=experiments/configs/demo.py \
      --workdir=/tmp/demo --config.data.path=/tmp/demo/data

Expect: on a 2-core CPU roughly 1-2 s per step; the README's command stops
after `train.max_minutes` (3) with a checkpoint; text loss falls from ~5.6
towards ~1 (most model_text slots are <pad>) and the flow loss from ~2 to
below 1. Rerunning the same command resumes from the last checkpoint.
"""

from experiments.configs import common


def get_config():
  c = common.base_config()
  c.name = "demo"
  m = c.model
  m.d_model = 256
  m.num_layers = 4
  m.num_heads = 8
  m.num_kv_heads = 2
  m.head_dim = 32
  m.d_ff = 768
  m.ffn = "swiglu"
  m.time_embed_dim = 32
  m.flow.width = 256
  m.flow.depth = 2
  m.flow.num_steps = 4
  m.kernels.split_size = 256
  c.data.source = "episodes"
  c.data.turns = 50             # 10 s of conversation per example
  c.data.batch_size = 4
  c.train.steps = 2000
  c.train.lr = 1e-3
  c.train.warmup_steps = 50
  c.train.log_every = 10
  c.train.ckpt_every = 50
  c.train.max_minutes = 3.0
  return c
