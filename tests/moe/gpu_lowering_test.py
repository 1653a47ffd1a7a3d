"""The MoE gather+GEMV kernels for GPU (and TPU) on a CPU machine (moe/gpu_lowering.py).

- The Triton source compiles for CUDA sm_90 (Triton's pipeline and the wheel's
  ptxas, no GPU) at tml_small's expert shapes; a block Triton cannot take fails,
  naming the kernel.
- The jax-triton wrapper lowers for cuda when jax's CUDA plugin is on the path
  (.venv/cuda-plugin or $JAX_CUDA_PLUGIN_PATH, run in a subprocess); without it
  the blocker names the missing plugin.
- The Pallas (scalar-prefetch) kernel lowers for an abstract TPU and, as the
  Triton backend has no scalar prefetch, not for cuda.
"""

import pytest

from moe import gpu_lowering as mg
from pallas_kernels import gpu_lowering as gl

needs_triton = pytest.mark.skipif(bool(gl.triton_unavailable()),
                                  reason=f"triton wheel: {gl.triton_unavailable()}")


@needs_triton
def test_triton_source_compiles_for_sm90_at_tml_small(tmp_path):
  compiled = mg.compile_gather_gemv("tml_small", cache_dir=str(tmp_path))
  assert [c.name for c in compiled] == ["gate_up_kernel", "down_kernel"]
  for c in compiled:
    assert c.arch == "sm_90a" and c.cubin_bytes > 0, c
    assert c.fits() and c.spill_bytes == 0, c


@needs_triton
def test_a_block_triton_cannot_take_fails_naming_the_kernel(tmp_path):
  """Companion: a non-power-of-two tile is a compile error, reported per kernel."""
  with pytest.raises(gl.GpuLoweringError, match=r"^gate_up_kernel \(moe/triton_kernels.py\): "
                     r"Triton does not compile it for sm_90 with .*'BLOCK_D': 48"):
    mg.compile_gather_gemv("small", cache_dir=str(tmp_path), block_d=48)


def test_triton_call_lowers_for_cuda_with_the_plugin():
  why = mg.triton_call_lowering_blocker()
  if not why:
    assert mg.count_triton_kernel_calls(mg.lower_triton_call("small").stablehlo) == 2
    return
  if not mg.cuda_plugin_dir():
    pytest.skip(f"{why}; no plugin folder (.venv/cuda-plugin or $JAX_CUDA_PLUGIN_PATH)")
  assert mg.lower_triton_call_with_plugin("small") == 2


def test_without_the_plugin_the_blocker_says_why():
  why = mg.triton_call_lowering_blocker()
  if not why:
    pytest.skip("jax's CUDA plugin is importable here")
  assert "jax_cuda12_plugin" in why and "TritonKernel" in why
  with pytest.raises(gl.GpuLoweringError, match=r"^gather_gemv\[triton\] "
                     r"\(moe/triton_gather_gemv.py\): does not lower for cuda"):
    mg.lower_triton_call("small")


def test_pallas_gather_gemv_is_a_tpu_kernel():
  low = mg.lower_pallas_for_tpu("small")
  assert low.stablehlo.count("tpu_custom_call") == 1
  with pytest.raises(gl.GpuLoweringError, match=r"^gather_gemv\[pallas\] .*scalar "
                     "prefetch not implemented in the Triton backend"):
    mg.lower_pallas_for_gpu("small")
