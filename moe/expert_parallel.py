"""Expert parallelism with an explicit token exchange over the mesh's `expert` axis.

Why: with the routed weights split over `expert` ([E, d, f] -> E/ep experts
per device) and the tokens split over the batch axes, the plain layer leaves
it to GSPMD to decide how the two meet; it may all-gather the expert weights
(undoing the memory split) or pick collectives whose summation order changes
with the layout. This path says what moves: each device keeps its E/ep
experts and the tokens travel to them and back, in a fixed order.

How (`jax.shard_map` over the context mesh, collectives over `expert` only):
  1. the router runs outside, whole, as on one device (the layer's `route`),
     so the routing and the auxiliary losses are the single-device ones; the
     shared experts run inside, on each device's own tokens (`extra_fn`);
  2. all-gather over `expert`: each device sees the tokens x and expert ids
     of the ep devices of its expert group (ep * T tokens);
  3. local experts: slot j of a gathered token runs through the layer's own
     kernel on this device's experts when its expert lives here; elsewhere it
     is zeros (`local_slot_outputs`);
  4. reduce-scatter over `expert` of the [ep*T, k, d] slot outputs: each
     device gets back its own T tokens' k slot outputs. For each (token,
     slot) exactly one device contributed a non-zero value, so the sum is
     exact in any order; in invariant mode (model.kernels.mode='invariant')
     the fixed-order reduction of pallas_kernels/collectives.py runs anyway,
     so the bits never hang on the backend's reduction;
  5. at home, the gates weight the k slots, added in slot order 0..k-1 with
     the very steps of gather_gemv's accumulator (`combine_slots`).
With gather_gemv (every impl in invariant mode) a token's bits do not depend
on the tokens beside it, so the output equals the single-device layer's bit
for bit; with ragged_dot it matches within float reordering
(tests/moe/expert_parallel_test.py). Dropless, like the router: no capacity,
nothing dropped, so no token's output depends on the load.

Cost, and what it is not: the exchange moves ep * T * (d + k) values in and
returns ep * T * k * d (a capacity-bounded all-to-all dispatch moves about
1/ep of that); ragged_dot spends no work on the slots whose expert is
elsewhere (their rows fall outside every group), but gather_gemv's
fixed-shape loop runs them with zero gates, so that path computes ep * T * k
gemvs per device. Fine for the decode-sized calls it serves; the all-to-all
dispatch is the next step for large prefill batches on many experts.

When it runs: the MoE layer takes this path when a mesh with an `expert`
axis of size > 1 is the context mesh at trace time (`jax.set_mesh`, which
experiments/mesh.py's MeshTrainer sets), no axis is manual yet (not inside
another shard_map, e.g. interaction/parallel.py), and the token dimensions
divide the mesh (`token_spec`); otherwise the layer computes as before.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from moe import gather_gemv as gg
from moe import grouped_gemm
from pallas_kernels import collectives

EXPERT_AXIS = "expert"
# The token layout of interaction/sharding.py (BATCH_AXES, then `sequence` on
# the second axis), restated here because moe/ cannot import interaction/;
# tests/moe/expert_parallel_test.py checks the two agree.
BATCH_AXES = ("data", "fsdp", "expert")
SEQUENCE_AXIS = "sequence"
F32 = jnp.float32


def expert_mesh():
  """The context mesh when the expert-parallel path applies to it, else None."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty or EXPERT_AXIS not in mesh.axis_names:
    return None
  if mesh.shape[EXPERT_AXIS] <= 1 or mesh.manual_axes:
    return None
  return mesh


def token_spec(mesh, shape) -> P | None:
  """PartitionSpec of x [B, S, ...] on `mesh` (B over the batch axes, S over
  `sequence`), or None when B or S does not divide them."""
  sizes = dict(mesh.shape)
  bax = tuple(a for a in BATCH_AXES if sizes.get(a, 1) > 1)
  dp = 1
  for a in bax:
    dp *= sizes[a]
  sp = sizes.get(SEQUENCE_AXIS, 1)
  if shape[0] % dp or shape[1] % sp:
    return None
  return P(bax if len(bax) > 1 else bax[0], SEQUENCE_AXIS if sp > 1 else None, None)


def local_slot_outputs(x, local_ids, w_gate, w_up, w_down, *, impl: str,
                       kernel: str = "xla", interpret: bool = False):
  """f32 [T, k, d]: expert(x) of each slot whose expert is in these weights
  (0 <= local_ids < E_local), not gated; zeros for the others.

  impl 'gather_gemv' runs the layer's kernel once per slot (k=1, gate 1 here
  and 0 for remote slots): the same per-token computation as on one device.
  Every other impl takes the grouped GEMM, with remote slots in no group."""
  e = w_gate.shape[0]
  here = (local_ids >= 0) & (local_ids < e)
  if impl == "gather_gemv":
    ids = jnp.clip(local_ids, 0, e - 1)
    on = here.astype(F32)
    slots = [gg.gather_gemv(x, ids[:, j:j + 1], on[:, j:j + 1], w_gate, w_up, w_down,
                            kernel=kernel, interpret=interpret).astype(F32)
             for j in range(ids.shape[1])]
    return jnp.stack(slots, axis=1)
  return grouped_gemm.ragged_dot_slots(x, jnp.where(here, local_ids, e), w_gate, w_up,
                                       w_down)


def combine_slots(outs, gates):
  """f32 [T, d] = (((0 + g_0 o_0) + g_1 o_1) + ...), one slot per step.

  The same steps as gather_gemv's accumulator (`acc + gate * out`, which the
  CPU backend may contract into one fused multiply-add), so the bits match
  it; the barrier keeps XLA from fusing the steps into another order."""
  acc = jnp.zeros(outs.shape[:1] + outs.shape[2:], F32)
  for j in range(outs.shape[1]):
    acc = jax.lax.optimization_barrier(acc) + gates[:, j:j + 1].astype(F32) * outs[:, j]
  return acc


def routed_ffn(x, expert_ids, gates, w_gate, w_up, w_down, *, mesh, spec: P, impl: str,
               kernel: str = "xla", interpret: bool = False,
               deterministic: bool = True, extra_fn=None, extra=()):
  """The routed experts, expert-parallel: f32 y [B, S, d] (module docstring).

  x [B, S, d]; expert_ids, gates [B, S, k] (the router's, on the whole
  batch); w_gate, w_up [E, d, f], w_down [E, f, d]; spec: `token_spec`'s.
  extra_fn(x2d, *extra) -> f32 [T, d], if given, is added to each device's
  own tokens' output (the layer's shared experts; `extra`: replicated
  weights)."""
  wspec = P(EXPERT_AXIS, None, None)

  def local(x, ids, gates, wg, wu, wd, *extra):
    b, s, d = x.shape
    rank = jax.lax.axis_index(EXPERT_AXIS)

    def gather(a):
      return jax.lax.all_gather(a.reshape(b * s, a.shape[-1]), EXPERT_AXIS, axis=0,
                                tiled=True)
    xa, ia = gather(x), gather(ids)        # the gates stay home (step 5)
    slots = local_slot_outputs(xa, ia - rank * wg.shape[0], wg, wu, wd, impl=impl,
                               kernel=kernel, interpret=interpret)   # [ep*T, k, d]
    mine = collectives.reduce_scatter(slots, EXPERT_AXIS, scatter_dimension=0,
                                      deterministic=deterministic)   # [T, k, d]
    y = combine_slots(mine, gates.reshape(b * s, -1))
    if extra_fn is not None:
      y = y + extra_fn(x.reshape(b * s, d), *extra)
    return y.reshape(b, s, d)

  return jax.shard_map(
      local, mesh=mesh, in_specs=(spec, spec, spec, wspec, wspec, wspec) + (P(),) * len(extra),
      out_specs=spec)(x, expert_ids, gates, w_gate, w_up, w_down, *extra)
