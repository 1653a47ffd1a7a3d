"""Flow-matching head: the loss falls on a fixed batch; sampler shapes."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from interaction.flow_head import (FlowHead, euler_sample, flow_matching_loss,
                                   mel_to_unit, unit_to_mel)
from pallas_kernels.numerics import Numerics


def _head():
  cfg = ml_collections.ConfigDict({"width": 64, "depth": 2})
  return FlowHead(16, 12, cfg, numerics=Numerics(), rngs=nnx.Rngs(0))


def test_flow_loss_falls_on_fixed_batch():
  head = _head()
  key = jax.random.key(0)
  h = jax.random.normal(key, (32, 16))
  # Targets are a fixed function of the condition, so they can be learned.
  x1 = jnp.tanh(h[:, :12] * 1.5)
  mask = jnp.ones((32,), bool)
  opt = nnx.Optimizer(head, optax.adam(3e-3), wrt=nnx.Param)

  @nnx.jit
  def step(head, opt, rng):
    loss, grads = nnx.value_and_grad(
        lambda m: flow_matching_loss(m, h, x1, mask, rng, batch_mul=4))(head)
    opt.update(head, grads)
    return loss

  eval_rng = jax.random.key(123)
  before = float(flow_matching_loss(head, h, x1, mask, eval_rng, batch_mul=8))
  for i in range(150):
    step(head, opt, jax.random.key(i))
  after = float(flow_matching_loss(head, h, x1, mask, eval_rng, batch_mul=8))
  assert after < 0.6 * before, (before, after)


def test_masked_slots_carry_no_loss():
  head = _head()
  h = jnp.ones((4, 16))
  x1 = jnp.zeros((4, 12))
  rng = jax.random.key(0)
  mask = jnp.array([True, True, False, False])
  full = flow_matching_loss(head, h, x1, mask, rng)
  x1_bad = x1.at[2:].set(100.0)
  np.testing.assert_allclose(flow_matching_loss(head, h, x1_bad, mask, rng), full)


def test_euler_sampler_shapes_and_steps():
  head = _head()
  h = jnp.ones((5, 16))
  noise = jax.random.normal(jax.random.key(1), (5, 12))
  out = euler_sample(head, h, noise, 3)
  assert out.shape == (5, 12)
  assert np.isfinite(np.asarray(out)).all()


def test_mel_scaling_round_trip():
  mel = jnp.linspace(-7, 2, 11)
  np.testing.assert_allclose(unit_to_mel(mel_to_unit(mel, -7, 2), -7, 2), mel,
                             atol=1e-6)
