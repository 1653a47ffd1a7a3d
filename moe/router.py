"""Top-k router: gating probabilities, expert choice and the auxiliary losses.

Dropless: every token gets exactly `top_k` experts; there is no capacity and
nothing is dropped (the MoE layer's impls all handle any load per expert).

Gating (model.moe.gating):
  'softmax': p = softmax(logits); take the top-k of p. With k > 1 the k gates
             are renormalized to sum to 1 (Mixtral); with k = 1 the gate is the
             raw probability (Switch), so the router still gets a gradient
             through the output and not only through the auxiliary loss.
  'sigmoid': s = sigmoid(logits); take the top-k of s and normalize the k gates
             by their sum (DeepSeek-V3).

Losses (unweighted; the objective applies model.moe.load_balance_weight and
model.moe.z_loss_weight):
  load_balance_loss = E * sum_e f_e * P_e (Switch Transformer eq. 4, extended
      to k slots): f_e is the fraction of the T*k token-slots routed to e (no
      gradient), P_e the mean over tokens of the routing distribution for e
      (softmax probabilities, or the sigmoid scores normalized per token). It
      equals 1 for perfectly uniform routing.
  z_loss = mean over tokens of logsumexp(logits)^2 (ST-MoE).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from pallas_kernels import numerics as numerics_lib

GATINGS = ("softmax", "sigmoid")


@dataclasses.dataclass(frozen=True)
class Routing:
  """What the router decided for T tokens."""
  expert_ids: jax.Array     # int32 [T, k], in descending gate order
  gates: jax.Array          # f32 [T, k], weight of each chosen expert
  load_balance_loss: jax.Array  # f32 scalar
  z_loss: jax.Array         # f32 scalar


jax.tree_util.register_dataclass(
    Routing, data_fields=["expert_ids", "gates", "load_balance_loss", "z_loss"],
    meta_fields=[])


def _sum_in_order(x):
  """Sum over the last axis (k, a handful) as a left fold of element-wise
  adds: one order whatever the row count, where a reduce's is XLA's choice."""
  total = x[..., :1]
  for j in range(1, x.shape[-1]):
    total = total + x[..., j:j + 1]
  return total


def route(logits: jax.Array, top_k: int, gating: str = "softmax",
          numerics: numerics_lib.Numerics = numerics_lib.DEFAULT) -> Routing:
  """Routes tokens given router logits [T, E] (any float dtype; math in f32).

  With invariant numerics a token's gates do not depend on how many tokens
  share the call: the softmax runs in the fixed row blocks of
  numerics.softmax. A plain jax.nn.softmax over E is a row reduction whose
  order XLA:CPU picks by row count and CPU: on AVX2 a 1-token call's gates
  differed from the same token's in a 300-token call by 1 ulp.
  """
  if logits.ndim != 2:
    raise ValueError(f"route: logits must be [T, E], got shape {logits.shape}")
  num_experts = logits.shape[-1]
  # Argument checks for direct callers; a model's values were validated once,
  # by moe.config.MoEConfig.
  if not 1 <= top_k <= num_experts:
    raise ValueError(f"route: top_k={top_k} must be in [1, {num_experts}], the "
                     "logits' number of experts")
  if gating not in GATINGS:
    raise ValueError(f"route: gating {gating!r} is not one of {GATINGS}")
  logits = logits.astype(jnp.float32)

  if gating == "softmax":
    scores = numerics_lib.softmax(logits, numerics)
    probs = scores
  else:
    scores = jax.nn.sigmoid(logits)
    probs = scores / jnp.sum(scores, axis=-1, keepdims=True)

  top_scores, expert_ids = jax.lax.top_k(scores, top_k)
  if gating == "softmax" and top_k == 1:
    gates = top_scores
  else:
    gates = top_scores / _sum_in_order(top_scores)

  num_tokens = logits.shape[0]
  # f_e counts token-slots; it is a hard assignment and carries no gradient.
  counts = jnp.zeros((num_experts,), jnp.float32).at[expert_ids.reshape(-1)].add(1.0)
  frac = jax.lax.stop_gradient(counts / jnp.maximum(num_tokens * top_k, 1))
  mean_prob = jnp.mean(probs, axis=0) if num_tokens else jnp.zeros((num_experts,))
  load_balance = num_experts * jnp.sum(frac * mean_prob)
  z = jax.nn.logsumexp(logits, axis=-1)
  z_loss = jnp.mean(z * z) if num_tokens else jnp.float32(0.0)
  return Routing(expert_ids=expert_ids.astype(jnp.int32), gates=gates,
                 load_balance_loss=load_balance.astype(jnp.float32),
                 z_loss=jnp.asarray(z_loss, jnp.float32))


def combine_weights(routing: Routing, num_experts: int) -> jax.Array:
  """Dense [T, E] gate matrix: gate of expert e for token t, 0 if not chosen."""
  onehot = jax.nn.one_hot(routing.expert_ids, num_experts, dtype=jnp.float32)
  return jnp.einsum("tke,tk->te", onehot, routing.gates)
