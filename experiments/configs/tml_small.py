"""tml_small: TML-Interaction-Small scale (276B total, 12B active parameters).

Not trainable on CPU; use it for parameter accounting, compile-only dry runs
and the GPU-on-paper rooflines:
  python -m experiments.param_count --config=experiments/configs/tml_small.py

Expect: about 278.6B total and 11.7B active parameters (targets 276B +/- 2%,
12B +/- 5%). The shape is our design, not TML's (their internals are not
public): 48 layers of d_model 4096 with grouped-query attention (32 query heads,
8 KV heads of 128), and in every layer an MoE of 256 routed SwiGLU experts
(d_ff 1824) with top-8 routing plus one always-on shared expert. Video is
320x240 at 5 fps (48 hMLP patch tokens per micro-turn); bf16 weights and
activations; split-KV attention with a 4096-slot split.
"""

from experiments.configs import common


def get_config():
  c = common.base_config()
  c.name = "tml_small"
  c.layout.video.enabled = True
  c.layout.video.height = 240
  c.layout.video.width = 320
  m = c.model
  m.d_model = 4096
  m.num_layers = 48
  m.num_heads = 32
  m.num_kv_heads = 8
  m.head_dim = 128
  m.d_ff = 1824 * 9             # unused while every layer is MoE
  m.ffn = "moe"
  m.first_dense_layers = 0
  m.moe.num_experts = 256
  m.moe.top_k = 8
  m.moe.d_ff = 1824
  m.moe.num_shared_experts = 1
  m.moe.gating = "sigmoid"
  m.moe.impl = "auto"
  m.rope_theta = 1_000_000.0
  m.dtype = "bfloat16"
  m.param_dtype = "bfloat16"
  m.time_embed_dim = 256
  m.flow.width = 1024
  m.flow.depth = 6
  m.flow.num_steps = 8
  m.kernels.mode = "invariant"
  m.kernels.split_size = 4096
  c.data.source = "episodes"
  c.data.turns = 1500           # 5 minutes per example
  c.data.batch_size = 256
  c.train.steps = 100_000
  c.train.lr = 3e-4
  c.train.warmup_steps = 2000
  return c
