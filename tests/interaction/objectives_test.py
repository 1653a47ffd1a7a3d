"""compute_loss: which slots carry loss, and how the terms are weighted,
against values computed by hand (a stand-in model with known outputs)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import tiny
from interaction.layout import LayoutSpec, Stream
from interaction.objectives import compute_loss
from pallas_kernels.numerics import Numerics

V = 7  # vocabulary of the stand-in model


class _StandIn:
  """Duck-typed model: fixed logits, audio conditions and aux losses; a flow
  head whose velocity is 0, so the flow loss is mean((x1 - x0)^2)."""

  def __init__(self, spec, logits, cond, aux):
    self.spec, self.numerics = spec, Numerics()
    self._out = {"text_logits": logits, "audio_cond": cond, "aux": aux}
    self.flow = lambda x_t, t, h: jnp.zeros_like(x_t)

  def forward(self, batch):
    del batch
    return self._out


def _setup(turn_mask, model_mel=None):
  config = tiny.get_config()
  spec = LayoutSpec.from_config(config.layout)
  b, t = 1, len(turn_mask)
  n_text, n_audio = spec.count(Stream.MODEL_TEXT), spec.count(Stream.MODEL_AUDIO)
  targets = np.full((b, t, n_text), 3, np.int32)
  logits = np.zeros((b, t, n_text, V), np.float32)   # turn 0: uniform -> nll log V, wrong
  logits[0, 1, :, 3] = 2.0                            # turn 1: right, nll log(1 + 6 e^-2)
  logits[0, 2:, :, 5] = 50.0                          # later turns: wrong and confident
  if model_mel is None:
    model_mel = np.zeros((b, t, spec.frames_per_turn, spec.n_mels), np.float32)
  batch = {"model_text": jnp.asarray(targets), "turn_mask": jnp.asarray(turn_mask)[None],
           "model_mel": jnp.asarray(model_mel)}
  cond = jnp.ones((b, t, n_audio, 4), jnp.float32)
  aux = {"load_balance_loss": jnp.float32(2.0), "z_loss": jnp.float32(3.0)}
  return config, spec, _StandIn(spec, jnp.asarray(logits), cond, aux), batch


def test_text_loss_and_accuracy_cover_only_unmasked_turns():
  config, _, model, batch = _setup([True, True, False])
  _, m = compute_loss(model, batch, jax.random.key(0), config)
  want = (math.log(V) + math.log(1 + (V - 1) * math.exp(-2.0))) / 2
  np.testing.assert_allclose(float(m["text_loss"]), want, rtol=1e-6)
  assert float(m["text_acc"]) == 0.5
  # Companion: unmasking the confident wrong turn changes both, so the mask
  # is what kept it out above.
  config, _, model, batch = _setup([True, True, True])
  _, m_all = compute_loss(model, batch, jax.random.key(0), config)
  np.testing.assert_allclose(float(m_all["text_loss"]), (2 * want + 50.0) / 3,
                             rtol=1e-5)
  np.testing.assert_allclose(float(m_all["text_acc"]), 1 / 3, rtol=1e-6)


def test_flow_loss_ignores_masked_turns():
  config, spec, model, batch = _setup([True, True, False])
  shape = batch["model_mel"].shape
  _, m = compute_loss(model, batch, jax.random.key(0), config)
  # Any mel in the masked turn: the same flow loss.
  mel = np.zeros(shape, np.float32)
  mel[:, 2] = spec.dmel_max
  _, m2 = compute_loss(model, dict(batch, model_mel=jnp.asarray(mel)),
                       jax.random.key(0), config)
  assert float(m2["flow_loss"]) == float(m["flow_loss"])
  # A changed mel in an unmasked turn moves it: the loss does see real slots.
  mel[:, 1] = spec.dmel_max
  _, m3 = compute_loss(model, dict(batch, model_mel=jnp.asarray(mel)),
                       jax.random.key(0), config)
  assert float(m3["flow_loss"]) != float(m["flow_loss"])
  # With velocity 0 the loss is E[(x1 - x0)^2]: x1 = unit(0 mel) is the
  # constant (0 - mid) / half-range, x0 standard normal, so about x1^2 + 1.
  x1 = (0.0 - (spec.dmel_min + spec.dmel_max) / 2) / ((spec.dmel_max - spec.dmel_min) / 2)
  np.testing.assert_allclose(float(m["flow_loss"]), x1 ** 2 + 1, rtol=0.1)


@pytest.mark.parametrize("w_text,w_flow,w_lb,w_z", [(1.0, 1.0, 1e-2, 1e-3),
                                                     (0.5, 2.0, 0.1, 0.0)])
def test_total_is_the_weighted_sum(w_text, w_flow, w_lb, w_z):
  config, _, model, batch = _setup([True, True, False])
  config.train.text_loss_weight, config.train.flow_loss_weight = w_text, w_flow
  config.model.moe.load_balance_weight, config.model.moe.z_loss_weight = w_lb, w_z
  total, m = compute_loss(model, batch, jax.random.key(0), config)
  want = (w_text * float(m["text_loss"]) + w_flow * float(m["flow_loss"])
          + w_lb * 2.0 + w_z * 3.0)
  np.testing.assert_allclose(float(total), want, rtol=1e-6)
  assert float(m["load_balance_loss"]) == 2.0 and float(m["z_loss"]) == 3.0


def test_pad_weight_scales_pad_targets_against_spoken_ones():
  """Turn 0's targets are <pad>, turn 1's a spoken byte: the text loss is
  their weighted mean, w * nll_pad + 1 * nll_byte over w + 1."""
  from interaction.tokenizer import TOKENIZER
  config, spec, model, batch = _setup([True, True, False])
  vocab = TOKENIZER.vocab_size               # the stand-in needs <pad> in its vocabulary
  logits = np.zeros(np.asarray(model._out["text_logits"]).shape[:-1] + (vocab,), np.float32)
  logits[0, 1, :, 3] = 2.0                   # turn 1: byte 3, right
  logits[0, 2:, :, 5] = 50.0                 # masked turn
  model._out["text_logits"] = jnp.asarray(logits)
  targets = np.asarray(batch["model_text"]).copy()
  targets[0, 0] = TOKENIZER.pad_id           # turn 0: uniform logits, nll log(vocab), wrong
  batch = dict(batch, model_text=jnp.asarray(targets))
  nll_pad, nll_byte = math.log(vocab), math.log(1 + (vocab - 1) * math.exp(-2.0))
  for w in (1.0, 0.25, 0.0):
    config.train.pad_weight = w
    _, m = compute_loss(model, batch, jax.random.key(0), config)
    np.testing.assert_allclose(float(m["text_loss"]), (w * nll_pad + nll_byte) / (w + 1),
                               rtol=1e-6)
    assert float(m["speech_acc"]) == 1.0     # the byte turn is right
    assert float(m["text_acc"]) == 0.5       # accuracy stays unweighted


def test_audio_input_noise_corrupts_only_the_model_audio_input():
  from interaction import mel as mel_lib
  from interaction.objectives import noisy_model_audio
  config = tiny.get_config()
  spec = LayoutSpec.from_config(config.layout)
  rng = np.random.default_rng(0)
  mel = rng.uniform(spec.dmel_min, spec.dmel_max, (2, 3, 16, spec.n_mels)).astype(np.float32)
  clean = mel_lib.dmel_quantize(mel, spec)
  np.testing.assert_array_equal(noisy_model_audio(jnp.asarray(mel), spec, jax.random.key(0), 0.0),
                                clean)
  noisy = np.asarray(noisy_model_audio(jnp.asarray(mel), spec, jax.random.key(0), 2.0))
  assert noisy.min() >= 0 and noisy.max() < spec.dmel_bins
  assert 0.05 < np.mean(noisy != clean) < 0.95
  # The loss reads the noisy stream: a model that records its input sees it.
  seen = {}

  class _Recorder(_StandIn):
    def forward(self, batch):
      seen["model_audio"] = batch["model_audio"]
      return super().forward(batch)

  config, _, model, batch = _setup([True, True, False])
  batch = dict(batch, model_audio=jnp.asarray(mel_lib.dmel_quantize(np.asarray(batch["model_mel"]), spec)))
  rec = _Recorder(model.spec, *model._out.values())
  config.train.audio_input_noise = 0.0
  compute_loss(rec, batch, jax.random.key(0), config)
  np.testing.assert_array_equal(seen["model_audio"], batch["model_audio"])
  config.train.audio_input_noise = 3.0
  compute_loss(rec, batch, jax.random.key(0), config)
  assert not np.array_equal(np.asarray(seen["model_audio"]), np.asarray(batch["model_audio"]))
  config.train.audio_input_noise = -1.0
  with pytest.raises(ValueError, match="audio_input_noise"):
    compute_loss(rec, batch, jax.random.key(0), config)


def test_self_feed_gives_the_model_its_own_flow_samples_on_valid_turns():
  """With a flow head whose velocity is a constant c and noise at temperature
  0, the Euler sample is c: a self-fed example's model_audio input is then
  dmel_quantize(unit_to_mel(c)) on every valid turn, by hand; masked turns
  and examples left to the truth keep their bins."""
  from interaction import mel as mel_lib
  from interaction.flow_head import unit_to_mel
  seen = []

  class _Fed(_StandIn):
    flow_steps = 3

    def __init__(self, *a):
      super().__init__(*a)
      self.flow = lambda x_t, t, h: jnp.full_like(x_t, 0.25)

    def forward(self, batch):
      seen.append(batch["model_audio"])
      return super().forward(batch)

  config, spec, model, batch = _setup([True, True, False])
  fed = _Fed(spec, *model._out.values())
  truth = np.full(np.asarray(batch["model_mel"]).shape, 3, np.int32)
  batch = dict(batch, model_audio=jnp.asarray(truth))
  config.session.flow_temperature = 0.0
  expect = int(mel_lib.dmel_quantize(np.asarray(unit_to_mel(jnp.float32(0.25), spec.dmel_min,
                                                            spec.dmel_max)), spec))
  assert expect != 3
  config.train.self_feed = 1.0
  compute_loss(fed, batch, jax.random.key(0), config)
  assert len(seen) == 2                      # the sampling pass, then the trained pass
  np.testing.assert_array_equal(seen[0], truth)
  got = np.asarray(seen[1])
  assert (got[0, :2] == expect).all()        # valid turns: the model's own samples
  np.testing.assert_array_equal(got[0, 2], truth[0, 2])   # masked turn: untouched
  # self_feed 0: one pass, the truth (and the draws of older runs).
  seen.clear()
  config.train.self_feed = 0.0
  compute_loss(fed, batch, jax.random.key(0), config)
  assert len(seen) == 1
  np.testing.assert_array_equal(seen[0], truth)
  config.train.self_feed = 1.5
  with pytest.raises(ValueError, match="train.self_feed"):
    compute_loss(fed, batch, jax.random.key(0), config)


def test_self_feed_is_drawn_per_example():
  from interaction.objectives import self_fed_model_audio
  config, spec, model, batch = _setup([True, True, True])
  b = 64
  model.flow_steps = 1
  model.flow = lambda x_t, t, h: jnp.full_like(x_t, 0.25)
  cond = jnp.ones((b,) + model._out["audio_cond"].shape[1:], jnp.float32)
  model._out = dict(model._out, audio_cond=cond)
  truth = jnp.full((b,) + batch["model_mel"].shape[1:], 3, jnp.int32)
  batch = {"model_audio": truth, "turn_mask": jnp.ones((b, 3), bool)}
  got = np.asarray(self_fed_model_audio(model, batch, jax.random.key(1), 0.5, 0.0))
  changed = (got != 3).any(axis=(1, 2, 3))
  assert ((got != 3).all(axis=(1, 2, 3)) == changed).all()   # whole examples, not slots
  assert 16 < changed.sum() < 48
