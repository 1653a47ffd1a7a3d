"""ModelConfig / FlowConfig: every field read, each bad value named, one
conversion at the model's top that builds the same model as the typed path."""

import dataclasses

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from interaction.config import FlowConfig, ModelConfig
from interaction.layout import LayoutSpec
from interaction.model import InteractionModel, validate_config
from moe.config import MoEConfig
from pallas_kernels.numerics import Numerics
from tests.interaction.embedders_test import TINY
from tests.layouts import default_layout_config as layout_config


def _as_config(model: ModelConfig, video=True) -> ml_collections.ConfigDict:
  """The ConfigDict a config file would hold for `model` (plus a layout)."""
  return ml_collections.ConfigDict({"model": dataclasses.asdict(model),
                                    "layout": layout_config(video)})


def test_from_config_reads_every_field():
  cfg = dataclasses.replace(
      TINY, vocab_size=TINY.vocab_size + 7, rope_theta=500.0, norm_eps=1e-5,
      dtype="bfloat16", param_dtype="bfloat16", hmlp_factors=(5, 8),
      kernels=Numerics(mode="invariant", impl="pallas", split_size=32,
                       block_q=4, block_rows=4, interpret=True))
  assert ModelConfig.from_config(_as_config(cfg).model) == cfg
  c = _as_config(cfg)
  del c.model.kernels["interpret"]
  with pytest.raises(AttributeError, match="interpret"):
    ModelConfig.from_config(c.model)


@pytest.mark.parametrize("field,value", [
    ("d_model", 0), ("num_layers", 0), ("head_dim", 7), ("time_embed_dim", 15),
    ("num_kv_heads", 3), ("ffn", "mlp"), ("first_dense_layers", -1),
    ("vocab_size", 10), ("dtype", "int8"), ("param_dtype", "f32"),
    ("hmlp_factors", (4, 0)), ("norm_eps", 0.0)])
def test_bad_model_field_is_named(field, value):
  needle = "model.num_heads" if field == "num_kv_heads" else f"model.{field}"
  with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
    dataclasses.replace(TINY, **{field: value})
  c = _as_config(TINY)
  c.model[field] = value
  with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
    validate_config(c)  # the entry points' check before any work starts


@pytest.mark.parametrize("section,field,value", [
    ("flow", "num_steps", 0), ("flow", "width", 0), ("flow", "batch_mul", 0),
    ("flow", "depth", -1), ("moe", "top_k", 5), ("moe", "gemv_kernel", "cuda"),
    ("kernels", "impl", "cuda"), ("kernels", "interpret", None)])
def test_bad_nested_field_is_named(section, field, value):
  c = _as_config(TINY)
  c.model[section][field] = value
  with pytest.raises(ValueError, match=rf"model\.{section}\.{field}"):
    validate_config(c)


def test_nested_sections_must_be_typed():
  with pytest.raises(ValueError, match=r"model\.flow"):
    ModelConfig(flow=ml_collections.ConfigDict({"width": 8, "depth": 1}))
  assert FlowConfig().num_steps >= 1 and MoEConfig().top_k >= 1


def test_configdict_and_typed_model_are_the_same_model():
  """InteractionModel(whole ConfigDict) converts once, to the same typed
  values: same parameter names, shapes and bits as the typed constructor."""
  spec = LayoutSpec.from_config(layout_config(video=True))
  typed = InteractionModel(TINY, spec, rngs=nnx.Rngs(3))
  from_dict = InteractionModel(_as_config(TINY), rngs=nnx.Rngs(3))
  a = nnx.to_pure_dict(nnx.state(typed, nnx.Param))
  b = nnx.to_pure_dict(nnx.state(from_dict, nnx.Param))
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert from_dict.spec == spec and from_dict.numerics == TINY.kernels
  with pytest.raises(ValueError, match="LayoutSpec"):
    InteractionModel(TINY, rngs=nnx.Rngs(0))
