r"""Every Pallas and Triton kernel on a GPU: `python -m experiments.gpu_check [--dry_run]`.

On a GPU machine (an H200): each kernel of pallas_kernels (split-KV
attention prefill and decode, the invariant matmul, RMSNorm, softmax,
log-softmax, and the training gradients through them) at the `demo` and
`tml_small` shapes, compiled, against its reference, run twice for bits and
timed; then the Triton gather+GEMV at tml_small's experts against its
reference, with its weight bandwidth against the H200's 4.8 TB/s.

With `--dry_run` (CPU, no GPU): the same kernels lowered for an abstract
NVIDIA H200 (sm_90) and each Triton kernel compiled to an sm_90a cubin with
the triton wheel's compiler and ptxas (shared memory, registers, spills); the
Triton gather+GEMV source compiled the same way, its jax-triton wrapper
lowered for cuda where jax's CUDA plugin can be found (moe/gpu_lowering.py),
and the Pallas gather+GEMV lowered for an abstract TPU. Either way, `--model`'s
forward and streaming step (demo) are lowered for the H200 with the GPU
kernels, listing the Triton calls and what stays XLA. It prints what the GPU
run would do.

Either way it prints one line per check, then one JSON object (also written to
--out if given), and exits 1 if any check failed. Block sizes:
pallas_kernels/gpu_lowering.py (BlockSizes), moe/gpu_lowering.py (TritonBlocks).
"""

import json
import sys

from absl import flags

from experiments import cli

_DRY_RUN = flags.DEFINE_bool("dry_run", False,
                             "Lower and compile for an abstract H200 instead of running.")
_SHAPES = flags.DEFINE_string("shapes", "demo,tml_small",
                              "Comma list of kernel shapes: demo, tml_small.")
_MOE_SHAPE = flags.DEFINE_string("moe_shape", "tml_small",
                                 "MoE expert shape (moe/gpu_lowering.MOE_SHAPES); '' skips.")
_ROUNDS = flags.DEFINE_integer("rounds", 20, "Timed runs per kernel (median).")
_COMPILE = flags.DEFINE_bool("compile_triton", True,
                             "With --dry_run, compile each Triton kernel to sm_90a.")
_OUT = flags.DEFINE_string("out", "", "Also write the JSON object here.")
_MODEL = flags.DEFINE_string("model", "demo", "Config whose forward and streaming step are "
                             "lowered with the GPU kernels, listing what stays XLA "
                             "(experiments/gpu_model_lowering.py); '' skips.")


def _model_lowering(name: str) -> list[dict]:
  """The model's steps lowered for an abstract H200: one record per step."""
  if not name:
    return []
  import importlib
  from experiments import gpu_model_lowering as gml
  config = importlib.import_module(f"experiments.configs.{name}").get_config()
  out = []
  try:
    recs = gml.lower_model(config)
  except Exception as e:  # noqa: BLE001 - reported as a failed check
    print(f"FAIL {name} model lowering: {e}")
    return [{"case": f"model[{name}]", "ok": False, "error": str(e)}]
  for rec in recs:
    ok = not [op for op in rec.xla_ops if "dot" in op]
    print(f"{'ok  ' if ok else 'FAIL'} {name} {gml.format_lowering(rec)}")
    out.append({"case": f"{rec.step}[{name}]", "ok": ok, **rec.summary()})
  return out


def main(argv):
  del argv
  import jax
  from moe import gpu_lowering as moe_gpu
  from pallas_kernels import gpu_lowering as gpu

  dry = _DRY_RUN.value
  if not dry and jax.default_backend() != "gpu":
    sys.stderr.write(f"error: no GPU here (backend {jax.default_backend()!r}); "
                     "use --dry_run to lower and compile for an abstract H200\n")
    return 2
  device = (f"abstract {gpu.H200.device_kind} (sm_90), lowered on "
            f"{jax.default_backend()}" if dry else jax.devices()[0].device_kind)
  print(f"gpu_check: {'dry run, ' if dry else ''}{device}")
  kernels = gpu.check_kernels(cli.comma_list(_SHAPES.value), dry_run=dry,
                              rounds=_ROUNDS.value, compile_triton=_COMPILE.value)
  moe = (moe_gpu.check_moe(_MOE_SHAPE.value, dry_run=dry, rounds=_ROUNDS.value)
         if _MOE_SHAPE.value else [])
  model = _model_lowering(_MODEL.value)
  failed = [r["case"] for r in kernels + moe + model if not r["ok"]]
  result = {"dry_run": dry, "device": device, "jax": jax.__version__,
            "kernels": kernels, "moe": moe, "model": model, "failed": failed,
            "ok": not failed}
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(result, f, indent=1)
  print(json.dumps(result))
  return 1 if failed else 0


if __name__ == "__main__":
  cli.run(main)
