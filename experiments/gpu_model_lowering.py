"""A whole model's forward and streaming step lowered for an abstract H200.

The kernel lowering tests (pallas_kernels/gpu_lowering.py) check each Pallas
kernel on its own. This module lowers what a GPU job actually runs, the
`demo` (or any) model's teacher-forced forward and one streaming micro-turn,
with `kernels.mode=invariant, impl=pallas, interpret=False` and the H200 block
sizes, and lists what each became: how many Triton calls of each kernel, and
which StableHLO ops stay XLA's (embedding gathers, RoPE, the flow head's
element-wise math, the cache writes, sampling, ...).

Lives in experiments/ because it builds the model (interaction), which the
kernel packages below it may not import.
"""

from __future__ import annotations

import collections
import dataclasses
import re

import jax
import numpy as np

from pallas_kernels import gpu_lowering as gl

# StableHLO ops that are bookkeeping, not computation: left out of the
# "stays XLA" list so it reads as the work XLA still does.
_BOOKKEEPING = frozenset({
    "stablehlo.constant", "stablehlo.return", "func.return", "func.call",
    "stablehlo.reshape", "stablehlo.broadcast_in_dim", "stablehlo.convert",
    "stablehlo.custom_call", "stablehlo.tuple", "stablehlo.get_tuple_element",
    "stablehlo.optimization_barrier", "stablehlo.bitcast_convert",
})
_OP = re.compile(r"=\s+\"?(stablehlo\.[a-z_]+|chlo\.[a-z_]+)")


@dataclasses.dataclass(frozen=True)
class ModelLowering:
  """What one lowered step is made of."""
  step: str                       # 'forward' or 'streaming_step'
  triton: dict[str, int]          # Triton kernel name -> calls
  xla_ops: dict[str, int]         # StableHLO op -> count (bookkeeping left out)

  def summary(self) -> dict:
    return {"step": self.step, "triton_calls": sum(self.triton.values()),
            "triton": dict(self.triton), "xla_ops": dict(self.xla_ops)}


def pallas_config(config, blocks: gl.BlockSizes = gl.H200_BLOCKS):
  """config with the model on the GPU kernels (invariant, pallas, compiled)."""
  c = config.copy_and_resolve_references()
  k = c.model.kernels
  k.mode, k.impl, k.interpret = "invariant", "pallas", False
  k.block_rows, k.block_q = blocks.block_rows, blocks.block_q
  # The MoE's per-token kernel on a GPU is the Triton one; 'auto' would pick
  # the TPU Pallas kernel, which does not lower for cuda.
  c.model.moe.gemv_kernel = "triton"
  return c


def xla_ops(stablehlo: str) -> dict[str, int]:
  """StableHLO ops in a module's text that are computation, by count."""
  counts = collections.Counter(m.group(1) for m in _OP.finditer(stablehlo))
  return dict(sorted((k, v) for k, v in counts.items() if k not in _BOOKKEEPING))


def _abstract_params(binder):
  from flax import nnx
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                nnx.to_pure_dict(binder.abstract))


def _lowered(step: str, low: gl.Lowered) -> ModelLowering:
  return ModelLowering(step=step, triton=dict(collections.Counter(low.triton_names)),
                       xla_ops=xla_ops(low.stablehlo))


def lower_forward(config, batch_size: int = 1, device=gl.H200) -> ModelLowering:
  """The teacher-forced forward (text logits and flow conditions)."""
  from data_pipeline.pipeline import batch_spec
  from interaction import params as params_lib
  binder = params_lib.ModelBinder(config)
  params = _abstract_params(binder)
  batch = {k: jax.ShapeDtypeStruct((batch_size,) + tuple(s)[1:], np.dtype(d))
           for k, (s, d) in batch_spec(config).items()}
  low = gl.lower_for_gpu(f"{config.name} forward",
                         lambda p, b: binder(p).forward(b), params, batch,
                         device=device)
  return _lowered("forward", low)


def lower_streaming_step(config, sessions: int = 1, device=gl.H200) -> ModelLowering:
  """One streaming micro-turn (append, text decode, flow head) for `sessions`."""
  from interaction import params as params_lib
  from interaction import streaming
  from interaction.layout import Stream
  binder = params_lib.ModelBinder(config)
  params = _abstract_params(binder)
  scfg = streaming.SessionConfig.from_config(config.session)
  model = params_lib.abstract_model(config)
  state = jax.eval_shape(lambda: streaming.init_state(model, scfg, sessions, 0))
  spec = model.spec
  sds = jax.ShapeDtypeStruct
  inputs = streaming.TurnInputs(
      user_audio=sds((sessions, spec.frames_per_turn, spec.n_mels), np.int32),
      user_text=sds((sessions, spec.count(Stream.USER_TEXT)), np.int32),
      background_text=sds((sessions, spec.count(Stream.BACKGROUND_TEXT)), np.int32),
      video=(sds((sessions, spec.video_height, spec.video_width, 3), np.uint8)
             if spec.video_enabled else None),
      video_present=sds((sessions,), np.bool_) if spec.video_enabled else None)
  low = gl.lower_for_gpu(
      f"{config.name} streaming step",
      lambda p, st, inp: streaming.step(binder(p), scfg, st, inp, None),
      params, state, inputs, device=device)
  return _lowered("streaming_step", low)


def lower_model(config, device=gl.H200) -> list[ModelLowering]:
  """Forward and streaming step of `config`'s model on the GPU kernels."""
  c = pallas_config(config)
  return [lower_forward(c, device=device), lower_streaming_step(c, device=device)]


def format_lowering(rec: ModelLowering, top: int = 12) -> str:
  kernels = ", ".join(f"{k} x{v}" for k, v in sorted(rec.triton.items()))
  ops = sorted(rec.xla_ops.items(), key=lambda kv: -kv[1])[:top]
  return (f"{rec.step}: {sum(rec.triton.values())} Triton calls ({kernels}); "
          f"stays XLA: " + ", ".join(f"{k.split('.', 1)[1]} x{v}" for k, v in ops))
