"""Flow-matching head: the loss falls on a fixed batch; masked slots carry no
loss; the Euler sampler integrates the velocity and a trained head samples
near its targets."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from interaction.config import FlowConfig
from interaction.flow_head import (FlowHead, euler_sample, flow_matching_loss,
                                   mel_to_unit, unit_to_mel)
from pallas_kernels.numerics import Numerics


def _head():
  return FlowHead(16, 12, FlowConfig(width=64, depth=2), numerics=Numerics(),
                  rngs=nnx.Rngs(0))


def _learnable_batch():
  """Conditions h [32, 16] and targets that are a fixed function of them."""
  h = jax.random.normal(jax.random.key(0), (32, 16))
  return h, jnp.tanh(h[:, :12] * 1.5), jnp.ones((32,), bool)


def _train(head, h, x1, mask, steps):
  opt = nnx.Optimizer(head, optax.adam(3e-3), wrt=nnx.Param)

  @nnx.jit
  def step(head, opt, rng):
    loss, grads = nnx.value_and_grad(
        lambda m: flow_matching_loss(m, h, x1, mask, rng, batch_mul=4))(head)
    opt.update(head, grads)
    return loss

  for i in range(steps):
    step(head, opt, jax.random.key(i))
  return head


def test_flow_loss_falls_on_fixed_batch():
  head = _head()
  h, x1, mask = _learnable_batch()
  eval_rng = jax.random.key(123)
  before = float(flow_matching_loss(head, h, x1, mask, eval_rng, batch_mul=8))
  _train(head, h, x1, mask, 150)
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


def _perturbed_head():
  """A head whose every parameter is nonzero: the zero-initialised output and
  modulation layers would otherwise make the velocity exactly 0."""
  head = _head()
  state = nnx.state(head, nnx.Param)
  leaves, treedef = jax.tree_util.tree_flatten(state)
  keys = jax.random.split(jax.random.key(7), len(leaves))
  leaves = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
  nnx.update(head, jax.tree_util.tree_unflatten(treedef, leaves))
  return head


def test_euler_sampler_integrates_the_velocity():
  head = _perturbed_head()
  h = jax.random.normal(jax.random.key(2), (5, 16))
  noise = jax.random.normal(jax.random.key(1), (5, 12))
  out = np.asarray(euler_sample(head, h, noise, 3))
  assert out.shape == (5, 12)
  # By hand: x <- x + v(x, t, h) / 3 at t = 0, 1/3, 2/3.
  x = noise
  for i in range(3):
    x = x + head(x, jnp.full((5,), i / 3, jnp.float32), h) / 3
  np.testing.assert_allclose(out, np.asarray(x), rtol=1e-5, atol=1e-6)
  # The velocity is far from 0 here, so the check above compares real motion
  # (with the zero-initialised head the sample would be the noise itself).
  assert np.abs(out - np.asarray(noise)).mean() > 0.1
  np.testing.assert_array_equal(np.asarray(euler_sample(_head(), h, noise, 3)),
                                np.asarray(noise))
  with pytest.raises(ValueError, match="num_steps"):
    euler_sample(head, h, noise, 0)


def test_trained_head_samples_near_its_targets():
  """Train on targets that are a function of the condition; sampling from noise
  then lands much closer to them than the noise was."""
  h, x1, mask = _learnable_batch()
  head = _train(_head(), h, x1, mask, 300)
  noise = jax.random.normal(jax.random.key(99), x1.shape)
  sample = euler_sample(head, h, noise, 8)
  err_noise = float(jnp.mean((noise - x1) ** 2))
  err_sample = float(jnp.mean((sample - x1) ** 2))
  assert err_sample < 0.3 * err_noise, (err_noise, err_sample)


def test_mel_scaling_round_trip():
  mel = jnp.linspace(-7, 2, 11)
  np.testing.assert_allclose(unit_to_mel(mel_to_unit(mel, -7, 2), -7, 2), mel,
                             atol=1e-6)
