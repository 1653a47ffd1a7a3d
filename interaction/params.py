"""The model from its parameters: initialise, abstract shapes, bind a parameter tree.

Training, sessions, benchmarks and tools keep parameters as a pure dict (what
orbax saves) and rebuild the nnx module around them inside `jit`. This module
is the one place that knows how.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from interaction.model import InteractionModel


def build_model(config, rngs: nnx.Rngs | int = 0) -> InteractionModel:
  """A freshly initialised model (`rngs`: an int seed or nnx.Rngs)."""
  if isinstance(rngs, int):
    rngs = nnx.Rngs(rngs)
  return InteractionModel(config, rngs=rngs)


def init_params(config, seed: int) -> dict:
  """Freshly initialised parameters as a pure dict."""
  return nnx.to_pure_dict(nnx.state(build_model(config, seed), nnx.Param))


def abstract_model(config) -> InteractionModel:
  """The model's structure and parameter shapes, allocating nothing."""
  return nnx.eval_shape(lambda: InteractionModel(config, rngs=nnx.Rngs(0)))


class ModelBinder:
  """Rebuilds the model around a pure-dict parameter tree (cheap; traceable).

  The graph and the abstract parameter state are computed once per config, so
  calling the binder inside a jitted function only merges arrays into it.
  """

  def __init__(self, config):
    self.graphdef, self.abstract = nnx.split(abstract_model(config), nnx.Param)

  def __call__(self, params) -> InteractionModel:
    state = jax.tree_util.tree_map(lambda x: x, self.abstract)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self.graphdef, state)


def load_model(config, params) -> InteractionModel:
  """The model of `config` holding `params` (a pure dict)."""
  return ModelBinder(config)(params)


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))
