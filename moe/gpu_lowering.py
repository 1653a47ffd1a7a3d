"""The MoE gather+GEMV kernels for an H200 (and the Pallas one for a TPU), without one.

- The Triton source (moe/triton_kernels.py) compiles for a CUDA sm_90 target
  on a CPU machine: `triton.compile(ASTSource(...), target=GPUTarget("cuda",
  90, 32))` runs Triton's whole pipeline (TTIR, TTGIR, LLVM IR, PTX) and the
  ptxas that ships in the triton wheel, to an sm_90a cubin.
  `compile_gather_gemv` does it for both kernels at given shapes; a shape or
  syntax error in the source fails there, naming the kernel.
- The jax-triton wrapper (moe/triton_gather_gemv.py) cannot be lowered for
  cuda without jax's CUDA plugin: jax-triton builds its custom call's payload
  with `jaxlib.gpu_triton.TritonKernel`, which comes from the plugin's
  `_triton` extension (jax_cuda12_plugin / jax_cuda13_plugin), and asks that
  extension for the compute capability. `triton_call_lowering_blocker()`
  says exactly what is missing ('' when the plugin is there and it lowers).
- The Pallas gather+GEMV (moe/gather_gemv.py) is a TPU kernel: its expert ids
  are scalar-prefetch operands, which the Pallas Triton backend does not
  implement. It lowers for an abstract TPU (Mosaic `tpu_custom_call`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import tempfile

import jax
import jax.numpy as jnp

from moe import gather_gemv as gg
from pallas_kernels import gpu_lowering as gl

# tml_small's experts (experiments/configs/tml_small.py): d_model 4096, expert
# d_ff 1824, top-8 of 256; bf16 weights. demo has no MoE; 'small' is a test size.
MOE_SHAPES = {
    "tml_small": dict(d=4096, f=1824, k=8, experts=256, dtype=jnp.bfloat16, tokens=8),
    "small": dict(d=256, f=192, k=2, experts=8, dtype=jnp.float32, tokens=4),
}
TPU_V5E = jax.sharding.AbstractDevice(device_kind="TPU v5 lite", num_cores=1,
                                      platform="tpu")
_TRITON_DTYPES = {jnp.dtype(jnp.float32): "fp32", jnp.dtype(jnp.bfloat16): "bf16",
                  jnp.dtype(jnp.float16): "fp16"}


@dataclasses.dataclass(frozen=True)
class TritonBlocks:
  """Tiles of the Triton gather+GEMV on an H200 (powers of two, as Triton needs).

  A decode step is a gemv: each program streams one expert's weight tile and
  does 2 flop per weight element, so it is bound by HBM bandwidth (4.8 TB/s),
  not by the tensor cores. A 64 x 64 tile gives each program 8 KiB of bf16
  weights per step in 128-bit loads (8 bf16 per thread, 4 warps), and at
  tml_small (f 1824, d 4096) 29 f-tiles x 16 slots and 64 d-tiles x 2 tokens
  of programs for 132 SMs.
  """
  block_d: int = 64
  block_f: int = 64
  num_warps: int = 4


H200_TRITON_BLOCKS = TritonBlocks()


def _signature(names_types, constexprs):
  sig = dict(names_types)
  sig.update({n: "constexpr" for n in constexprs})
  return sig


def compile_gather_gemv(shape: str = "tml_small", blocks: TritonBlocks = H200_TRITON_BLOCKS,
                        capability: int = 90, cache_dir: str | None = None,
                        **overrides) -> list[gl.Compiled]:
  """Both Triton kernels compiled for sm_`capability` at MOE_SHAPES[shape].

  overrides replace entries of the shape (d, f, k, dtype) or the blocks
  (block_d, block_f). Raises GpuLoweringError naming the kernel on failure.
  """
  import triton
  from triton.backends.compiler import GPUTarget
  from triton.compiler import ASTSource
  from moe import triton_kernels as tk

  s = dict(MOE_SHAPES[shape], **{k: v for k, v in overrides.items()
                                 if k in MOE_SHAPES[shape]})
  block_d = overrides.get("block_d", blocks.block_d)
  block_f = overrides.get("block_f", blocks.block_f)
  wt = _TRITON_DTYPES[jnp.dtype(s["dtype"])]
  consts = dict(D=s["d"], F=s["f"], K=s["k"], BLOCK_D=block_d, BLOCK_F=block_f)
  kernels = [
      (tk.gate_up_kernel, [("x_ptr", f"*{wt}"), ("ids_ptr", "*i32"), ("wg_ptr", f"*{wt}"),
                           ("wu_ptr", f"*{wt}"), ("h_ptr", "*fp32")]),
      (tk.down_kernel, [("h_ptr", "*fp32"), ("ids_ptr", "*i32"), ("gates_ptr", "*fp32"),
                        ("wd_ptr", f"*{wt}"), ("y_ptr", "*fp32")]),
  ]
  target = GPUTarget("cuda", capability, 32)
  out = []
  with tempfile.TemporaryDirectory() as tmp:
    with gl._env({"TRITON_CACHE_DIR": cache_dir or os.path.join(tmp, "cache")}):
      for fn, ptrs in kernels:
        name = fn.fn.__name__
        try:
          src = ASTSource(fn, _signature(ptrs, consts), constexprs=consts)
          k = triton.compile(src, target=target,
                             options=dict(num_warps=blocks.num_warps,
                                          enable_fp_fusion=gl.FP_FUSION))
        except Exception as e:  # noqa: BLE001 - re-raised with the kernel's name
          raise gl.GpuLoweringError(
              f"{name} (moe/triton_kernels.py): Triton does not compile it for "
              f"sm_{capability} with {consts}: {type(e).__name__}: "
              f"{str(e).strip()[:800]}") from e
        out.append(gl.compiled_info(name, k, capability))
  return out


def problem_specs(shape: str = "small", make=gl.spec):
  s = MOE_SHAPES[shape]
  t, k, d, f, e, dt = s["tokens"], s["k"], s["d"], s["f"], s["experts"], s["dtype"]
  return (make((t, d), dt), make((t, k), jnp.int32), make((t, k), jnp.float32),
          make((e, d, f), dt), make((e, d, f), dt), make((e, f, d), dt))


def lower_triton_call(shape: str = "small", device=gl.H200) -> gl.Lowered:
  """gather_gemv(kernel='triton') lowered for cuda (needs jax's CUDA plugin)."""
  fn = functools.partial(gg.gather_gemv, kernel="triton")
  return gl.lower_for_gpu("gather_gemv[triton] (moe/triton_gather_gemv.py)", fn,
                          *problem_specs(shape), device=device)


@functools.cache
def triton_call_lowering_blocker() -> str:
  """Why jax-triton's triton_call cannot lower for cuda here ('' if it can)."""
  try:
    from jax._src.lib import gpu_triton
  except ImportError as e:
    return f"jax._src.lib.gpu_triton does not import: {e}"
  if not hasattr(gpu_triton, "TritonKernel"):
    return ("jax's CUDA plugin is not installed: jaxlib.gpu_triton has no "
            "TritonKernel / get_compute_capability, which come from the plugin's "
            "_triton extension (jax_cuda12_plugin or jax_cuda13_plugin, "
            "`pip install jax[cuda12]`); jax-triton's lowering builds its "
            "custom call with them")
  return ""


def count_triton_kernel_calls(stablehlo: str) -> int:
  return len(re.findall(r"custom_call @triton_kernel_call", stablehlo))


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cuda_plugin_dir() -> str:
  """A folder holding jax_cuda12_plugin (or 13) for lowering only, or ''.

  $JAX_CUDA_PLUGIN_PATH, else .venv/cuda-plugin (`pip install --no-deps
  --target .venv/cuda-plugin jax-cuda12-plugin==<jaxlib version>`: 9 MB, no
  CUDA libraries). It is kept out of the venv's own site-packages because
  importing it makes every `import jax` log "Could not find cuda drivers"."""
  for d in (os.environ.get("JAX_CUDA_PLUGIN_PATH", ""),
            os.path.join(REPO, ".venv", "cuda-plugin")):
    if d and any(os.path.isdir(os.path.join(d, f"jax_cuda{v}_plugin")) for v in (12, 13)):
      return d
  return ""


def lower_triton_call_with_plugin(shape: str = "small", plugin_dir: str = "") -> int:
  """lower_triton_call in a Python that sees the CUDA plugin; its triton_kernel_call count."""
  import subprocess
  import sys
  plugin_dir = plugin_dir or cuda_plugin_dir()
  code = ("import sys\nfrom moe import gpu_lowering as m\n"
          f"low = m.lower_triton_call({shape!r})\n"
          "print('TRITON_KERNEL_CALLS', m.count_triton_kernel_calls(low.stablehlo))\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([plugin_dir, REPO]),
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  found = re.search(r"TRITON_KERNEL_CALLS (\d+)", proc.stdout)
  if proc.returncode or not found:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    raise gl.GpuLoweringError(f"gather_gemv[triton] (moe/triton_gather_gemv.py): does "
                              f"not lower for cuda with the plugin in {plugin_dir}: "
                              + " | ".join(tail))
  return int(found.group(1))


def lower_pallas_for_tpu(shape: str = "small", device=TPU_V5E) -> gl.Lowered:
  """The Pallas (scalar-prefetch) gather+GEMV lowered for an abstract TPU."""
  fn = functools.partial(gg.gather_gemv, kernel="pallas")
  return gl.lower_for_gpu("gather_gemv[pallas] (moe/gather_gemv.py)", fn,
                          *problem_specs(shape), device=device, platform="tpu")


def lower_pallas_for_gpu(shape: str = "small", device=gl.H200) -> gl.Lowered:
  """The Pallas gather+GEMV for cuda: raises (scalar prefetch is TPU only)."""
  fn = functools.partial(gg.gather_gemv, kernel="pallas")
  return gl.lower_for_gpu("gather_gemv[pallas] (moe/gather_gemv.py)", fn,
                          *problem_specs(shape), device=device)


def _random_problem(shape: str, seed: int = 0):
  s = MOE_SHAPES[shape]
  t, k, d, f, e, dt = s["tokens"], s["k"], s["d"], s["f"], s["experts"], s["dtype"]
  ks = jax.random.split(jax.random.key(seed), 6)
  return (jax.random.normal(ks[0], (t, d), jnp.float32).astype(dt),
          jax.random.randint(ks[1], (t, k), 0, e, jnp.int32),
          jax.random.uniform(ks[2], (t, k), jnp.float32),
          (jax.random.normal(ks[3], (e, d, f), jnp.float32) * d ** -0.5).astype(dt),
          (jax.random.normal(ks[4], (e, d, f), jnp.float32) * d ** -0.5).astype(dt),
          (jax.random.normal(ks[5], (e, f, d), jnp.float32) * f ** -0.5).astype(dt))


def weight_bytes(shape: str) -> float:
  """HBM bytes of expert weights one gather+GEMV call reads (T * k experts)."""
  s = MOE_SHAPES[shape]
  return float(s["tokens"] * s["k"] * 3 * s["d"] * s["f"] * jnp.dtype(s["dtype"]).itemsize)


def check_moe(shape: str = "tml_small", *, dry_run: bool, rounds: int = 20,
              log=print) -> list[dict]:
  """The gather+GEMV records of experiments/gpu_check.py (never raises)."""
  out = []

  def record(name, fn, at=shape):
    rec = {"case": f"{name}[{at}]"}
    try:
      rec.update(fn())
      rec.setdefault("ok", True)
    except Exception as e:  # noqa: BLE001 - reported per case
      rec.update(ok=False, error=f"{type(e).__name__}: {str(e)[:600]}")
    out.append(rec)
    log(f"{'ok  ' if rec['ok'] else 'FAIL'} {rec['case']}: "
        + (rec.get("error") or rec.get("summary", "")))

  if dry_run:
    def compiled():
      cs = compile_gather_gemv(shape)
      return {"sm_90a": [dataclasses.asdict(c) for c in cs],
              "summary": "Triton source -> " + ", ".join(
                  f"{c.name} {c.arch} cubin {c.cubin_bytes} B, {c.registers} regs, "
                  f"{c.spill_bytes} B spills" for c in cs)}

    def triton_call():
      why = triton_call_lowering_blocker()
      if not why:
        n = count_triton_kernel_calls(lower_triton_call(shape).stablehlo)
      elif cuda_plugin_dir():
        n = lower_triton_call_with_plugin(shape)
      else:
        return {"skipped": why, "summary": f"skipped: {why}"}
      if n != 2:
        raise gl.GpuLoweringError(f"expected 2 triton_kernel_call custom calls, got {n}")
      return {"summary": "jax-triton wrapper lowered for cuda: 2 triton_kernel_call"}

    def tpu():
      low = lower_pallas_for_tpu("small")
      n = low.stablehlo.count("tpu_custom_call")
      return {"summary": f"Pallas scalar-prefetch kernel lowered for {TPU_V5E.device_kind}: "
                         f"{n} tpu_custom_call", "ok": n == 1}

    record("gather_gemv.triton_source", compiled)
    record("gather_gemv.triton_call", triton_call)
    record("gather_gemv.pallas_tpu", tpu, at="small")
    return out

  def run():
    from pallas_kernels.gpu_lowering import _max_rel_err, _median_ms, _same_bits
    args = _random_problem(shape)
    fn = jax.jit(functools.partial(gg.gather_gemv, kernel="triton"))
    ref = jax.jit(gg.gather_gemv_reference)
    got, again, want = fn(*args), fn(*args), ref(*args)
    ms = _median_ms(fn, args, rounds)
    gbs = weight_bytes(shape) / ms / 1e6
    rec = {"max_rel_err": _max_rel_err(got, want), "bits_fixed_run_to_run":
           _same_bits(got, again), "kernel_ms": ms,
           "reference_ms": _median_ms(ref, args, rounds), "weight_GB_per_s": gbs,
           "hbm_peak_fraction": gbs / 4800.0}
    rec["ok"] = rec["max_rel_err"] < 3e-2 and rec["bits_fixed_run_to_run"]
    rec["summary"] = (f"{ms:.3f} ms, {gbs:.0f} GB/s of weights "
                      f"({100 * gbs / 4800:.0f}% of 4.8 TB/s), err {rec['max_rel_err']:.2e}")
    return rec

  record("gather_gemv.triton", run)
  return out
