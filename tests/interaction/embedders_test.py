"""Embedder output shapes and invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from interaction.config import FlowConfig, ModelConfig
from interaction.embedders import DMelEmbed, HMLPStem
from interaction.layout import LayoutSpec
from interaction.model import InteractionModel
from moe.config import MoEConfig
from pallas_kernels.numerics import Numerics

# A tiny model with every embedder and an MoE layer (the tiny config's sizes).
TINY = ModelConfig(
    d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, d_ff=64,
    ffn="moe", first_dense_layers=1, time_embed_dim=16,
    moe=MoEConfig(num_experts=4, top_k=2, d_ff=32, num_shared_experts=1),
    flow=FlowConfig(width=32, depth=1, num_steps=2), kernels=Numerics(split_size=32))


def test_dmel_bag_of_embeddings_shape_and_sum(layout_config):
  spec = LayoutSpec.from_config(layout_config(video=True))
  emb = DMelEmbed(spec, 24, numerics=Numerics(), rngs=nnx.Rngs(0))
  bins = jax.random.randint(jax.random.key(0), (2, 3, 4, 320), 0, 16)
  out = emb(bins)
  assert out.shape == (2, 3, 4, 24)
  # A bag of embeddings: the slot's vector is the sum of one table row per
  # (frame, channel) at its bin.
  table = emb.table.weight[...].T   # Dense stores [d_out, d_in]
  rows = np.arange(320) * 16 + np.asarray(bins[0, 0, 0])
  np.testing.assert_allclose(out[0, 0, 0], table[rows].sum(0), rtol=1e-5, atol=1e-5)


def test_hmlp_patch_embedding_shape_and_locality():
  stem = HMLPStem(40, (4, 2, 5), 32, numerics=Numerics(), rngs=nnx.Rngs(0))
  patches = jax.random.randint(jax.random.key(1), (3, 7, 40, 40, 3), 0, 256
                               ).astype(jnp.uint8)
  out = stem(patches)
  assert out.shape == (3, 7, 32)
  # Per-patch: changing one patch changes only that patch's embedding.
  changed = patches.at[0, 2].set(0)
  out2 = stem(changed)
  diff = np.abs(np.asarray(out2 - out)).sum(-1)
  assert diff[0, 2] > 0
  diff[0, 2] = 0
  assert diff.max() == 0


def test_hmlp_factors_must_multiply_to_patch():
  with pytest.raises(ValueError, match="hmlp_factors"):
    HMLPStem(40, (4, 2, 4), 32, numerics=Numerics(), rngs=nnx.Rngs(0))


def test_model_content_shapes_per_stream(layout_config):
  model = InteractionModel(TINY, LayoutSpec.from_config(layout_config(video=True)),
                           rngs=nnx.Rngs(0))
  b, t = 2, 3
  batch = {
      "user_audio": jnp.zeros((b, t, 16, 80), jnp.int32),
      "model_audio": jnp.zeros((b, t, 16, 80), jnp.int32),
      "video": jnp.zeros((b, t, 40, 40, 3), jnp.uint8),
      "video_present": jnp.array([[True, False, True]] * b),
      "user_text": jnp.zeros((b, t, 2), jnp.int32),
      "background_text": jnp.zeros((b, t, 2), jnp.int32),
      "model_text": jnp.zeros((b, t, 2), jnp.int32),
  }
  content = model.content(batch)
  d = TINY.d_model
  spec = model.spec
  for stream, x in content.items():
    assert x.shape == (b, t, spec.count(stream), d), stream
  # A missing frame uses the learned empty embedding.
  from interaction.layout import Stream
  np.testing.assert_array_equal(content[Stream.VIDEO][0, 1],
                                model.video_empty[...])
  x, pos = model.embed_episode(batch)
  assert x.shape == (b, t * spec.slots_per_turn, d)
  assert pos.shape == (b, t * spec.slots_per_turn)
