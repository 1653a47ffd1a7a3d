"""The MoE feed-forward layer (SwiGLU experts) with one `impl` switch.

  y, aux = MoE(d_model, MoEConfig(...), numerics=..., rngs=...)(x)

(MoEConfig.from_config(config.model.moe) builds the typed config from the
ConfigDict; moe/config.py validates every field.)

x [B, S, d] -> y [B, S, d]; aux = {"load_balance_loss", "z_loss"}, unweighted
f32 scalars (see moe/router.py). Routed experts: w_gate, w_up [E, d, f] and
w_down [E, f, d]; cfg.num_shared_experts shared experts of width cfg.d_ff are
always active (stored fused as one SwiGLU of width num_shared * d_ff, which is
the same function as their sum).

impl (cfg.impl):
  'loop'        reference: a Python loop over experts, each run densely on all
                tokens and weighted by its (mostly zero) gate.
  'dense'       every expert on every token in one einsum, masked by the gates.
  'ragged_dot'  tokens sorted by expert, grouped GEMM with jax.lax.ragged_dot
                (on CPU XLA lowers it by masking each group densely).
  'gather_gemv' per token, gemvs against its k experts' weights
                (moe/gather_gemv.py); batch-invariant by construction.
  'auto'        gather_gemv at or below cfg.auto_threshold tokens per call,
                ragged_dot above. With numerics.invariant it is gather_gemv at
                every token count, so a token's output never depends on how
                many tokens share the call (batch invariance).

Which gather_gemv kernel runs: cfg.gemv_kernel ('xla' | 'pallas' | 'triton',
gather_gemv.KERNELS), or with 'auto' the one that follows numerics.impl:
'pallas' for 'pallas', else 'xla' (resolve_gemv_kernel). The Pallas kernel
targets TPU (interpret mode on CPU when numerics.interpret); on GPU set
'triton'.

Expert parallelism: the routed weights carry the sharding names
('expert', None, None) on their leading E axis (nnx `out_sharding`
metadata); `nnx.get_partition_spec(nnx.state(model))` turns them into
PartitionSpecs. They are applied eagerly only when a mesh with an 'expert'
axis is active at construction (jax.set_mesh). When such a mesh is the
context mesh at trace time, the routed experts run expert-parallel with an
explicit token exchange over `expert` (moe/expert_parallel.py: all-gather of
the tokens, local experts, fixed-order reduce-scatter); the router and the
shared experts stay outside it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from moe import expert_parallel
from moe import gather_gemv as gg
from moe import grouped_gemm
from moe import router as router_lib
from moe.config import IMPLS, MoEConfig
from pallas_kernels import numerics as numerics_lib

EXPERT_AXIS = "expert"
F32 = jnp.float32


def expert_param_count(d_model: int, cfg: MoEConfig) -> int:
  """Parameters of ONE routed expert (SwiGLU: gate, up and down)."""
  return 3 * int(d_model) * cfg.d_ff


def shared_param_count(d_model: int, cfg: MoEConfig) -> int:
  """Parameters of all shared experts together."""
  return cfg.num_shared_experts * expert_param_count(d_model, cfg)


def router_param_count(d_model: int, cfg: MoEConfig) -> int:
  return int(d_model) * cfg.num_experts


def layer_param_counts(d_model: int, cfg: MoEConfig) -> dict:
  """Total and active (per token) parameters of one MoE layer."""
  routed = cfg.num_experts * expert_param_count(d_model, cfg)
  active_routed = cfg.top_k * expert_param_count(d_model, cfg)
  fixed = shared_param_count(d_model, cfg) + router_param_count(d_model, cfg)
  return {"total": routed + fixed, "active": active_routed + fixed}


def resolve_impl(impl: str, num_tokens: int, auto_threshold: int,
                 numerics: numerics_lib.Numerics) -> str:
  """The concrete impl that `auto` (or an explicit choice) runs for a call.

  Checks `impl` because a call may override the validated config's value.
  """
  if impl not in IMPLS:
    raise ValueError(f"model.moe.impl: {impl!r} is not one of {IMPLS}")
  if impl != "auto":
    return impl
  if numerics.invariant or num_tokens <= auto_threshold:
    return "gather_gemv"
  return "ragged_dot"


def resolve_gemv_kernel(gemv_kernel: str, numerics: numerics_lib.Numerics) -> str:
  """The gather_gemv kernel for model.moe.gemv_kernel ('auto': follow kernels.impl)."""
  if gemv_kernel != "auto":
    return gemv_kernel
  return "pallas" if numerics.impl == "pallas" else "xla"


def _swiglu(x, w_gate, w_up, w_down):
  """x [..., d] through one expert (plain XLA, f32 accumulation)."""
  h = jax.nn.silu(jnp.dot(x, w_gate, preferred_element_type=F32))
  h = h * jnp.dot(x, w_up, preferred_element_type=F32)
  return jnp.dot(h.astype(w_down.dtype), w_down, preferred_element_type=F32)


def ffn_loop(x, routing, w_gate, w_up, w_down):
  """Reference: loop over experts; expert e sees all tokens, weighted by its gate.

  A lax.scan rather than a Python loop so E = 64 compiles in one step.
  """
  combine = router_lib.combine_weights(routing, w_gate.shape[0])      # [T, E]

  def one_expert(y, args):
    c_e, wg, wu, wd = args
    return y + c_e[:, None] * _swiglu(x, wg, wu, wd), None

  y, _ = jax.lax.scan(one_expert, jnp.zeros(x.shape, F32),
                      (combine.T, w_gate, w_up, w_down))
  return y


def ffn_dense(x, routing, w_gate, w_up, w_down):
  """Every expert on every token at once, masked by the [T, E] gates."""
  combine = router_lib.combine_weights(routing, w_gate.shape[0])
  # XLA:CPU has no bf16 x bf16 -> f32 kernel for these batched dots
  # ("Unsupported element type for DotThunk"), so a bf16 model computes its
  # dense baseline from f32 copies (same math as f32 accumulation).
  x, w_gate, w_up = x.astype(F32), w_gate.astype(F32), w_up.astype(F32)
  h = jax.nn.silu(jnp.einsum("td,edf->tef", x, w_gate, preferred_element_type=F32))
  h = h * jnp.einsum("td,edf->tef", x, w_up, preferred_element_type=F32)
  h = h.astype(w_down.dtype).astype(F32)  # round like the other impls
  out = jnp.einsum("tef,efd->ted", h, w_down.astype(F32), preferred_element_type=F32)
  return jnp.einsum("ted,te->td", out, combine)


def ffn_ragged_dot(x, routing, w_gate, w_up, w_down):
  """Dropless grouped GEMM: sort the T*k token-slots by expert, ragged_dot."""
  return grouped_gemm.ragged_dot_ffn(x, routing.expert_ids, routing.gates, w_gate,
                                     w_up, w_down)


def ffn_gather_gemv(x, routing, w_gate, w_up, w_down, *, kernel: str = "xla",
                    interpret: bool = False):
  """Per-token gemvs (moe/gather_gemv.py, which checks `kernel`); backward by
  grouped GEMM. `interpret` is for the Pallas kernel (True on CPU)."""
  return gg.gather_gemv(x, routing.expert_ids, routing.gates, w_gate, w_up, w_down,
                        kernel=kernel, interpret=interpret).astype(F32)


def _expert_param(key, shape, fan_in, dtype):
  """nnx.Param with the 'expert' sharding name on its leading axis."""
  value = jax.random.normal(key, shape, F32) * (fan_in ** -0.5)
  try:
    mesh_axes = jax.sharding.get_abstract_mesh().axis_names
  except Exception:  # pylint: disable=broad-except  # no mesh API/context
    mesh_axes = ()
  return nnx.Param(value.astype(dtype), out_sharding=(EXPERT_AXIS, None, None),
                   eager_sharding=EXPERT_AXIS in (mesh_axes or ()))


class MoE(nnx.Module):
  """Routed SwiGLU experts plus optional shared experts."""

  def __init__(self, d_model: int, cfg: MoEConfig, *,
               numerics: numerics_lib.Numerics, rngs: nnx.Rngs,
               dtype=jnp.float32, param_dtype=jnp.float32):
    # cfg's fields were validated by MoEConfig; d_model comes from the model.
    if not isinstance(cfg, MoEConfig):
      raise TypeError(f"MoE: cfg must be a MoEConfig (MoEConfig.from_config("
                      f"config.model.moe)), got {type(cfg).__name__}")
    if d_model <= 0:
      raise ValueError(f"MoE: d_model must be positive, got {d_model}")
    num_experts, d_ff = cfg.num_experts, cfg.d_ff

    self.d_model, self.num_experts, self.top_k, self.d_ff = (
        d_model, num_experts, cfg.top_k, d_ff)
    self.num_shared = cfg.num_shared_experts
    self.gating = cfg.gating
    self.impl = cfg.impl
    self.auto_threshold = cfg.auto_threshold
    self.router_dtype = jnp.dtype(cfg.router_dtype)
    self.gemv_kernel = resolve_gemv_kernel(cfg.gemv_kernel, numerics)
    self.numerics = numerics
    self.dtype = dtype

    self.w_router = nnx.Param(
        (jax.random.normal(rngs.params(), (d_model, num_experts), F32)
         * d_model ** -0.5).astype(param_dtype))
    self.w_gate = _expert_param(rngs.params(), (num_experts, d_model, d_ff), d_model,
                                param_dtype)
    self.w_up = _expert_param(rngs.params(), (num_experts, d_model, d_ff), d_model,
                              param_dtype)
    self.w_down = _expert_param(rngs.params(), (num_experts, d_ff, d_model), d_ff,
                                param_dtype)
    if self.num_shared:
      width = self.num_shared * d_ff
      init = lambda shape, fan_in: nnx.Param(
          (jax.random.normal(rngs.params(), shape, F32) * fan_in ** -0.5).astype(param_dtype))
      self.shared_gate = init((d_model, width), d_model)
      self.shared_up = init((d_model, width), d_model)
      self.shared_down = init((width, d_model), d_ff)

  def route(self, x2d):
    """Router logits through numerics.matmul (invariant in invariant mode)."""
    logits = numerics_lib.matmul(x2d.astype(self.router_dtype),
                                 self.w_router[...].astype(self.router_dtype),
                                 self.numerics)
    return router_lib.route(logits, self.top_k, self.gating, self.numerics)

  def _routed_weights(self):
    return (self.w_gate[...].astype(self.dtype), self.w_up[...].astype(self.dtype),
            self.w_down[...].astype(self.dtype))

  def routed(self, x2d, routing, impl: str):
    w = self._routed_weights()
    if impl == "loop":
      return ffn_loop(x2d, routing, *w)
    if impl == "dense":
      return ffn_dense(x2d, routing, *w)
    if impl == "ragged_dot":
      return ffn_ragged_dot(x2d, routing, *w)
    if impl == "gather_gemv":
      return ffn_gather_gemv(x2d, routing, *w, kernel=self.gemv_kernel,
                             interpret=self.numerics.interpret)
    raise ValueError(f"model.moe.impl: {impl!r} is not one of {IMPLS}")

  def routed_expert_parallel(self, x, routing, impl: str):
    """f32 [B, S, d] through moe/expert_parallel.py (the shared experts
    included: computed there on each device's own tokens, where the invariant
    kernels give the single-device bits, which GSPMD's partitioning of them
    does not), or None when it does not apply (no expert mesh in context, or
    shapes that do not divide it)."""
    mesh = expert_parallel.expert_mesh()
    if mesh is None or self.num_experts % mesh.shape[expert_parallel.EXPERT_AXIS]:
      return None
    spec = expert_parallel.token_spec(mesh, x.shape)
    if spec is None:
      return None
    b, s, _ = x.shape
    return expert_parallel.routed_ffn(
        x.astype(self.dtype), routing.expert_ids.reshape(b, s, -1),
        routing.gates.reshape(b, s, -1), *self._routed_weights(), mesh=mesh, spec=spec,
        impl=impl, kernel=self.gemv_kernel, interpret=self.numerics.interpret,
        deterministic=self.numerics.invariant,
        extra_fn=self._shared_fn if self.num_shared else None,
        extra=((self.shared_gate[...], self.shared_up[...], self.shared_down[...])
               if self.num_shared else ()))

  def shared(self, x2d):
    return self._shared_fn(x2d, self.shared_gate[...], self.shared_up[...],
                           self.shared_down[...])

  def _shared_fn(self, x2d, w_gate, w_up, w_down):
    mm = lambda a, w: numerics_lib.matmul(a, w.astype(self.dtype), self.numerics)
    g = mm(x2d, w_gate).astype(F32)
    u = mm(x2d, w_up).astype(F32)
    h = (jax.nn.silu(g) * u).astype(self.dtype)
    return mm(h, w_down).astype(F32)

  def __call__(self, x, *, impl: str | None = None):
    """x [B, S, d] -> (y [B, S, d], aux). `impl` overrides cfg.impl for this call."""
    if x.ndim != 3 or x.shape[-1] != self.d_model:
      raise ValueError(f"MoE: x must be [B, S, d_model={self.d_model}], got {x.shape}")
    b, s, d = x.shape
    x2d = x.reshape(b * s, d).astype(self.dtype)
    routing = self.route(x2d)
    resolved = resolve_impl(impl or self.impl, b * s, self.auto_threshold, self.numerics)
    y = self.routed_expert_parallel(x, routing, resolved)
    if y is None:
      y = self.routed(x2d, routing, resolved)
      if self.num_shared:
        y = y + self.shared(x2d)
    else:
      y = y.reshape(b * s, d)
    aux = {"load_balance_loss": routing.load_balance_loss, "z_loss": routing.z_loss}
    return y.astype(self.dtype).reshape(b, s, d), aux
