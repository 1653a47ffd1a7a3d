"""Deterministic vs plain all-reduce (and reduce-scatter) on 8 simulated CPU devices.

  python -m experiments.bench collectives [--iters=20]

Messages at the sizes of one `demo` layer (d_model 256, f32 partials):
  turn      one micro-turn of one streaming session: [slots_per_turn, d]
  batch     the training forward's block output: [batch x turns x slots, d]
  grads     one layer's parameter gradients (data-parallel all-reduce)
Each is all-reduced over the 8 devices inside shard_map by `jax.lax.psum`
and by pallas_kernels.collectives.all_reduce (all-gather, then a fixed-order
f32 sum), and reduce-scattered by psum_scatter and the deterministic
reduce_scatter (all-to-all, then the same sum). Simulated CPU devices share
one process and memory, so the times measure the extra arithmetic and copies
of the deterministic path, not a network: `det_over_psum_ratio` > 1 is its
cost here. The GPU roofline (8 x H200, NVLink, at tml_small's micro-turn
message sizes) is computed on paper in `roofline()` and printed too.
"""

from __future__ import annotations

import datetime
import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from experiments.bench import common  # noqa: E402
from pallas_kernels import collectives  # noqa: E402

_ITERS = flags.DEFINE_integer("iters", 20, "Timed calls per variant (median).")

# 8 x H200 node (HGX): NVLink 4, 18 links x 50 GB/s = 900 GB/s bidirectional,
# 450 GB/s each way per GPU; NVSwitch; NCCL's intra-node latency per ring step
# with the LL protocol about 1.5 us (a step is a send, a wait and a reduce).
NVLINK_BYTES_PER_S = 450e9
STEP_LATENCY_S = 1.5e-6
ONE_SHOT_LATENCY_S = 2.5e-6   # one round: write to 7 peers (or read), flag, sum


def demo_sizes():
  from experiments.configs import demo
  from interaction.layout import LayoutSpec
  from interaction.params import abstract_model, count_params
  from flax import nnx
  config = demo.get_config()
  spec = LayoutSpec.from_config(config.layout)
  d = int(config.model.d_model)
  layer = count_params(nnx.state(abstract_model(config).blocks[0], nnx.Param))
  tokens = int(config.data.batch_size) * int(config.data.turns) * spec.slots_per_turn
  return {"turn": (spec.slots_per_turn, d), "batch": (tokens, d), "grads": (layer,)}


def roofline(n: int = 8) -> dict:
  """Micro-turn all-reduce time of tml_small, tensor-parallel over one node.

  Per micro-turn, per layer: 2 all-reduces of the block's partial outputs for
  the input-block prefill (input slots x d, bf16) and 2 for each decoded
  output slot (1 x d). Ring: 2(n-1) steps, each moving M/n bytes and paying a
  step latency. One-shot (all-gather then a local fixed-order sum, what
  collectives.all_reduce does; NVLS multimem is the hardware version): one
  round moving (n-1) M bytes into each GPU."""
  from experiments.configs import tml_small
  from interaction.layout import LayoutSpec, Stream
  config = tml_small.get_config()
  spec = LayoutSpec.from_config(config.layout)
  d, layers = int(config.model.d_model), int(config.model.num_layers)
  prefill = spec.input_slots * d * 2
  decode = d * 2
  decodes = spec.count(Stream.MODEL_TEXT) + spec.count(Stream.MODEL_AUDIO)

  def ring(m):
    return 2 * (n - 1) * (STEP_LATENCY_S + m / n / NVLINK_BYTES_PER_S)

  def one_shot(m):
    return ONE_SHOT_LATENCY_S + (n - 1) * m / NVLINK_BYTES_PER_S

  per_turn = {name: 2 * layers * (f(prefill) + decodes * f(decode))
              for name, f in (("ring", ring), ("one_shot", one_shot))}
  return {"prefill_bytes": prefill, "decode_bytes": decode, "decodes_per_turn": decodes,
          "all_reduces_per_turn": 2 * layers * (1 + decodes),
          "ring_prefill_us": ring(prefill) * 1e6, "one_shot_prefill_us": one_shot(prefill) * 1e6,
          "ring_decode_us": ring(decode) * 1e6, "one_shot_decode_us": one_shot(decode) * 1e6,
          "ring_turn_ms": per_turn["ring"] * 1e3, "one_shot_turn_ms": per_turn["one_shot"] * 1e3}


def main(argv):
  del argv
  n = jax.device_count()
  if n < 8:
    raise ValueError(f"needs 8 devices, got {n} (XLA_FLAGS was set before jax started?)")
  from interaction import sharding
  mesh = sharding.make_mesh("tensor=8")
  figures = {"date": datetime.date.today().isoformat(), **common.machine(), "devices": n}
  rng = np.random.default_rng(0)
  for name, shape in demo_sizes().items():
    rows = -(-shape[0] // n) * n
    x = jnp.asarray(rng.standard_normal((n, rows) + shape[1:]).astype(np.float32))

    def mapped(f):
      return jax.jit(jax.shard_map(lambda s: f(s[0])[None], mesh=mesh, in_specs=P("tensor"),
                                   out_specs=P("tensor"), check_vma=False))
    fns = {
        "psum": mapped(lambda s: jax.lax.psum(s, "tensor")),
        "det": mapped(lambda s: collectives.all_reduce(s, "tensor")),
        "psum_scatter": mapped(lambda s: jax.lax.psum_scatter(s, "tensor", tiled=True)),
        "det_scatter": mapped(lambda s: collectives.reduce_scatter(s, "tensor")),
    }
    ms = common.interleaved_medians({k: (lambda f=f: f(x)) for k, f in fns.items()},
                                    rounds=max(_ITERS.value // 3, 3))
    bytes_ = int(np.prod(shape)) * 4
    print(f"{name:<6} {str(shape):<14} {bytes_ / 1e3:>9.1f} kB  psum {ms['psum']:.3f} ms  "
          f"deterministic {ms['det']:.3f} ms ({ms['det'] / ms['psum']:.2f}x)  "
          f"psum_scatter {ms['psum_scatter']:.3f} ms  deterministic {ms['det_scatter']:.3f} ms "
          f"({ms['det_scatter'] / ms['psum_scatter']:.2f}x)")
    figures.update({f"{name}_bytes": bytes_, f"{name}_psum_ms": ms["psum"],
                    f"{name}_det_ms": ms["det"],
                    f"{name}_det_over_psum_ratio": ms["det"] / ms["psum"],
                    f"{name}_psum_scatter_ms": ms["psum_scatter"],
                    f"{name}_det_scatter_ms": ms["det_scatter"],
                    f"{name}_det_scatter_over_psum_scatter_ratio":
                        ms["det_scatter"] / ms["psum_scatter"]})
  roof = roofline()
  print(f"roofline 8 x H200, tml_small micro-turn: {roof['all_reduces_per_turn']} all-reduces "
        f"({roof['prefill_bytes'] / 1e3:.0f} kB prefill, {roof['decode_bytes'] / 1e3:.0f} kB "
        f"decode): ring {roof['ring_turn_ms']:.2f} ms, one-shot {roof['one_shot_turn_ms']:.2f} ms "
        "per micro-turn")
  figures.update({f"roofline_{k}": v for k, v in roof.items()})
  common.emit(figures)
  return 0
