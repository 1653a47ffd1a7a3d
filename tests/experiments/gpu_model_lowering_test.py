"""The demo model's forward and streaming step lowered for an abstract H200
with the GPU kernels (experiments/gpu_model_lowering.py): every matmul, norm
and attention becomes a Triton call, and what stays XLA is listed."""

import pytest

from experiments import gpu_model_lowering as gml
from experiments.configs import demo

KERNELS = {"_matmul_kernel", "rms_norm", "_partials_kernel", "_combine_kernel"}


@pytest.mark.integration
def test_demo_forward_and_streaming_step_lower_to_triton_kernels():
  """Failed before the Pallas matmul padded K: the hMLP stem's K = 48 is not a
  power of two, which Triton refuses ('shape (64, 48)')."""
  recs = gml.lower_model(demo.get_config())
  assert [r.step for r in recs] == ["forward", "streaming_step"]
  for rec in recs:
    print(gml.format_lowering(rec))
    assert set(rec.triton) == KERNELS, rec.triton
    # No matmul is left to XLA: dot_general would be a dense layer or an
    # attention that missed its kernel.
    assert not [op for op in rec.xla_ops if "dot" in op or "convolution" in op], rec.xla_ops
  fwd, step = recs
  # 4 layers: q/k/v/o + gate/up/down per layer at least; the step runs the
  # stack once per slot group, so it has more calls than the forward.
  assert fwd.triton["_matmul_kernel"] >= 4 * 7 and fwd.triton["_partials_kernel"] == 4
  assert step.triton["_matmul_kernel"] > fwd.triton["_matmul_kernel"]


def test_default_kernels_leave_every_matmul_to_xla():
  """Companion: the same check sees an XLA model (default numerics): no Triton
  call, dot_general ops listed."""
  rec = gml.lower_forward(demo.get_config())
  assert rec.triton == {}
  assert rec.xla_ops.get("stablehlo.dot_general", 0) >= 4 * 7, rec.xla_ops
