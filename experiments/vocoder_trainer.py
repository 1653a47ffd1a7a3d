"""The learned vocoder's training loop (the library behind
`python -m experiments.train_vocoder`); see that module for the loss and the
workdir layout."""


from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import optax
from absl import logging

from experiments import cli, trainer

from interaction import audio_io
from interaction import learned_vocoder as lv
from interaction import mel as mel_lib
from interaction.layout import LayoutSpec

def vocoder_config(config) -> lv.VocoderConfig:
  spec = LayoutSpec.from_config(config.layout)
  return lv.VocoderConfig.from_layout(spec, **config.vocoder.to_dict())


# ---------------------------------------------------------------------------
# Data: every speech wave of the episodes, cropped around speech
# ---------------------------------------------------------------------------
def _episode_root(config, workdir: str) -> str:
  """data.path, else WORKDIR/data (the model's episodes), else generated once."""
  if config.data.path:
    return config.data.path
  shared = os.path.join(workdir, "data")
  if os.path.exists(os.path.join(shared, "episodes", "manifest.json")):
    return shared
  own = os.path.join(workdir, "vocoder", "data")
  if not os.path.exists(os.path.join(own, "episodes", "manifest.json")):
    from data_pipeline import generate
    families = generate.parse_families(config.data.families or "all")
    print(f"generating {config.data.generate_per_family} episodes per family "
          f"({', '.join(families)}) into {own}", flush=True)
    generate.generate(families, int(config.data.generate_per_family), own,
                      split="train", seed=int(config.data.seed))
  return own


class SpeechCrops:
  """The episodes' speech (both speakers) as (mel, wave) crops for the vocoder.

  Mel is the layout's offline log10 mel clipped to [dmel_min, dmel_max]: the
  flow head's target, so what a session's vocoder is fed.
  """

  def __init__(self, root: str, config, vc: lv.VocoderConfig, families=None):
    from data_pipeline import episode as episode_lib
    self.vc, self.d = vc, config.data
    self.spec = LayoutSpec.from_config(config.layout)
    self.waves, self.mels, self.speech = [], [], []
    dirs = episode_lib.list_episodes(root, families)
    if not dirs:
      raise ValueError(f"data: no episodes under {root}"
                       + (f" for families {families}" if families else ""))
    for ep in dirs:
      for name in ("model.wav", "user.wav"):
        try:
          wave = audio_io.load_audio(str(ep / name), target_rate=vc.sample_rate)
        except audio_io.AudioError as e:
          logging.warning("skipping %s: %s", ep / name, e)
          continue
        frames = len(wave) // vc.hop
        rms = np.sqrt(np.mean(wave[:frames * vc.hop].reshape(frames, vc.hop) ** 2, axis=1))
        speech = np.nonzero(rms > 1e-3)[0]
        if len(speech) < 8:
          continue
        mel = np.clip(mel_lib.log_mel(wave, self.spec), vc.mel_min, vc.mel_max)
        self.waves.append(wave)
        self.mels.append(mel)
        self.speech.append(speech)
    if not self.waves:
      raise ValueError(f"data: the episodes under {root} hold no speech")
    counts = np.array([len(s) for s in self.speech], np.float64)
    self.weights = counts / counts.sum()
    # Frames before the first loss frame: the network's receptive field, the
    # overlapping windows and the frame the phase holds over, so every loss
    # sample comes from a state built on real (or silent) past, as in a session.
    self.warm = vc.receptive_frames + vc.overlap_frames + 1

  @property
  def speech_seconds(self) -> float:
    return sum(len(s) for s in self.speech) * self.vc.hop / self.vc.sample_rate

  def batch(self, step: int):
    """(mel [B, warm + T, n_mels], target wave [B, T * hop]) of training step `step`."""
    vc, d = self.vc, self.d
    rng = np.random.default_rng([int(d.seed), int(step)])
    t, warm, hop, delay = int(d.crop_frames), self.warm, vc.hop, vc.delay_samples
    mels = np.full((d.batch_size, warm + t, vc.n_mels), vc.mel_min, np.float32)
    waves = np.zeros((d.batch_size, t * hop), np.float32)
    for b in range(d.batch_size):
      i = int(rng.choice(len(self.waves), p=self.weights))
      mel, wave = self.mels[i], self.waves[i]
      if rng.random() < d.speech_fraction:
        centre = int(rng.choice(self.speech[i]))
      else:
        centre = int(rng.integers(0, len(mel)))
      a = centre - int(rng.integers(0, t))          # first loss frame
      gain_db = rng.uniform(-d.gain_db, d.gain_db)
      # Net input frames [a - warm, a + t); outside the wave: silence.
      lo, hi = a - warm, a + t
      src = mel[max(lo, 0):min(hi, len(mel))]
      mels[b, max(lo, 0) - lo:max(lo, 0) - lo + len(src)] = src + gain_db / 20.0
      # Target: output sample i is the speech at i - delay.
      s0 = a * hop - delay
      s_lo, s_hi = max(s0, 0), min(s0 + t * hop, len(wave))
      if s_hi > s_lo:
        waves[b, s_lo - s0:s_hi - s0] = wave[s_lo:s_hi] * 10.0 ** (gain_db / 20.0)
    if d.mel_noise > 0:
      mels += rng.normal(0.0, d.mel_noise, mels.shape).astype(np.float32)
    return np.clip(mels, vc.mel_min, vc.mel_max), waves


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------
def _dft(n: int, window: np.ndarray):
  """[n, n/2+1] windowed real-DFT matrices (cos, -sin).

  Matmuls, not jnp.fft.rfft: XLA:CPU's FFT thunk (ducc) deadlocked here in the
  Eigen thread pool when the gradient ran several FFTs at once.
  """
  k = np.arange(n // 2 + 1)[None]
  angle = 2.0 * np.pi * np.arange(n)[:, None] * k / n
  return ((window[:, None] * np.cos(angle)).astype(np.float32),
          (-window[:, None] * np.sin(angle)).astype(np.float32))


def _stft_mag(x, n: int, hop: int, dft):
  """|STFT| [B, frames, n/2+1] of x [B, L] (no centring).

  Frames are cut from a [B, L/hop, hop] view by concatenating R shifted
  slices (cheaper to differentiate than a gather).
  """
  frames = 1 + (x.shape[-1] - n) // hop
  r = -(-n // hop)
  rows = x[:, :(frames + r - 1) * hop].reshape(x.shape[0], frames + r - 1, hop)
  cut = jnp.concatenate([rows[:, k:k + frames] for k in range(r)], axis=-1)[..., :n]
  re, im = cut @ dft[0], cut @ dft[1]
  # |z| with a floor inside the root: the plain abs has an infinite gradient at 0.
  return jnp.sqrt(re ** 2 + im ** 2 + 1e-12)


def make_loss(config, vc: lv.VocoderConfig):
  sizes = [int(s) for s in cli.comma_list(config.train.stft_sizes)]
  dfts = {n: _dft(n, librosa.filters.get_window("hann", n, fftbins=True)) for n in sizes}
  pad = (vc.mel_n_fft - vc.mel_win) // 2
  mel_window = np.zeros(vc.mel_n_fft)
  mel_window[pad:pad + vc.mel_win] = librosa.filters.get_window("hann", vc.mel_win,
                                                                fftbins=True)
  mel_dft = _dft(vc.mel_n_fft, mel_window)
  basis = librosa.filters.mel(sr=vc.sample_rate, n_fft=vc.mel_n_fft, n_mels=vc.n_mels,
                              fmin=vc.fmin, fmax=vc.fmax).T.astype(np.float32)
  mel_w = float(config.train.mel_loss_weight)
  mag_w = float(config.train.mag_loss_weight)
  synth_dft = _dft(vc.n_fft, librosa.filters.get_window("hann", vc.n_fft, fftbins=True))

  def loss(y, x, mag):
    """y, x: output and target waves [B, L]; mag: the output's frame magnitudes,
    frame q synthesised at samples [q*hop, q*hop + n_fft) of y."""
    sc = lm = 0.0
    for n in sizes:
      sy, sx = _stft_mag(y, n, n // 4, dfts[n]), _stft_mag(x, n, n // 4, dfts[n])
      sc += jnp.sqrt(jnp.sum((sy - sx) ** 2)) / (jnp.sqrt(jnp.sum(sx ** 2)) + 1e-7)
      lm += jnp.mean(jnp.abs(jnp.log(sy + 1e-5) - jnp.log(sx + 1e-5)))
    sc, lm = sc / len(sizes), lm / len(sizes)
    my = jnp.log10(jnp.maximum(_stft_mag(y, vc.mel_n_fft, vc.hop, mel_dft) @ basis, 1e-5))
    mx = jnp.log10(jnp.maximum(_stft_mag(x, vc.mel_n_fft, vc.hop, mel_dft) @ basis, 1e-5))
    mel_l1 = jnp.mean(jnp.abs(my - mx))
    # The predicted magnitudes against the target's STFT on the synthesis grid:
    # a phase-free signal for the magnitude (the wave losses also see how the
    # integrated phase and the predicted offset fare).
    mx_syn = _stft_mag(x, vc.n_fft, vc.hop, synth_dft)
    mag_l1 = jnp.mean(jnp.abs(jnp.log(mag[:, :mx_syn.shape[1]] + 1e-5)
                              - jnp.log(mx_syn + 1e-5)))
    total = sc + lm + mel_w * mel_l1 + mag_w * mag_l1
    return total, {"loss": total, "stft_sc": sc, "stft_logmag": lm, "mel_l1": mel_l1,
                   "mag_l1": mag_l1}

  return loss


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------
def make_train_step(config, vc: lv.VocoderConfig, warm: int):
  binder = lv.NetBinder(vc)
  consts = lv.constants(vc)
  loss_fn = make_loss(config, vc)
  tx = trainer.make_optimizer(config)
  skip = warm * vc.hop

  def objective(params, mel, target):
    state = lv.init_state(vc, mel.shape[0])
    wave, aux, _ = lv.forward(binder(params), consts, mel, state)
    return loss_fn(wave[:, skip:], target, aux["mag"][:, warm:])

  def step(params, opt_state, mel, target):
    (_, metrics), grads = jax.value_and_grad(objective, has_aux=True)(
        params, mel, target)
    updates, opt_state = tx.update(grads, opt_state, params)
    metrics["grad_norm"] = optax.global_norm(grads)
    return optax.apply_updates(params, updates), opt_state, metrics

  return tx, jax.jit(step, donate_argnums=(0, 1))


def with_model_layout(config, workdir: str):
  """config with the layout of the model trained in `workdir` (its
  config.json), when there is one: a session refuses a vocoder of another
  mel space (learned_vocoder.check_layout), so the vocoder written next to
  a model is trained on that model's mel (e.g. demo's dmel_max 0.5, not the
  default 2.0). Without a model there, config as given."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return config
  with open(path) as f:
    saved = json.load(f)
  if "layout" not in saved:
    raise ValueError(f"{path}: no layout section; is {workdir} a model workdir?")
  import ml_collections
  config = ml_collections.ConfigDict(config.to_dict())
  config.layout = ml_collections.ConfigDict(saved["layout"])
  print(f"layout: the model's ({path})", flush=True)
  return config


def train_vocoder(config, workdir: str, *, progress: bool = True):
  """Trains until train.steps or train.max_minutes; returns (VocoderConfig, params, step).

  The layout is the model's when `workdir` holds one (with_model_layout)."""
  import orbax.checkpoint as ocp
  config = with_model_layout(config, workdir)
  vc = vocoder_config(config)
  out_dir = os.path.join(workdir, "vocoder")
  os.makedirs(out_dir, exist_ok=True)
  root = _episode_root(config, workdir)
  families = cli.comma_list(config.data.families) or None
  if root != config.data.path and root.endswith(os.path.join("vocoder", "data")):
    families = None  # generated for the vocoder: every family in it is speech
  data = SpeechCrops(root, config, vc, families)
  print(f"vocoder: {lv.count_params(lv.init_params(vc, 0)):,} parameters, delay "
        f"{1000 * vc.delay_samples / vc.sample_rate:.1f} ms; data {root}: "
        f"{len(data.waves)} waves, {data.speech_seconds:.0f} s of speech", flush=True)

  tx, train_step = make_train_step(config, vc, data.warm)
  manager = lv.checkpoint_manager(out_dir, keep=config.train.keep_checkpoints, create=True)
  meta = lv.write_meta(vc, {"layout": json.loads(config.layout.to_json())})
  params = lv.init_params(vc, int(config.train.seed))
  opt_state = tx.init(params)
  step = 0
  if manager.latest_step() is not None:
    step = int(manager.latest_step())
    saved = manager.restore(step, args=ocp.args.Composite(
        **{lv.META_ITEM: ocp.args.JsonRestore()}))[lv.META_ITEM]
    if saved.get("vocoder") != meta["vocoder"]:
      diffs = [f"  {k}: checkpoint={saved.get('vocoder', {}).get(k)!r} "
               f"config={v!r}" for k, v in meta["vocoder"].items()
               if saved.get("vocoder", {}).get(k) != v]
      raise ValueError(f"{out_dir}: its checkpoint is another vocoder; use another "
                       "--workdir or restore the fields:\n" + "\n".join(diffs))
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), {"p": params, "o": opt_state})
    restored = manager.restore(step, args=ocp.args.Composite(**{
        lv.PARAMS_ITEM: ocp.args.StandardRestore(abstract["p"]),
        lv.TRAIN_ITEM: ocp.args.StandardRestore(abstract["o"])}))
    params, opt_state = restored[lv.PARAMS_ITEM], restored[lv.TRAIN_ITEM]
    print(f"resumed from step {step} in {out_dir}", flush=True)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))

  def save(at):
    lv.save_checkpoint(manager, at, params, opt_state, meta)

  tc = config.train
  t_start = t_log = time.time()
  pending = []
  with open(os.path.join(out_dir, "metrics.jsonl"), "a") as log:
    try:
      while step < tc.steps:
        mel, target = data.batch(step)
        params, opt_state, metrics = train_step(params, opt_state, jnp.asarray(mel),
                                                jnp.asarray(target))
        step += 1
        pending.append(metrics)
        out_of_time = tc.max_minutes > 0 and time.time() - t_start > tc.max_minutes * 60
        if step % tc.log_every == 0 or step == tc.steps or out_of_time:
          means = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
          bad = [k for k, v in means.items() if not math.isfinite(v)]
          if bad:
            raise FloatingPointError(f"non-finite {bad} in steps "
                                     f"{step - len(pending) + 1}..{step}")
          now = time.time()
          means["steps_per_sec"] = len(pending) / max(now - t_log, 1e-9)
          t_log, pending = now, []
          log.write(json.dumps({"step": step, **means}) + "\n")
          log.flush()
          if progress:
            print(f"step {step:5d}  loss {means['loss']:.4f}  sc {means['stft_sc']:.3f}  "
                  f"logmag {means['stft_logmag']:.3f}  mel {means['mel_l1']:.3f}  "
                  f"mag {means['mag_l1']:.3f}  "
                  f"{means['steps_per_sec']:.2f} steps/s", flush=True)
        if step % tc.ckpt_every == 0 or step == tc.steps or out_of_time:
          save(step)
        if out_of_time:
          print(f"train.max_minutes={tc.max_minutes:g} reached at step {step}", flush=True)
          break
    finally:
      manager.wait_until_finished()
      manager.close()
  return vc, params, step
