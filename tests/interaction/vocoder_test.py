"""The learned streaming vocoder's structural properties (interaction/learned_vocoder.py).

A tiny vocoder with random weights everywhere (its head is zero-initialised
for training; here it is randomised too, so the network really shapes the
output) is enough for what the construction promises: streamed chunks equal
one call over the whole utterance, chunk seams neither click nor bulge,
silence gives silence, any input gives a finite wave in [-1, 1]; plus the
checkpoint round trip, its errors, the session using it, and the trainer.
"""

import jax
import numpy as np
import pytest

from interaction import learned_vocoder as lv
from interaction import mel as mel_lib
from interaction.layout import LayoutSpec

FRAMES = 16  # one micro-turn of mel


@pytest.fixture(scope="module")
def spec():
  from experiments.configs import common
  return LayoutSpec.from_config(common.layout_config())


def _tiny_config(spec, **kw):
  net = dict(dim=16, blocks=1, kernel=3, in_kernel=2, ffn_mult=2)
  net.update(kw)
  return lv.VocoderConfig.from_layout(spec, **net)


def _random_params(config, seed=0, scale=0.3):
  params = lv.init_params(config, seed)
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  leaves = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return jax.tree_util.tree_unflatten(tree, leaves)


@pytest.fixture(scope="module")
def vocoder(spec):
  config = _tiny_config(spec)
  return lv.LearnedVocoder(config, _random_params(config))


def _speechlike_mel(spec, seconds=1.2):
  """log10 mel of a voiced, gliding, amplitude-modulated tone with pauses."""
  sr = spec.sample_rate
  t = np.arange(int(seconds * sr)) / sr
  f0 = 140 + 30 * np.sin(2 * np.pi * 1.3 * t)
  phase = 2 * np.pi * np.cumsum(f0) / sr
  wave = sum(np.sin(h * phase) / h for h in range(1, 12))
  wave *= 0.1 * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t)) * (np.sin(2 * np.pi * 0.9 * t) > -0.7)
  mel = mel_lib.log_mel(wave.astype(np.float32), spec)
  return np.clip(mel, spec.dmel_min, spec.dmel_max)[:len(mel) // FRAMES * FRAMES]


def _stream(voc, mel):
  st = voc.streamer()
  return np.concatenate([st(mel[i:i + FRAMES]) for i in range(0, len(mel), FRAMES)])


def test_streamed_chunks_equal_the_whole_utterance(spec, vocoder):
  mel = _speechlike_mel(spec)
  whole = vocoder.synthesize(mel)
  streamed = _stream(vocoder, mel)
  assert streamed.shape == whole.shape == (len(mel) * spec.hop_samples,)
  assert np.abs(whole).max() > 1e-2  # not a silent vocoder
  np.testing.assert_allclose(streamed, whole, atol=1e-4 * np.abs(whole).max())
  # Companion: a streamer that forgets its state at every chunk differs.
  fresh = np.concatenate([vocoder.streamer()(mel[i:i + FRAMES])
                          for i in range(0, len(mel), FRAMES)])
  assert np.abs(fresh - whole).max() > 100 * 1e-4 * np.abs(whole).max()


def _seam_figures(wave, spec):
  """(jump ratio, highest and lowest energy ratio) at chunk boundaries.

  jump: the largest sample-to-sample step at a boundary over the 99th
  percentile of steps elsewhere (a click is a step far outside the signal's
  own range). energy: the energy of a 10 ms window centred on a boundary over
  the median energy of the 10 ms windows in the 50 ms around it (a bulge
  above 1, a drop-out below).
  """
  spt = spec.samples_per_turn
  steps = np.abs(np.diff(wave))
  bounds = np.arange(spt, len(wave) - spt // 2, spt)
  inside = np.ones(len(steps), bool)
  inside[bounds - 1] = False
  jump = steps[bounds - 1].max() / np.percentile(steps[inside], 99)
  w = 80
  ratios = []
  for b in bounds:
    at = np.mean(wave[b - w:b + w] ** 2)
    around = [np.mean(wave[c - w:c + w] ** 2) for c in range(b - 400, b + 401, 2 * w)
              if abs(c - b) >= 2 * w]
    ratios.append(at / (np.median(around) + 1e-12))
  return jump, max(ratios), min(ratios)


def _steady_mel(spec, chunks=6):
  """One frame of a held vowel-like tone, repeated: a stationary input, so the
  output's own energy hardly moves and a seam would stand out."""
  sr = spec.sample_rate
  t = np.arange(sr) / sr
  wave = 0.05 * sum(np.sin(2 * np.pi * 150 * h * t) / h for h in range(1, 12))
  frame = np.clip(mel_lib.log_mel(wave.astype(np.float32), spec)[40], spec.dmel_min,
                  spec.dmel_max)
  return np.tile(frame, (chunks * FRAMES, 1))


def test_chunk_seams_do_not_click(spec, vocoder):
  mel = _steady_mel(spec)
  jump, high, low = _seam_figures(_stream(vocoder, mel), spec)
  assert jump <= 1.5, jump
  assert 1 / 1.25 <= low and high <= 1.25, (low, high)   # measured 0.90 .. 1.07
  # Companion, same mel and chunks: with no state carried across chunks
  # (each chunk vocoded from a fresh state) the check sees the seams.
  fresh = np.concatenate([vocoder.streamer()(mel[i:i + FRAMES])
                          for i in range(0, len(mel), FRAMES)])
  jump, high, low = _seam_figures(fresh, spec)
  assert jump > 1.5 or high > 1.25 or low < 1 / 1.25, (jump, high, low)  # 1.37 bulge


def test_silence_in_gives_silence_out(spec, vocoder):
  st = vocoder.streamer()
  for value in (spec.dmel_min, -10.0, -30.0):  # the floor, digital silence, below
    out = np.concatenate([st(np.full((FRAMES, spec.n_mels), value, np.float32))
                          for _ in range(6)])
    assert np.abs(out).max() < 1e-3, (value, np.abs(out).max())   # below -60 dBFS
  # Companion: the same stream given speech is not silent.
  assert np.abs(st(_speechlike_mel(spec)[:FRAMES])).max() > 1e-2


def test_out_of_range_mel_gives_a_bounded_wave(spec, vocoder):
  rng = np.random.default_rng(0)
  cases = {"huge": np.full((FRAMES, spec.n_mels), 1e3), "tiny": np.full((FRAMES, spec.n_mels), -1e3),
           "nan": np.full((FRAMES, spec.n_mels), np.nan),
           "inf": np.full((FRAMES, spec.n_mels), np.inf),
           "wild": rng.normal(0, 100, (FRAMES, spec.n_mels))}
  st = vocoder.streamer()
  for name, mel in cases.items():
    out = st(mel.astype(np.float32))
    assert np.isfinite(out).all(), name
    assert np.abs(out).max() <= 1.0, (name, np.abs(out).max())
  # The bound is the construction's: before the final tanh, loud mel overshoots 1.
  net = lv.NetBinder(vocoder.config)(vocoder.params)
  _, aux, _ = lv.forward(net, vocoder.consts, np.full((1, 64, spec.n_mels), spec.dmel_max,
                                                       np.float32),
                         lv.init_state(vocoder.config))
  assert np.abs(np.asarray(aux["raw"])).max() > 1.0


def test_mel_to_wave_is_the_stream_with_its_delay_taken_out(spec, vocoder):
  mel = _speechlike_mel(spec, seconds=0.6)
  aligned = vocoder.mel_to_wave(mel)
  d = vocoder.delay_samples
  assert aligned.shape == (len(mel) * spec.hop_samples,)
  np.testing.assert_allclose(aligned[:-d], vocoder.synthesize(mel)[d:], atol=1e-4)
  assert d == (vocoder.config.lookahead + 1) * spec.hop_samples + vocoder.config.n_fft // 2


def _save(directory, config, params):
  manager = lv.checkpoint_manager(directory, create=True)
  lv.save_checkpoint(manager, 3, params, {"count": np.zeros((), np.int32)},
                     lv.write_meta(config))
  manager.wait_until_finished()
  manager.close()


def test_checkpoint_round_trip_and_clear_errors(spec, vocoder, tmp_path):
  workdir = tmp_path / "run"
  _save(str(workdir / "vocoder"), vocoder.config, vocoder.params)
  for path in (workdir, workdir / "vocoder"):   # the model workdir or the vocoder dir
    loaded = lv.load_vocoder(str(path))
    assert loaded.config == vocoder.config
    mel = _speechlike_mel(spec, seconds=0.4)
    np.testing.assert_array_equal(loaded.synthesize(mel), vocoder.synthesize(mel))
  assert lv.has_vocoder(str(workdir)) and not lv.has_vocoder(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no vocoder checkpoint.*train_vocoder"):
    lv.load_vocoder(str(tmp_path / "nowhere"))
  # Parameters that do not fit the saved config: named, not a reshape error.
  other = _tiny_config(spec, dim=8)
  _save(str(tmp_path / "bad"), vocoder.config, lv.init_params(other, 0))
  with pytest.raises(ValueError, match="do not match its config"):
    lv.load_vocoder(str(tmp_path / "bad"))
  # Another mel space than the model's layout: every differing field is named.
  from experiments.configs import common
  layout = common.layout_config()
  layout.n_mels = 64
  layout.mel_hop_ms = 10.0
  with pytest.raises(ValueError, match=r"(?s)another mel space.*hop.*n_mels"):
    lv.check_layout(vocoder.config, LayoutSpec.from_config(layout))
  with pytest.raises(ValueError, match="unknown network fields"):
    lv.VocoderConfig.from_layout(spec, phase_advance=True)


def test_session_speaks_through_the_learned_vocoder(tiny_config, tiny_params, vocoder):
  from interaction.session import Sessions
  sessions = Sessions(tiny_config, tiny_params, batch_size=1, vocoder=vocoder)
  spec = sessions.spec
  frame = np.zeros((spec.video_height, spec.video_width, 3), np.uint8)
  rng = np.random.default_rng(0)
  outs = [sessions.step((0.1 * rng.standard_normal(spec.samples_per_turn)).astype(np.float32),
                        video=frame) for _ in range(3)]
  audio = np.concatenate([o.audio[0] for o in outs])
  assert audio.shape == (3 * spec.samples_per_turn,)
  assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
  # The same mel through the vocoder's own stream, then the session's output
  # limiter at the same settings, gives the same audio.
  from interaction.audio_stream import OutputLimiter
  mel = np.concatenate([o.mel[0] for o in outs])
  limiter = OutputLimiter(spec.sample_rate, sessions.limiters[0].ceiling,
                          1.0 / (sessions.limiters[0].step * spec.sample_rate))
  raw = _stream(vocoder, mel)
  n = spec.samples_per_turn
  expected = np.concatenate([limiter(raw[i * n:(i + 1) * n]) for i in range(3)])
  np.testing.assert_allclose(audio, expected, atol=1e-5)
  # A vocoder of another mel space is refused when the session is built.
  from experiments.configs import common
  layout = common.layout_config()
  layout.fmax = 8000.0
  other = lv.LearnedVocoder(
      lv.VocoderConfig.from_layout(LayoutSpec.from_config(layout), dim=16, blocks=1),
      lv.init_params(lv.VocoderConfig.from_layout(LayoutSpec.from_config(layout), dim=16,
                                                  blocks=1), 0))
  with pytest.raises(ValueError, match="fmax"):
    Sessions(tiny_config, tiny_params, batch_size=1, vocoder=other)


def test_trainer_writes_a_checkpoint_sessions_load_and_resumes(tmp_path, spec):
  """Two steps on synthetic speech (no espeak), then a resumed third."""
  from data_pipeline import episode as episode_lib
  from data_pipeline import synthetic
  from experiments import vocoder_trainer as train_vocoder
  from experiments.configs import vocoder as vocoder_config
  data = tmp_path / "data" / "episodes" / "synthetic"
  for i in range(2):
    ep = synthetic.random_episode(0, i, turns=12, turn_seconds=0.2, sample_rate=16000)
    episode_lib.write_episode(data / f"ep{i}", ep)
  config = vocoder_config.get_config()
  v, d, t = config.vocoder, config.data, config.train
  v.dim, v.blocks, v.kernel, v.in_kernel, v.ffn_mult = 16, 1, 3, 2, 2
  d.path, d.families, d.crop_frames, d.batch_size = str(tmp_path / "data"), "", 16, 2
  t.steps, t.warmup_steps, t.log_every, t.ckpt_every, t.stft_sizes = 2, 1, 1, 1, "256"
  workdir = str(tmp_path / "run")
  _, _, step = train_vocoder.train_vocoder(config, workdir, progress=False)
  assert step == 2
  loaded = lv.load_vocoder(workdir)
  assert loaded.config.dim == 16 and loaded.source.endswith("@2")
  t.steps = 3
  _, _, step = train_vocoder.train_vocoder(config, workdir, progress=False)
  assert step == 3
  v.dim = 8   # another network in the same workdir: refused, fields named
  with pytest.raises(ValueError, match=r"(?s)another vocoder.*dim: checkpoint=16 config=8"):
    train_vocoder.train_vocoder(config, workdir, progress=False)


def test_a_vocoder_next_to_a_model_takes_the_model_layout(tmp_path):
  """A workdir with a model's config.json gives the vocoder that model's mel
  space (demo's dmel_max 0.5, not the default 2.0); one without keeps the
  config's; a config.json that is not a model's is refused."""
  import json
  from experiments import vocoder_trainer
  from experiments.configs import common
  from experiments.configs import vocoder as vocoder_config
  config = vocoder_config.get_config()
  assert vocoder_trainer.with_model_layout(config, str(tmp_path)) is config
  layout = common.layout_config()
  layout.dmel_max = 0.5
  (tmp_path / "config.json").write_text(json.dumps({"layout": layout.to_dict()}))
  adopted = vocoder_trainer.with_model_layout(config, str(tmp_path))
  assert adopted.layout.dmel_max == 0.5 and config.layout.dmel_max == 2.0
  assert vocoder_trainer.vocoder_config(adopted).mel_max == 0.5
  assert adopted.vocoder.to_dict() == config.vocoder.to_dict()
  (tmp_path / "config.json").write_text(json.dumps({"name": "x"}))
  with pytest.raises(ValueError, match="no layout section"):
    vocoder_trainer.with_model_layout(config, str(tmp_path))
