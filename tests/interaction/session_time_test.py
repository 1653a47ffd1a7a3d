"""A training window keeps the elapsed time and RoPE positions it has in its
session (issue 15, item 1): a crop embeds like the same turns of the whole
episode, bit for bit, and windows placed deep into a session reach the times
and positions a long live session reaches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from data_pipeline import example as example_lib
from data_pipeline import pipeline
from data_pipeline import synthetic
from interaction.config import ModelConfig
from interaction.layout import LayoutSpec
from interaction.model import InteractionModel
from interaction import mel as mel_lib


def _model_and_episode(tiny_config, turns=24):
  config = tiny_config
  config.layout.video.enabled = False
  spec = LayoutSpec.from_config(config.layout)
  model = InteractionModel(ModelConfig.from_config(config.model), spec, rngs=nnx.Rngs(0))
  ep = synthetic.random_episode(3, 0, turns=turns, turn_seconds=spec.turn_seconds,
                                sample_rate=spec.sample_rate)
  return config, spec, model, ep


def _batch(ex):
  return {k: jnp.asarray(v)[None] for k, v in ex.items()}


def _embed(model, batch, first_turn=None):
  return jax.jit(lambda b: model.embed_episode(b, first_turn))(batch)


def test_crop_embeds_like_the_same_turns_of_the_whole(tiny_config):
  config, spec, model, ep = _model_and_episode(tiny_config)
  params = mel_lib.MelParams.from_layout(config.layout)
  whole = example_lib.episode_example(ep, spec, start_turn=0, turns=12, params=params)
  spt = spec.slots_per_turn
  x_all, pos_all = _embed(model, _batch(whole))
  for start in (1, 5, 7):
    crop = example_lib.episode_example(ep, spec, start_turn=start, turns=5, params=params)
    assert int(crop["first_turn"]) == start
    x, pos = _embed(model, _batch(crop))
    sl = slice(start * spt, (start + 5) * spt)
    np.testing.assert_array_equal(np.asarray(pos), np.asarray(pos_all[:, sl]))
    np.testing.assert_array_equal(np.asarray(x), np.asarray(x_all[:, sl]))


def test_companion_a_crop_embedded_as_a_session_start_differs(tiny_config):
  """The check above can fail: the old behaviour (every window embedded as if
  it began the session) gives other time embeddings and positions."""
  config, spec, model, ep = _model_and_episode(tiny_config)
  params = mel_lib.MelParams.from_layout(config.layout)
  whole = example_lib.episode_example(ep, spec, start_turn=0, turns=12, params=params)
  crop = example_lib.episode_example(ep, spec, start_turn=5, turns=5, params=params)
  spt = spec.slots_per_turn
  x_all, pos_all = _embed(model, _batch(whole))
  x, pos = _embed(model, _batch(crop), first_turn=0)
  sl = slice(5 * spt, 10 * spt)
  assert not np.array_equal(np.asarray(pos), np.asarray(pos_all[:, sl]))
  assert not np.array_equal(np.asarray(x), np.asarray(x_all[:, sl]))


def test_session_offset_moves_time_and_positions_together(tiny_config):
  config, spec, model, ep = _model_and_episode(tiny_config)
  params = mel_lib.MelParams.from_layout(config.layout)
  ex = example_lib.episode_example(ep, spec, start_turn=2, turns=4, params=params,
                                   session_offset=900)
  assert int(ex["first_turn"]) == 902
  _, pos = _embed(model, _batch(ex))
  assert int(pos[0, 0]) == 902 * spec.slots_per_turn
  with pytest.raises(ValueError, match="session_offset"):
    example_lib.episode_example(ep, spec, start_turn=0, turns=4, session_offset=-1)


def test_pipeline_offsets_cover_the_session_capacity(base_config):
  config = base_config()
  config.data.source = "synthetic"
  config.data.turns = 4
  config.data.batch_size = 8
  config.data.session_offset_prob = 0.5
  config.data.session_offset_max_turns = 1200
  it = pipeline.make_train_iter(config)
  firsts = np.concatenate([next(it)["first_turn"] for _ in range(8)])
  assert firsts.dtype == np.int32 and firsts.shape == (64,)
  # About half the windows start their session; the rest spread over 4 min.
  assert 10 <= int(np.sum(firsts < 4)) <= 54
  assert firsts.max() > config.session.capacity_turns


def test_offsets_off_gives_crop_starts_only(base_config):
  config = base_config()
  config.data.source = "synthetic"
  config.data.turns = 4
  assert config.data.session_offset_prob == 0.0
  firsts = next(pipeline.make_train_iter(config))["first_turn"]
  assert int(np.max(firsts)) < 64   # synthetic episodes are short


def test_bad_offset_config_stops_before_work(base_config):
  config = base_config()
  config.data.session_offset_prob = 1.5
  with pytest.raises(ValueError, match="session_offset_prob"):
    pipeline.build_dataset(config)
