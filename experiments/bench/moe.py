"""MoE routed-expert FFN on CPU: gather_gemv vs ragged_dot vs dense (+ padded grouped GEMM).

  python -m experiments.bench moe [--tokens=1,2,4,8,16,256,1024] [--impls=gather_gemv,dense]

Layer: d=1024, E=64, k=4, d_ff=512, float32, weights passed as jit arguments
(not constants). Routing comes from random router logits (softmax top-4) and
is computed once outside the timed calls; every impl gets the same routing.

  gather_gemv     moe/gather_gemv.py XLA path (lax.map over tokens, lax.scan
                  over slots, one expert slab indexed in place).
  ragged_dot      sorted slots + jax.lax.ragged_dot. On CPU XLA has no grouped
                  kernel: it masks every group into a dense matmul over all T*k
                  rows (about E times the useful FLOPs), so this is the issue's
                  baseline but not a fair grouped GEMM.
  dense           every expert on every token, gated.
  padded_grouped  the fair CPU grouped GEMM: slots sorted into an [E, C, d]
                  buffer, one batched matmul per weight, C = the measured largest
                  group rounded up to 8 (an oracle capacity; dropless here).

Also measured in the same run: this machine's streaming read bandwidth (jnp.sum
over a 1 GiB array) and copy bandwidth, to put gather_gemv's expert-weight
bytes/s against. Ratios are `<impl>_over_gather_gemv` times at each token
count (> 1: gather_gemv is faster). The GPU-on-paper roofline for tml_small's
decode MoE on an H200 is computed from experiments/configs/tml_small.py.
"""

from __future__ import annotations

import datetime
import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments.bench import common
from moe import grouped_gemm
from moe import layer as layer_lib
from moe import router as router_lib
from moe.config import MoEConfig

D, E, K, F = 1024, 64, 4, 512
H200_HBM_BYTES_PER_S = 4.8e12

_TOKENS = flags.DEFINE_list("tokens", ["1", "2", "4", "8", "16", "256", "1024"],
                            "Token counts timed.")
_IMPLS = flags.DEFINE_list("impls", ["gather_gemv", "ragged_dot", "dense", "padded_grouped"],
                           "Implementations timed (must include gather_gemv).")


def _weights():
  ks = jax.random.split(jax.random.key(0), 3)
  wg = jax.random.normal(ks[0], (E, D, F), jnp.float32) * D ** -0.5
  wu = jax.random.normal(ks[1], (E, D, F), jnp.float32) * D ** -0.5
  wd = jax.random.normal(ks[2], (E, F, D), jnp.float32) * F ** -0.5
  return wg, wu, wd


def memory_bandwidth(gib: float = 1.0) -> dict:
  """Streaming read (sum) and copy bandwidth in GB/s, medians of interleaved runs."""
  n = int(gib * 2**30 // 4)
  a = jnp.ones((n,), jnp.float32) * 1.5
  read = jax.jit(jnp.sum)
  copy = jax.jit(lambda v: v * 2.0)
  ms = common.interleaved_medians({"read": lambda: read(a), "copy": lambda: copy(a)},
                                  rounds=5, inner=2)
  nbytes = n * 4
  return {"mem_read_gbps": nbytes / ms["read"] / 1e6,
          "mem_copy_gbps": 2 * nbytes / ms["copy"] / 1e6}


def _capacity(expert_ids) -> int:
  counts = np.bincount(np.asarray(expert_ids).reshape(-1), minlength=E)
  return int(math.ceil(max(int(counts.max()), 1) / 8) * 8)


def bench_tokens(t: int, weights, impls) -> dict:
  ks = jax.random.split(jax.random.key(t), 2)
  x = jax.random.normal(ks[0], (t, D), jnp.float32)
  routing = router_lib.route(jax.random.normal(ks[1], (t, E)), K)
  capacity = _capacity(routing.expert_ids)
  fns = {
      "gather_gemv": jax.jit(layer_lib.ffn_gather_gemv),
      "ragged_dot": jax.jit(layer_lib.ffn_ragged_dot),
      "dense": jax.jit(layer_lib.ffn_dense),
      "padded_grouped": jax.jit(
          lambda x, r, *w: grouped_gemm.padded_grouped_ffn(
              x, r.expert_ids, r.gates, *w, capacity=capacity)),
  }
  fns = {k: v for k, v in fns.items() if k in impls}
  outs = {k: np.asarray(fn(x, routing, *weights)) for k, fn in fns.items()}
  ref = outs.get("dense", next(iter(outs.values())))
  max_err = max(float(np.max(np.abs(o - ref))) for o in outs.values())
  decode = t <= 16
  ms = common.interleaved_medians(
      {k: (lambda fn=fn: fn(x, routing, *weights)) for k, fn in fns.items()},
      rounds=7 if decode else 3, inner=3 if decode else 1)
  return {"ms": ms, "capacity": capacity, "max_abs_diff": max_err}


def tml_small_roofline() -> dict:
  """Routed-expert bytes per micro-turn / H200 HBM bandwidth (bf16 weights)."""
  from experiments.configs import tml_small
  cfg = tml_small.get_config()
  m, lay = cfg.model, cfg.layout
  bytes_per = jnp.dtype(m.param_dtype).itemsize
  expert_bytes = layer_lib.expert_param_count(
      m.d_model, MoEConfig.from_config(m.moe)) * bytes_per
  layers = m.num_layers - m.first_dense_layers
  per_token = m.moe.top_k * expert_bytes * layers
  shared_per_token = m.moe.num_shared_experts * expert_bytes * layers
  audio = int(round(lay.turn_ms / lay.mel_hop_ms)) // lay.frames_per_position
  video = ((lay.video.height // lay.video.patch) * (lay.video.width // lay.video.patch)
           if lay.video.enabled else 0)
  input_tokens = audio + video + lay.user_text_slots + lay.background_text_slots
  output_tokens = lay.model_text_slots + audio
  # Output slots are decoded one at a time: each step reads its k experts per layer.
  decode_bytes = output_tokens * per_token
  # The input block (one append) touches each expert with prob 1 - (1 - k/E)^n.
  touched = m.moe.num_experts * (1 - (1 - m.moe.top_k / m.moe.num_experts) ** input_tokens)
  append_bytes = touched * expert_bytes * layers
  all_routed = m.moe.num_experts * expert_bytes * layers
  return {
      "tml_d_model": m.d_model, "tml_layers": layers, "tml_experts": m.moe.num_experts,
      "tml_top_k": m.moe.top_k, "tml_d_ff": m.moe.d_ff,
      "tml_shared": m.moe.num_shared_experts,
      "tml_routed_gb_per_decode_token": per_token / 1e9,
      "tml_shared_gb_per_token": shared_per_token / 1e9,
      "tml_decode_slots_per_turn": output_tokens,
      "tml_decode_routed_gb_per_turn": decode_bytes / 1e9,
      "tml_decode_routed_ms_per_token_h200": per_token / H200_HBM_BYTES_PER_S * 1e3,
      "tml_decode_routed_ms_per_turn_h200": decode_bytes / H200_HBM_BYTES_PER_S * 1e3,
      "tml_append_tokens": input_tokens,
      "tml_append_experts_touched_per_layer": touched,
      "tml_append_routed_gb": append_bytes / 1e9,
      "tml_append_routed_ms_h200": append_bytes / H200_HBM_BYTES_PER_S * 1e3,
      "tml_all_routed_gb": all_routed / 1e9,
  }


def main(argv):
  del argv
  tokens = [int(v) for v in _TOKENS.value]
  impls = list(_IMPLS.value)
  if "gather_gemv" not in impls:
    raise ValueError("--impls: must include gather_gemv (ratios are against it)")

  print(f"# {datetime.datetime.now().isoformat(timespec='seconds')}  {common.machine()}")
  print(f"# layer d={D} E={E} k={K} d_ff={F} float32")
  figures = {"machine": common.machine(), "d": D, "E": E, "k": K, "d_ff": F}
  bw = memory_bandwidth()
  figures.update(bw)
  print(f"# memory: read {bw['mem_read_gbps']:.1f} GB/s, copy {bw['mem_copy_gbps']:.1f} GB/s")
  weights = _weights()
  expert_bytes = 3 * D * F * 4
  header = "  T  " + "".join(f"{k:>16}" for k in impls) + "   gg GB/s  vs read"
  print(header)
  from tqdm import tqdm
  it = tqdm(tokens, desc="moe bench", leave=False)
  for t in it:
    r = bench_tokens(t, weights, impls)
    ms = r["ms"]
    gbps = t * K * expert_bytes / ms["gather_gemv"] / 1e6
    for k, v in ms.items():
      figures[f"{k}_t{t}_ms"] = v
      if k != "gather_gemv":
        figures[f"{k}_over_gather_gemv_t{t}_ratio"] = v / ms["gather_gemv"]
    figures[f"gather_gemv_weight_gbps_t{t}"] = gbps
    figures[f"gather_gemv_weight_bw_over_read_t{t}_ratio"] = gbps / bw["mem_read_gbps"]
    figures[f"max_abs_diff_t{t}"] = r["max_abs_diff"]
    figures[f"padded_capacity_t{t}"] = r["capacity"]
    tqdm.write(f"{t:5d}" + "".join(f"{ms[k]:14.2f}ms" for k in impls)
          + f"{gbps:10.1f}  {gbps / bw['mem_read_gbps']:6.2f}x   (max|diff| "
          f"{r['max_abs_diff']:.1e}, C={r['capacity']})")
  decode = [t for t in tokens if t <= 8]
  for base in ("ragged_dot", "dense", "padded_grouped"):
    if base in impls and decode:
      figures[f"min_{base}_over_gather_gemv_decode_le8_ratio"] = min(
          figures[f"{base}_over_gather_gemv_t{t}_ratio"] for t in decode)
  roof = tml_small_roofline()
  figures.update(roof)
  print(f"# tml_small on H200 (bf16, {H200_HBM_BYTES_PER_S / 1e12} TB/s): "
        f"{roof['tml_routed_gb_per_decode_token']:.2f} GB routed per decode token -> "
        f"{roof['tml_decode_routed_ms_per_token_h200']:.2f} ms; "
        f"{roof['tml_decode_slots_per_turn']} decode slots per turn -> "
        f"{roof['tml_decode_routed_ms_per_turn_h200']:.1f} ms; input append of "
        f"{roof['tml_append_tokens']} tokens touches "
        f"{roof['tml_append_experts_touched_per_layer']:.0f}/{roof['tml_experts']} "
        f"experts -> {roof['tml_append_routed_gb']:.0f} GB, "
        f"{roof['tml_append_routed_ms_h200']:.0f} ms")
  common.emit(figures)
  return 0
