"""Lowering the Pallas kernels for an H200 on a machine that has no GPU.

JAX lowers for a device it does not have when an abstract device is set
(`jax.sharding.use_abstract_mesh` with an `AbstractMesh` whose
`abstract_device` is the GPU): `jax.jit(f).trace(*args).lower(
lowering_platforms=("cuda",))` then runs the Pallas Triton lowering for that
GPU's compute capability (sm_90 for "NVIDIA H200", jax/_src/pallas/triton/
gpu_info.py) and every `pallas_call` becomes a `__gpu$xla.gpu.triton` custom
call carrying the kernel's Triton IR. Nothing here needs a CUDA plugin.

`lower_for_gpu(kernel, fn, *args)` does that and re-raises any failure as a
`GpuLoweringError` that names the kernel. `triton_calls(lowered)` lists the
Triton kernels in a lowered program (name, grid, warps, stages, Triton IR), so
a test can check that a kernel really became a Triton call and that a
gradient's backward did not (it is XLA's). `compile_triton_call` takes one
of those Triton IRs further (`compile_ttir`), to an sm_90a cubin with the
`triton` wheel's compiler and its bundled ptxas, and reports shared memory,
registers and spills: what decides whether a tile fits an H200.

`H200_BLOCKS` is the block-size choice for an H200 and `kernel_cases(shapes)`
the kernels at the `demo` and `tml_small` shapes, used by
tests/pallas_kernels/gpu_lowering_test.py and experiments/gpu_check.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import subprocess
import tempfile
from typing import Any, Callable

import jax
import jax.numpy as jnp

from pallas_kernels import batch_invariant as bi
from pallas_kernels import split_kv_attention as ska
from pallas_kernels.numerics import Numerics

TRITON_CUSTOM_CALL = "__gpu$xla.gpu.triton"
H200 = jax.sharding.AbstractDevice(device_kind="NVIDIA H200", num_cores=132,
                                   platform="cuda")
# An H200 (sm_90): 227 KiB of shared memory per block (opt-in maximum),
# 64K 32-bit registers per SM, at most 255 per thread.
H200_SHARED_MEMORY_BYTES = 227 * 1024


# Triton contracts a * b + c into one FMA by default in triton 3.9 (setup.cfg
# pins < 3.10; 3.10 turns it off), which changes the bits. The compile checks
# here name it explicitly, as the runs they stand for get it.
FP_FUSION = True


class GpuLoweringError(RuntimeError):
  """A kernel did not lower (or compile) for the GPU; the message names it."""


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """The kernels' block sizes for one GPU (each is part of the numerics).

  H200 (`H200_BLOCKS`), with num_warps 4 (one warpgroup per program):
  - block_rows 64: the matmul's row tile is the M of one Hopper warpgroup MMA
    (wgmma is m64nNk16), so a [64, 64] x [64, 128] bf16 step per K tile
    (batch_invariant._PALLAS_BLOCK_K, _PALLAS_BLOCK_N) is one wgmma chain with
    a [64, 128] f32 accumulator (64 registers per thread). Smaller row tiles
    fall back to mma.sync m16n8k16. The norms and softmaxes use the same rows
    per program.
  - block_q 16: an attention block's rows are (query, group) pairs, block_q x
    GQA ratio 4 (demo 8/2 heads, tml_small 32/8) = 64 rows, again one wgmma M.
    Its KV tile is 128 slots (split_kv_attention.kv_tile for splits that are
    multiples of 128): K and V tiles of [128, 128] bf16 at tml_small's head
    dim are 32 KiB each, a [64, 128] f32 score tile sits in registers.
  - split_size is the model's (demo 256, tml_small 4096), never a GPU choice:
    it fixes the bits of a cache.
  Triton needs every block a power of two and a dot's M, N, K >= 16.
  """
  block_rows: int = 64
  block_q: int = 16

  def numerics(self, split_size: int) -> Numerics:
    return Numerics(mode="invariant", impl="pallas", split_size=split_size,
                    block_q=self.block_q, block_rows=self.block_rows,
                    interpret=False)


H200_BLOCKS = BlockSizes()


@contextlib.contextmanager
def abstract_gpu(device=H200):
  """Traces and lowers inside for `device` (an AbstractDevice), not the host."""
  mesh = jax.sharding.AbstractMesh((), (), abstract_device=device)
  with jax.sharding.use_abstract_mesh(mesh):
    yield


@dataclasses.dataclass(frozen=True)
class TritonCall:
  name: str
  grid: tuple[int, int, int]
  num_warps: int
  num_stages: int
  ir: bytes          # the kernel's Triton IR (MLIR bytecode), as XLA gets it

  def ttir(self) -> str:
    """The Triton IR as text (what `compile_ttir` takes)."""
    from jax._src.lib.mlir import ir
    from jax._src.pallas.triton import lowering as triton_lowering
    with triton_lowering._new_ir_context():
      return str(ir.Module.parse(self.ir))


@dataclasses.dataclass(frozen=True)
class Lowered:
  kernel: str
  platform: str
  device_kind: str
  stablehlo: str
  triton: tuple[TritonCall, ...]

  @property
  def triton_names(self) -> list[str]:
    return [c.name for c in self.triton]


def _custom_calls(module_op):
  for region in module_op.regions:
    for block in region.blocks:
      for op in block.operations:
        if op.operation.name == "stablehlo.custom_call":
          yield op
        yield from _custom_calls(op.operation)


def triton_calls(lowered) -> tuple[TritonCall, ...]:
  """The `__gpu$xla.gpu.triton` custom calls of a jax `Lowered`, in order."""
  out = []
  for op in _custom_calls(lowered.compiler_ir("stablehlo").operation):
    target = op.attributes["call_target_name"]
    if str(target).strip('"') != TRITON_CUSTOM_CALL:
      continue
    cfg = op.attributes["mhlo.backend_config"]
    grid = tuple(int(cfg[f"grid_{a}"].value) for a in "xyz")
    out.append(TritonCall(name=cfg["name"].value, grid=grid,
                          num_warps=int(cfg["num_warps"].value),
                          num_stages=int(cfg["num_stages"].value),
                          ir=cfg["ir"].value_bytes))
  return tuple(out)


def lower_for_gpu(kernel: str, fn: Callable, *args, device=H200,
                  platform: str = "cuda") -> Lowered:
  """jit(fn) traced and lowered for `device`; errors name `kernel`.

  args are arrays or jax.ShapeDtypeStructs. The Pallas kernels inside must be
  built with interpret=False (the compiled kernel, as on the GPU).
  """
  try:
    with abstract_gpu(device):
      lowered = jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,))
    text = lowered.as_text()
    calls = triton_calls(lowered) if platform in ("cuda", "rocm") else ()
  except Exception as e:  # noqa: BLE001 - re-raised with the kernel's name
    msg = str(e).strip().splitlines()
    first = msg[0] if msg else ""
    raise GpuLoweringError(
        f"{kernel}: does not lower for {platform} ({device.device_kind}): "
        f"{type(e).__name__}: {first}") from e
  return Lowered(kernel=kernel, platform=platform, device_kind=device.device_kind,
                 stablehlo=text, triton=calls)


# ---------------------------------------------------------------------------
# Triton IR -> sm_90a cubin with the triton wheel (no GPU needed).
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Compiled:
  name: str
  arch: str                 # the PTX target, e.g. 'sm_90a'
  cubin_bytes: int
  shared_bytes: int
  registers: int | None     # per thread, from ptxas -v
  spill_bytes: int | None   # spill stores, from ptxas -v
  mma: str                  # 'wgmma' (Hopper warpgroup MMA), 'mma.sync' or 'none'

  def fits(self, shared_limit: int = H200_SHARED_MEMORY_BYTES) -> bool:
    return self.shared_bytes <= shared_limit


def ptxas_info(ptx: str, arch: str = "sm_90a") -> tuple[int | None, int | None]:
  """(registers per thread, spill store bytes) that ptxas -v reports."""
  from triton.backends.nvidia import compiler as nv
  with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
    f.write(ptx)
    f.flush()
    proc = subprocess.run([nv.get_ptxas(90).path, f"-arch={arch}", "-v", f.name,
                           "-o", "/dev/null"], capture_output=True, text=True,
                          timeout=300)
  log = proc.stdout + proc.stderr
  regs = re.search(r"Used (\d+) registers", log)
  spill = re.search(r"(\d+) bytes spill stores", log)
  return (int(regs.group(1)) if regs else None,
          int(spill.group(1)) if spill else None)


def compile_ttir(name: str, ttir: str, *, capability: int = 90, num_warps: int = 4,
                 num_stages: int = 3, cache_dir: str | None = None) -> Compiled:
  """Compiles Triton IR text for CUDA `capability` to a cubin; names `name` on error.

  Uses the installed triton wheel (its own copy of Triton, not the one inside
  XLA that compiles the custom call on a GPU, so this is a close check of the
  tile's resources, not the GPU's exact binary).
  """
  import os
  import triton
  from triton.backends.compiler import GPUTarget
  target = GPUTarget("cuda", capability, 32)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, f"{name}.ttir")
    with open(path, "w") as f:
      f.write(ttir)
    env = {"TRITON_CACHE_DIR": cache_dir or os.path.join(tmp, "cache")}
    try:
      with _env(env):
        k = triton.compile(path, target=target,
                           options=dict(num_warps=num_warps, num_stages=num_stages,
                                        enable_fp_fusion=FP_FUSION))
    except Exception as e:  # noqa: BLE001
      raise GpuLoweringError(f"{name}: Triton does not compile it for sm_{capability}: "
                             f"{type(e).__name__}: {str(e).strip()[:500]}") from e
  return compiled_info(name, k, capability)


def compiled_info(name, k, capability) -> Compiled:
  ptx = k.asm["ptx"]
  arch = re.search(r"^\.target (\S+)", ptx, re.M)
  regs, spill = ptxas_info(ptx, arch.group(1) if arch else f"sm_{capability}a")
  mma = "wgmma" if "wgmma" in ptx else ("mma.sync" if "mma.sync" in ptx else "none")
  return Compiled(name=name, arch=arch.group(1) if arch else "?",
                  cubin_bytes=len(k.asm["cubin"]), shared_bytes=int(k.metadata.shared),
                  registers=regs, spill_bytes=spill, mma=mma)


@contextlib.contextmanager
def _env(values):
  import os
  old = {k: os.environ.get(k) for k in values}
  os.environ.update(values)
  try:
    yield
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def compile_triton_call(call: TritonCall, **kw) -> Compiled:
  return compile_ttir(call.name, call.ttir(), num_warps=call.num_warps,
                      num_stages=call.num_stages, **kw)


# ---------------------------------------------------------------------------
# The kernels at the model's shapes.
# ---------------------------------------------------------------------------
# (d_model, heads, kv heads, head_dim, split_size, dtype) of the two configs
# (experiments/configs/demo.py, tml_small.py), copied here because
# pallas_kernels may not import the configs; tests check they agree.
SHAPES = {
    "demo": dict(d_model=256, d_ff=768, num_heads=8, num_kv_heads=2, head_dim=32,
                 split_size=256, dtype=jnp.float32, tokens=700, cache=1024),
    "tml_small": dict(d_model=4096, d_ff=4096, num_heads=32, num_kv_heads=8,
                      head_dim=128, split_size=4096, dtype=jnp.bfloat16,
                      tokens=512, cache=8192),
}


@dataclasses.dataclass(frozen=True)
class KernelCase:
  """One kernel at one shape: fn(*args) compiled, reference(*args) to check it.

  `triton` is the Triton kernels its lowering must contain, in order; a
  gradient case lists only the forward's kernels (its backward is XLA).
  """
  name: str
  fn: Callable
  reference: Callable
  args: tuple
  triton: tuple[str, ...]
  grad: bool = False
  flops: float = 0.0
  bytes: float = 0.0

  def specs(self):
    return tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) if hasattr(a, "shape") else a
                 for a in self.args)


def spec(shape, dtype):
  return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _sum_f32(f):
  return lambda *a: jnp.sum(f(*a).astype(jnp.float32))


def kernel_cases(shape: str = "demo", blocks: BlockSizes = H200_BLOCKS,
                 make: Callable = spec) -> list[KernelCase]:
  """Every Pallas kernel of pallas_kernels at `shape` ('demo' or 'tml_small').

  make(shape, dtype) builds an argument (ShapeDtypeStructs for lowering,
  random arrays on a GPU). Rows: the shape's `tokens` (a training chunk);
  decode: 4 sequences of one query against a `cache`-slot cache.
  """
  s = SHAPES[shape]
  dt, d, f = s["dtype"], s["d_model"], s["d_ff"]
  hq, hkv, hd, split = s["num_heads"], s["num_kv_heads"], s["head_dim"], s["split_size"]
  num = blocks.numerics(split)
  t = s["tokens"]
  size = jnp.dtype(dt).itemsize
  cases = []

  def add(name, fn, ref, args, triton, flops=0.0, nbytes=0.0, grad=True):
    cases.append(KernelCase(f"{name}[{shape}]", fn, ref, args, triton, False, flops,
                            nbytes))
    if grad:
      diff = tuple(i for i, a in enumerate(args)
                   if jnp.issubdtype(a.dtype, jnp.floating))
      # value_and_grad, as training takes it: the loss needs the forward, so
      # the kernel stays (jax.grad alone lets XLA drop an unused forward).
      g = jax.value_and_grad(_sum_f32(fn), argnums=diff)
      gr = jax.value_and_grad(_sum_f32(ref), argnums=diff)
      cases.append(KernelCase(f"{name}.grad[{shape}]", g, gr, args, triton, True))

  x, w_nk, w_kn = make((t, d), dt), make((f, d), dt), make((d, f), dt)
  mm_flops, mm_bytes = 2.0 * t * d * f, float((t * d + d * f + t * f) * size)
  add("matmul_nk", lambda x, w: bi.matmul(x, w, num, "nk"),
      lambda x, w: bi.matmul_reference(x, w, "nk"), (x, w_nk), ("_matmul_kernel",),
      mm_flops, mm_bytes)
  add("matmul_kn", lambda x, w: bi.matmul(x, w, num, "kn"),
      lambda x, w: bi.matmul_reference(x, w, "kn"), (x, w_kn), ("_matmul_kernel",),
      mm_flops, mm_bytes, grad=False)
  scale = make((d,), dt)
  add("rms_norm", lambda x, sc: bi.rms_norm(x, sc, 1e-6, num),
      lambda x, sc: bi.rms_norm_reference(x, sc, 1e-6), (x, scale), ("rms_norm",),
      5.0 * t * d, 2.0 * t * d * size)
  logits = make((t, 4 * d), dt)
  add("softmax", lambda z: bi.softmax(z, num), bi.softmax_reference, (logits,),
      ("softmax",), 5.0 * t * 4 * d, 2.0 * t * 4 * d * size)
  add("log_softmax", lambda z: bi.log_softmax(z, num), bi.log_softmax_reference,
      (logits,), ("log_softmax",), 5.0 * t * 4 * d, 2.0 * t * 4 * d * size)

  # Training: a whole sequence attends to itself (one split's worth at
  # tml_small, whose split is 4096 slots).
  sq = split if shape == "tml_small" else t
  skv = -(-sq // split) * split
  q, k = make((1, sq, hq, hd), dt), make((1, skv, hkv, hd), dt)
  v = make((1, skv, hkv, hd), dt)

  def prefill(q, k, v):
    return ska.attention(q, k, v, q_offset=0, kv_len=sq, numerics=num)

  def prefill_ref(q, k, v):
    return ska.attention_reference(q, k, v, q_offset=0, kv_len=sq)

  att_flops = 4.0 * sq * skv / 2 * hq * hd
  add("attention_prefill", prefill, prefill_ref, (q, k, v),
      ("_partials_kernel", "_combine_kernel"), att_flops,
      float((2 * sq * hq * hd + 2 * skv * hkv * hd) * size))

  b, cap = 4, s["cache"]
  qd, kc, vc = make((b, 1, hq, hd), dt), make((b, cap, hkv, hd), dt), make(
      (b, cap, hkv, hd), dt)
  lens = jnp.asarray([cap, cap - 1, cap // 2, 1], jnp.int32)

  def decode(q, k, v):
    return ska.attention(q, k, v, q_offset=lens - 1, kv_len=lens, numerics=num)

  def decode_ref(q, k, v):
    return ska.attention_reference(q, k, v, q_offset=lens - 1, kv_len=lens)

  add("attention_decode", decode, decode_ref, (qd, kc, vc),
      ("_partials_kernel", "_combine_kernel"), 4.0 * b * cap * hq * hd,
      float(2 * b * cap * hkv * hd * size), grad=False)
  return cases


def lower_case(case: KernelCase, device=H200) -> Lowered:
  """Lowers one case for `device` and checks its Triton kernels."""
  low = lower_for_gpu(case.name, case.fn, *case.specs(), device=device)
  if tuple(low.triton_names) != case.triton:
    raise GpuLoweringError(f"{case.name}: expected the Triton kernels {case.triton}, "
                           f"the lowering has {tuple(low.triton_names)}")
  return low


def describe(low: Lowered) -> dict[str, Any]:
  """A JSON-able summary of a lowering."""
  return {"kernel": low.kernel, "platform": low.platform, "device": low.device_kind,
          "triton": [{"name": c.name, "grid": list(c.grid), "num_warps": c.num_warps,
                      "num_stages": c.num_stages} for c in low.triton]}


@functools.cache
def triton_unavailable() -> str:
  """Why the triton wheel (compiler + ptxas) cannot compile here ('' if it can)."""
  try:
    from triton.backends.nvidia import compiler as nv
    nv.get_ptxas(90).path
  except Exception as e:  # noqa: BLE001
    return f"{type(e).__name__}: {e}"
  return ""


# ---------------------------------------------------------------------------
# The check experiments/gpu_check.py runs: on a GPU, every kernel against its
# reference, timed and run twice for bits; with dry_run, lowered (and
# compiled to sm_90a) for an abstract H200.
# ---------------------------------------------------------------------------
def random_maker(seed: int = 0):
  """make(shape, dtype) -> a fresh random array (normal; ones-centred [d] scales)."""
  keys = iter(jax.random.split(jax.random.key(seed), 64))

  def make(shape, dtype):
    x = jax.random.normal(next(keys), tuple(shape), jnp.float32)
    if len(shape) == 1:
      x = 1.0 + 0.1 * x
    return x.astype(dtype)
  return make


def _leaves(tree):
  return [x for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "dtype")]


def _max_rel_err(got, want) -> float:
  err = 0.0
  for g, w in zip(_leaves(got), _leaves(want)):
    g, w = jnp.asarray(g, jnp.float32), jnp.asarray(w, jnp.float32)
    err = max(err, float(jnp.max(jnp.abs(g - w)) / (1.0 + jnp.max(jnp.abs(w)))))
  return err


def _same_bits(a, b) -> bool:
  import numpy as np
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(_leaves(a), _leaves(b)))


def _median_ms(fn, args, rounds: int) -> float:
  import statistics
  import time
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - t0) * 1e3)
  return statistics.median(times)


def tolerance(case: KernelCase) -> float:
  """Max error relative to the reference's largest value.

  f32: 5e-3, because at the default matmul precision the Pallas Triton
  lowering runs an f32 x f32 dot as TF32 on the tensor cores (10-bit
  mantissa), as XLA's GPU dots do; jax_default_matmul_precision='highest'
  makes them IEEE f32 (slower; tml_small's partials kernel then spills).
  """
  bf16 = any(getattr(a, "dtype", None) == jnp.bfloat16 for a in case.args)
  return 3e-2 if bf16 else 5e-3


def check_case(case: KernelCase, *, dry_run: bool, rounds: int = 20,
               compile_triton: bool = True) -> dict[str, Any]:
  """One case's record; `ok` False (with `error`) instead of raising."""
  rec: dict[str, Any] = {"case": case.name, "triton": list(case.triton),
                         "backward": "xla" if case.grad else None}
  try:
    if dry_run:
      low = lower_case(case)
      rec["lowered"] = describe(low)["triton"]
      if compile_triton and not case.grad and not triton_unavailable():
        rec["sm_90a"] = [dataclasses.asdict(compile_triton_call(c)) for c in low.triton]
        bad = [c for c in rec["sm_90a"]
               if c["shared_bytes"] > H200_SHARED_MEMORY_BYTES or (c["spill_bytes"] or 0)]
        if bad:
          raise GpuLoweringError(f"{case.name}: over an H200's resources: {bad}")
      rec["would_run"] = (f"{case.name}: compiled kernel vs reference, max rel err "
                          f"<= {tolerance(case)}, two runs bit-equal, median of "
                          f"{rounds} timed runs")
    else:
      fn, ref = jax.jit(case.fn), jax.jit(case.reference)
      got, again, want = fn(*case.args), fn(*case.args), ref(*case.args)
      rec["max_rel_err"] = _max_rel_err(got, want)
      rec["tolerance"] = tolerance(case)
      rec["bits_fixed_run_to_run"] = _same_bits(got, again)
      rec["kernel_ms"] = _median_ms(fn, case.args, rounds)
      rec["reference_ms"] = _median_ms(ref, case.args, rounds)
      if case.bytes and rec["kernel_ms"]:
        rec["GB_per_s"] = case.bytes / rec["kernel_ms"] / 1e6
      if case.flops and rec["kernel_ms"]:
        rec["TFLOP_per_s"] = case.flops / rec["kernel_ms"] / 1e9
      if rec["max_rel_err"] > rec["tolerance"] or not rec["bits_fixed_run_to_run"]:
        raise GpuLoweringError(f"{case.name}: err {rec['max_rel_err']:.3g} (tol "
                               f"{rec['tolerance']}), bits fixed "
                               f"{rec['bits_fixed_run_to_run']}")
    rec["ok"] = True
  except Exception as e:  # noqa: BLE001 - reported per case
    rec["ok"] = False
    rec["error"] = f"{type(e).__name__}: {str(e)[:600]}"
  return rec


def check_kernels(shapes=("demo", "tml_small"), *, dry_run: bool, rounds: int = 20,
                  compile_triton: bool = True, log=print) -> list[dict[str, Any]]:
  """check_case for every kernel case at every shape; logs one line per case."""
  make = spec if dry_run else random_maker()
  out = []
  for shape in shapes:
    for case in kernel_cases(shape, make=make):
      rec = check_case(case, dry_run=dry_run, rounds=rounds,
                       compile_triton=compile_triton)
      out.append(rec)
      log(_line(rec))
  return out


def _line(rec) -> str:
  status = "ok  " if rec["ok"] else "FAIL"
  if not rec["ok"]:
    return f"{status} {rec['case']}: {rec['error']}"
  if "kernel_ms" in rec:
    return (f"{status} {rec['case']}: {rec['kernel_ms']:.3f} ms (reference "
            f"{rec['reference_ms']:.3f} ms), err {rec['max_rel_err']:.2e}")
  kernels = ", ".join(f"{t['name']} grid {tuple(t['grid'])}" for t in rec["lowered"])
  extra = ""
  if rec.get("sm_90a"):
    extra = "; sm_90a " + ", ".join(
        f"{c['name']} {c['shared_bytes'] // 1024} KiB smem {c['registers']} regs "
        f"{c['mma']}" for c in rec["sm_90a"])
  back = " (backward: XLA)" if rec.get("backward") else ""
  return f"{status} {rec['case']}: Triton {kernels}{back}{extra}"
