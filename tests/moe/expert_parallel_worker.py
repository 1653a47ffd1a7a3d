"""Subprocess of expert_parallel_test.py: the MoE layer on one device and expert-parallel.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
    python -m tests.moe.expert_parallel_worker

For each case (mesh, kernels mode, top_k) builds one MoE layer (8 experts,
one shared), runs its forward and the gradients of a loss of its output and
auxiliary losses on one device, then under `jax.set_mesh(mesh)` (the
expert-parallel path, moe/expert_parallel.py), and once more on the mesh
with the expert weights rolled by one device's worth of experts (each
device then holds another device's experts: the companion that must
differ). Prints one JSON line per case.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

jax.config.update("jax_default_matmul_precision", "highest")

CASES = [("expert=4,data=2", "invariant", 2), ("expert=8", "invariant", 2),
         ("expert=4,data=2", "default", 2), ("expert=8", "default", 2),
         ("expert=4,data=2", "invariant", 3)]


def layer(mode, top_k):
  from moe.config import MoEConfig
  from moe.layer import MoE
  from pallas_kernels.numerics import Numerics
  cfg = MoEConfig(num_experts=8, top_k=top_k, d_ff=24, num_shared_experts=1)
  return MoE(16, cfg, numerics=Numerics(mode=mode), rngs=nnx.Rngs(0))


def run(model, x, mesh=None):
  """(y, grads w.r.t. (params, x), whether the lowered program all-gathers)."""
  import contextlib
  graphdef, params = nnx.split(model, nnx.Param)

  def loss_fn(params, x):
    y, aux = nnx.merge(graphdef, params)(x)
    w = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
    return jnp.sum(y * w) + aux["load_balance_loss"] + aux["z_loss"], y

  fn = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))
  with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
    text = fn.lower(params, x).as_text()
    (_, y), grads = fn(params, x)
  return np.asarray(y), jax.tree_util.tree_map(np.asarray, grads), "all_gather" in text


def rolled(model, shift):
  """The layer with its routed experts rolled along E by `shift`."""
  graphdef, state = nnx.split(model)
  pure = nnx.to_pure_dict(state)
  for name in ("w_gate", "w_up", "w_down"):
    pure[name] = jnp.roll(pure[name], shift, axis=0)
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def max_err(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                           jax.tree.leaves(b)))


def main():
  from interaction import sharding as sh
  x = jax.random.normal(jax.random.key(1), (8, 6, 16), jnp.float32)
  for text, mode, top_k in CASES:
    model = layer(mode, top_k)
    mesh = sh.make_mesh(text)
    y1, g1, _ = run(model, x)
    y, g, exchanged = run(model, x, mesh)
    yr, _, _ = run(rolled(model, 8 // mesh.shape["expert"]), x, mesh)
    print(json.dumps({
        "mesh": text, "mode": mode, "top_k": top_k, "devices": jax.device_count(),
        "exchanged": exchanged, "bit_identical": bool(np.array_equal(y, y1)),
        "y_err": float(np.max(np.abs(y - y1))), "y_scale": float(np.max(np.abs(y1))),
        "grad_err": max_err(g, g1),
        "grad_scale": max(float(np.max(np.abs(v))) for v in jax.tree.leaves(g1)),
        "rolled_err": float(np.max(np.abs(yr - y1)))}), flush=True)


if __name__ == "__main__":
  sys.exit(main())
