"""Helpers of the model-level session tests: a tiny session config, and
parameters that make every output depend on every layer (issue 12).

`create_train_state` zero-initialises the flow head's output layer and its
adaptive-norm modulations, so its velocity is exactly 0 and a session's mel is
clip(noise): a mel comparison on fresh parameters compares noise with itself
and cannot fail. Every leaf here gets seeded Gaussian noise added, so the
velocity, the modulations and every mel bin are real functions of the model.
"""

import jax
import jax.numpy as jnp
import numpy as np


def perturbed(params, seed: int = 0, scale: float = 0.05):
  """params + N(0, scale^2) on every floating leaf (seeded, host-side)."""
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  out = []
  for x in leaves:
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
      noise = rng.standard_normal(x.shape).astype(np.float32) * scale
      x = x + jnp.asarray(noise, x.dtype)
    out.append(x)
  return jax.tree_util.tree_unflatten(treedef, out)


def tiny_session_config(mode="invariant", capacity=16, prefix=1, temperature=0.0,
                        split=None, kv_heads=None):
  """The `tiny` config with the session and kernel settings these tests vary."""
  from experiments.configs import tiny
  c = tiny.get_config()
  c.model.kernels.mode = mode
  if split:
    c.model.kernels.split_size = split
  if kv_heads:
    c.model.num_kv_heads = kv_heads
  c.session.capacity_turns = capacity
  c.session.prefix_turns = prefix
  c.session.temperature = temperature
  c.session.top_p = 0.9
  return c
