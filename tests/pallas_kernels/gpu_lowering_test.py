"""Every Pallas kernel lowered for an abstract NVIDIA H200 (sm_90) on the CPU.

pallas_kernels/gpu_lowering.py: `jax.jit(f).trace(*args).lower(
lowering_platforms=("cuda",))` under `jax.sharding.use_abstract_mesh` with an
AbstractDevice("NVIDIA H200", platform="cuda"). Each kernel must become the
Triton custom calls it is made of (`__gpu$xla.gpu.triton`), at the demo and
tml_small shapes with the H200 block sizes; a gradient's backward must add
none (it is XLA's). A few kernels are then compiled on to sm_90a cubins with
the triton wheel and checked against an H200's shared memory, and without
register spills. Companions: a block shape Triton cannot take fails, naming
the kernel; a too-big KV tile is caught as over the shared memory.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import batch_invariant as bi
from pallas_kernels import gpu_lowering as gl
from pallas_kernels import numerics as nm
from pallas_kernels import split_kv_attention as ska

CASES = {c.name: c for shape in gl.SHAPES for c in gl.kernel_cases(shape)}
needs_triton = pytest.mark.skipif(bool(gl.triton_unavailable()),
                                  reason=f"triton wheel: {gl.triton_unavailable()}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_lowers_to_its_triton_calls(name):
  case = CASES[name]
  low = gl.lower_case(case)          # raises unless the Triton kernels are case.triton
  assert low.platform == "cuda" and low.device_kind == "NVIDIA H200"
  assert low.stablehlo.count(gl.TRITON_CUSTOM_CALL) == len(case.triton)
  assert all(c.num_warps == 4 and c.ir for c in low.triton)
  if case.grad:
    # The backward is XLA's: value_and_grad has exactly the forward's kernels.
    forward = CASES[name.replace(".grad", "")]
    assert low.triton_names == list(forward.triton)


def test_shapes_are_the_configs():
  from experiments.configs import demo, tml_small
  for name, module in (("demo", demo), ("tml_small", tml_small)):
    m, s = module.get_config().model, gl.SHAPES[name]
    assert (m.d_model, m.num_heads, m.num_kv_heads, m.head_dim, m.kernels.split_size) == (
        s["d_model"], s["num_heads"], s["num_kv_heads"], s["head_dim"], s["split_size"]), name
    # 64 attention rows per block (block_q x GQA ratio): one wgmma M.
    assert gl.H200_BLOCKS.block_q * m.num_heads // m.num_kv_heads == 64


def test_non_power_of_two_block_fails_naming_the_kernel():
  """Companion: Triton takes only power-of-two blocks; the error names the kernel."""
  x, w = gl.spec((100, 256), jnp.bfloat16), gl.spec((512, 256), jnp.bfloat16)
  num = gl.BlockSizes(block_rows=12).numerics(256)
  with pytest.raises(gl.GpuLoweringError, match=r"^matmul_nk\[rows 12\]: does not lower "
                     r"for cuda \(NVIDIA H200\): .*power of 2"):
    gl.lower_for_gpu("matmul_nk[rows 12]", lambda x, w: bi.matmul(x, w, num, "nk"), x, w)
  # The same kernel at 16 rows lowers.
  num = gl.BlockSizes(block_rows=16).numerics(256)
  assert gl.lower_for_gpu("matmul_nk[rows 16]", lambda x, w: bi.matmul(x, w, num, "nk"),
                          x, w).triton_names == ["_matmul_kernel"]


def test_lower_case_fails_when_a_kernel_is_not_triton():
  """Companion: a case whose lowering lacks its Triton kernel is an error."""
  case = CASES["rms_norm[demo]"]
  xla = gl.KernelCase("rms_norm_xla[demo]", lambda x, sc: nm.rms_norm(
      x, sc, 1e-6, nm.Numerics(mode="invariant")), case.reference, case.args, case.triton)
  with pytest.raises(gl.GpuLoweringError, match=r"rms_norm_xla\[demo\]: expected the "
                     r"Triton kernels \('rms_norm',\), the lowering has \(\)"):
    gl.lower_case(xla)


def test_cpu_still_refuses_compiled_pallas_outside_the_abstract_gpu():
  num = gl.H200_BLOCKS.numerics(256)
  with pytest.raises(ValueError, match="model.kernels.interpret"):
    jax.jit(lambda x, w: bi.matmul(x, w, num, "nk")).trace(
        gl.spec((8, 64), jnp.float32), gl.spec((64, 64), jnp.float32))


@needs_triton
@pytest.mark.parametrize("name", ["matmul_nk[tml_small]", "attention_decode[tml_small]",
                                  "rms_norm[tml_small]", "softmax[demo]"])
def test_triton_kernels_fit_an_h200(name):
  # At the default matmul precision, as training runs (tests/conftest.py sets
  # 'highest', under which the kernels' f32 dots are IEEE f32, not TF32).
  with jax.default_matmul_precision("default"):
    low = gl.lower_case(CASES[name])
  for call in low.triton:
    c = gl.compile_triton_call(call)
    assert c.arch == "sm_90a" and c.cubin_bytes > 0, c
    assert c.fits(), f"{c.name}: {c.shared_bytes} B of shared memory"
    assert c.spill_bytes == 0, c
    if call.name in ("_matmul_kernel", "_partials_kernel"):
      assert c.mma == "wgmma", c   # 64-row tiles reach Hopper's warpgroup MMA


@needs_triton
def test_oversized_kv_tile_is_caught(monkeypatch):
  """Companion: 128-slot K/V tiles at tml_small's head dim overflow shared memory."""
  monkeypatch.setattr(ska, "KV_TILE_BYTES", 32 * 1024)
  case = CASES["attention_decode[tml_small]"]
  fresh = dataclasses.replace(case, fn=lambda *a: case.fn(*a))   # not jit's cached trace
  with jax.default_matmul_precision("default"):
    low = gl.lower_case(fresh)
  c = gl.compile_triton_call(low.triton[0])
  assert c.name == "_partials_kernel" and not c.fits(), c


def test_ttir_text_and_triton_compile_error_name_the_kernel():
  low = gl.lower_case(CASES["matmul_nk[demo]"])
  text = low.triton[0].ttir()
  assert "tt.func public @_matmul_kernel" in text and "tt.dot" in text
  if gl.triton_unavailable():
    pytest.skip(gl.triton_unavailable())
  with pytest.raises(gl.GpuLoweringError, match="^_matmul_kernel: Triton does not compile"):
    gl.compile_ttir("_matmul_kernel", text.replace("tt.dot", "tt.no_such_op"))


# The GPU block shapes on the CPU path (interpret mode): a K loop of several
# tiles, and a row op walked in steps, stay exact per row and near the reference.
def _interp(block_rows):
  return nm.Numerics(mode="invariant", impl="pallas", block_rows=block_rows, interpret=True)


def test_matmul_k_loop_is_row_invariant_and_close():
  k = 256
  assert bi.pallas_block_k(k) == 64          # four K tiles
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((20, k)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((96, k)), jnp.float32)
  num = _interp(16)
  full = bi.matmul(x, w, num, "nk")
  np.testing.assert_allclose(full, bi.matmul_reference(x, w, "nk"), atol=1e-4, rtol=1e-4)
  np.testing.assert_array_equal(bi.matmul(x[3:4], w, num, "nk")[0], full[3])


def test_row_op_steps_are_row_invariant_and_close():
  d = 4096
  assert bi.pallas_row_step(16, d) == 2 and bi.pallas_row_step(8, 256) == 8
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((18, d)), jnp.float32)
  scale = jnp.asarray(1 + 0.1 * rng.standard_normal(d), jnp.float32)
  num = _interp(16)
  full = bi.rms_norm(x, scale, 1e-6, num)
  np.testing.assert_allclose(full, bi.rms_norm_reference(x, scale, 1e-6), atol=1e-5,
                             rtol=1e-5)
  np.testing.assert_array_equal(bi.rms_norm(x[5:6], scale, 1e-6, num)[0], full[5])
  np.testing.assert_array_equal(bi.softmax(x[:3], num), bi.softmax(x, num)[:3])
