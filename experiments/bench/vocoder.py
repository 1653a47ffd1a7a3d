"""The learned streaming vocoder against Griffin-Lim: what a recogniser hears, and cost.

  python -m experiments.bench vocoder --vocoder=WORKDIR [--sentences=48]
      [--voices_per_sentence=2] [--untrained] [--chunks=500]

WORKDIR is a model workdir holding vocoder/ (or the vocoder dir itself), as
written by `python -m experiments.train_vocoder`.

(1) Quality on held-out espeak speech: `--sentences` sentences that are in no
    generator's text, each spoken by `--voices_per_sentence` held-out voices
    (data_pipeline.tts.HELDOUT_VOICES, never used for training), at a seeded
    rate and pitch. Each
    is heard by the offline recogniser (eval.asr.transcribe, PocketSphinx) as
    (a) the original waveform, (b) Griffin-Lim from its mel as a session runs
    it (streaming, 'pinv', `session.vocoder_iters` iterations, context frames,
    cross-fades), (b2) Griffin-Lim offline at its best (NNLS inversion, 32
    iterations, the whole utterance at once) and (c) the learned vocoder from
    its mel, streamed 16 frames at a time as a session runs it. Mel is the
    layout's offline log10 mel clipped to [dmel_min, dmel_max] (the flow
    head's target). Reported: word error rate over all words, and the
    log-spectral distance to the original (dB; the layout's STFT, bins in
    [fmin, fmax], frames within 60 dB of the loudest; the learned output
    shifted back by its fixed delay).
(2) Cost per 200 ms chunk, p50 / p99 / max over `--chunks` chunks of the
    sentences' mel, for the learned vocoder and the streaming Griffin-Lim.
    With `--one_core` (default) the process is pinned to one core before JAX
    starts (os.sched_setaffinity), so XLA's thread pool has one core, as
    `taskset -c 0` would.
(3) Silence in (the layout's floor) and out-of-range mel in (+-1e3, NaN, inf):
    the peak of what comes out.

Targets: learned WER at most 5 points above the original's and below
Griffin-Lim's; learned p99 <= 10 ms per chunk on one core.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from absl import flags

_VOCODER = flags.DEFINE_string("vocoder", None, "The trained vocoder: a model workdir "
                               "holding vocoder/, or the vocoder dir itself.")
_SENTENCES = flags.DEFINE_integer("sentences", 48, "Held-out sentences (at most 48).")
_VOICES = flags.DEFINE_integer("voices_per_sentence", 2,
                               "Held-out voices each sentence is spoken in (more words, "
                               "less noise in the WER).")
_UNTRAINED = flags.DEFINE_bool("untrained", False, "Also score the learned vocoder's network "
                               "at its initial weights (the analytic vocoder: mel envelope "
                               "+ PGHI phase), to see what training adds.")
_CHUNKS = flags.DEFINE_integer("chunks", 500, "200 ms chunks timed for the learned vocoder.")
_GL_CHUNKS = flags.DEFINE_integer("gl_chunks", 100, "200 ms chunks timed for Griffin-Lim.")
_ONE_CORE = flags.DEFINE_bool("one_core", True, "Pin the process to one core first.")
_OUT = flags.DEFINE_string("out", "", "Optional dir for the first sentence's wavs.")

# Sentences in no generator's text (data_pipeline/generators.py), everyday words.
HELDOUT_SENTENCES = (
    "the old man walked slowly down the quiet street",
    "please close the window before the rain starts",
    "my sister bought a new car last week",
    "we will meet at the station at nine tomorrow",
    "the children played in the park all afternoon",
    "can you help me carry these heavy boxes",
    "the coffee in this shop is always too hot",
    "turn left at the next corner and keep going",
    "she reads a book every night before bed",
    "the train was late because of the snow",
    "he forgot his umbrella at the office again",
    "the garden is full of red and yellow flowers",
    "our neighbors are moving to a bigger house",
    "the doctor said i should drink more water",
    "they painted the kitchen a bright shade of green",
    "the river was too cold for swimming",
    "i left my phone on the table in the hall",
    "the music was so loud that nobody could talk",
    "we need to buy bread eggs and cheese",
    "the cat is sleeping on the warm blanket",
    "he runs five miles every morning before work",
    "the library closes early on sunday",
    "the bus driver waited for the old woman",
    "my brother plays the piano very well",
    "the store on the corner sells fresh fruit",
    "it was a long and difficult journey home",
    "the teacher wrote the answer on the board",
    "she wants to learn how to speak french",
    "the meeting has been moved to friday afternoon",
    "the baby laughed when the dog barked",
    "we watched the sun go down over the hills",
    "please put the dishes in the sink",
    "the wind blew the leaves across the yard",
    "he found an old photograph in the drawer",
    "the restaurant was closed for the holiday",
    "my friend lives in a small town by the sea",
    "the lights went out during the storm",
    "she always wears a blue hat in winter",
    "the farmer sold his horse at the market",
    "they walked along the beach looking for shells",
    "the bridge was built more than a hundred years ago",
    "he wrote a letter to his grandmother",
    "the birds sing loudly in the early morning",
    "i would like a cup of tea with milk",
    "the road to the village was covered in mud",
    "she opened the door and stepped outside",
    "the clock on the wall stopped at midnight",
    "we planted three apple trees in the spring",
)


def _pin_one_core():
  """Before JAX's first computation: XLA sizes its thread pool by the affinity."""
  cores = sorted(os.sched_getaffinity(0))
  os.sched_setaffinity(0, {cores[0]})
  return cores[0]


def heldout_speech(n: int, spec, seed: int = 0, voices_per_sentence: int = 1):
  """[(text, voice, wave)] of n held-out sentences x voices, padded to whole micro-turns.

  200 ms of silence in front and at least 200 ms behind: a session's output
  starts and ends in silence too, and the recogniser gets its lead-in.
  """
  from data_pipeline import tts
  if not 0 < n <= len(HELDOUT_SENTENCES):
    raise ValueError(f"--sentences must be in [1, {len(HELDOUT_SENTENCES)}], got {n}")
  rng = np.random.default_rng(seed)
  out = []
  spt = spec.samples_per_turn
  utterances = [(text, tts.HELDOUT_VOICES[(i * voices_per_sentence + r)
                                         % len(tts.HELDOUT_VOICES)])
                for r in range(voices_per_sentence)
                for i, text in enumerate(HELDOUT_SENTENCES[:n])]
  for text, voice in utterances:
    s = tts.synthesize(text, voice=voice, rate=int(rng.integers(140, 190)),
                       pitch=int(rng.integers(30, 70)),
                       pitch_range=int(rng.integers(30, 70)),
                       sample_rate=spec.sample_rate)
    wave = np.pad(s.wave, (spt, spt + (-len(s.wave)) % spt))
    out.append((text, voice, wave.astype(np.float32)))
  return out


def log_spectral_distance(ref: np.ndarray, test: np.ndarray, spec) -> float:
  """Mean over loud frames of the RMS over [fmin, fmax] bins of 10 log10(P_ref / P_test), dB."""
  import librosa
  from interaction import mel as mel_lib
  params = mel_lib.MelParams.from_spec(spec)
  n = min(len(ref), len(test))

  def power(x):
    return np.abs(librosa.stft(x[:n], n_fft=params.n_fft, hop_length=spec.hop_samples,
                               win_length=mel_lib.win_samples(spec, params),
                               window="hann")) ** 2
  pr, pt = power(ref), power(test)
  freqs = np.arange(pr.shape[0]) * spec.sample_rate / params.n_fft
  band = (freqs >= params.fmin) & (freqs <= params.fmax)
  energy = 10 * np.log10(pr[band].sum(axis=0) + 1e-12)
  loud = energy > energy.max() - 60.0
  diff = 10 * np.log10((pr[band][:, loud] + 1e-10) / (pt[band][:, loud] + 1e-10))
  return float(np.mean(np.sqrt(np.mean(diff ** 2, axis=0))))


def _stream(make, mel, frames):
  voc = make()
  return np.concatenate([voc(mel[i:i + frames]) for i in range(0, len(mel), frames)])


def _chunk_times(voc, chunks, count):
  """ms per call of voc(chunk) over `count` chunks (after 5 warm-up calls)."""
  for c in chunks[:5]:
    voc(c)
  times = []
  for i in range(count):
    c = chunks[i % len(chunks)]
    t0 = time.perf_counter()
    voc(c)
    times.append((time.perf_counter() - t0) * 1e3)
  return {"p50": statistics.median(times), "p99": float(np.percentile(times, 99)),
          "max": max(times)}


def main(argv):
  del argv
  core = _pin_one_core() if _ONE_CORE.value else None
  if not _VOCODER.value:
    raise ValueError("--vocoder: give the trained vocoder (a model workdir holding "
                     "vocoder/, from python -m experiments.train_vocoder)")
  from eval import asr
  from experiments.bench import common
  from experiments.configs import common as config_common
  from interaction import learned_vocoder as lv
  from interaction import mel as mel_lib
  from interaction.audio_stream import StreamingVocoder
  from interaction.layout import LayoutSpec
  from interaction.vocoder import GriffinLimVocoder

  base = config_common.base_config()
  spec = LayoutSpec.from_config(base.layout)
  vocoder = lv.load_vocoder(_VOCODER.value)
  lv.check_layout(vocoder.config, spec, where=f"--vocoder={_VOCODER.value}")
  mel_params = mel_lib.MelParams.from_spec(spec)
  frames, delay = spec.frames_per_turn, vocoder.delay_samples
  print(f"machine: {common.machine()}" + (f", pinned to core {core}" if core is not None
                                           else ""))
  print(f"vocoder {vocoder.source}: {lv.count_params(vocoder.params):,} parameters, "
        f"delay {1000 * delay / spec.sample_rate:.1f} ms")

  def gl_stream():
    return StreamingVocoder(spec, n_iter=base.session.vocoder_iters,
                            context_frames=base.session.vocoder_context_frames,
                            params=mel_params)

  offline_gl = GriffinLimVocoder(spec, n_iter=32, params=mel_params)
  systems = ("original", "griffin_lim", "griffin_lim_offline", "learned")
  untrained = None
  if _UNTRAINED.value:
    untrained = lv.LearnedVocoder(vocoder.config, lv.init_params(vocoder.config, 0),
                                  source="untrained")
    systems += ("learned_untrained",)
  errors = {k: 0 for k in systems}
  lsd = {k: [] for k in systems[1:]}
  words = 0
  chunks = []
  speech = heldout_speech(_SENTENCES.value, spec, voices_per_sentence=_VOICES.value)
  t_start = time.time()
  for i, (text, voice, wave) in enumerate(speech):
    mel = np.clip(mel_lib.log_mel(wave, spec), spec.dmel_min, spec.dmel_max)
    chunks += [mel[j:j + frames] for j in range(0, len(mel), frames)]
    learned = _stream(vocoder.streamer, mel, frames)
    outs = {"original": wave, "griffin_lim": _stream(gl_stream, mel, frames),
            "griffin_lim_offline": offline_gl.mel_to_wave(mel), "learned": learned}
    aligned = {"griffin_lim": outs["griffin_lim"],
               "griffin_lim_offline": outs["griffin_lim_offline"],
               "learned": learned[delay:]}
    if untrained is not None:
      outs["learned_untrained"] = _stream(untrained.streamer, mel, frames)
      aligned["learned_untrained"] = outs["learned_untrained"][delay:]
    for name, y in aligned.items():
      lsd[name].append(log_spectral_distance(wave, y, spec))
    heard = {}
    for name, y in outs.items():
      heard[name] = " ".join(w for _, _, w in asr.transcribe(np.clip(y, -1.0, 1.0)))
      e, n = asr.word_errors(text, heard[name])
      errors[name] += e
    words += n
    if i == 0 and _OUT.value:
      from interaction import audio_io
      os.makedirs(_OUT.value, exist_ok=True)
      for name, y in outs.items():
        audio_io.write_wav(os.path.join(_OUT.value, f"{name}.wav"), y, spec.sample_rate)
    if i < 3:
      print(f"  [{voice}] {text!r}: " + "; ".join(f"{k}: {v!r}" for k, v in heard.items()))
  wer = {k: errors[k] / max(words, 1) for k in systems}
  lsd_db = {k: float(np.mean(v)) for k, v in lsd.items()}
  print(f"quality on {len(speech)} held-out utterances ({_SENTENCES.value} sentences x "
        f"{_VOICES.value} voices, {words} words, "
        f"{len(set(v for _, v, _ in speech))} held-out voices), "
        f"{time.time() - t_start:.0f} s:")
  print(f"  {'':22s} {'WER':>7s} {'LSD dB':>8s}")
  for k in systems:
    print(f"  {k:22s} {wer[k]:7.3f} {lsd_db.get(k, 0.0):8.2f}")

  learned_t = _chunk_times(vocoder.streamer(), chunks, _CHUNKS.value)
  gl_t = _chunk_times(gl_stream(), chunks, _GL_CHUNKS.value)
  print(f"cost per 200 ms chunk ({'one core' if core is not None else 'all cores'}): "
        f"learned p50 {learned_t['p50']:.2f} / p99 {learned_t['p99']:.2f} / max "
        f"{learned_t['max']:.2f} ms over {_CHUNKS.value}; Griffin-Lim p50 "
        f"{gl_t['p50']:.2f} / p99 {gl_t['p99']:.2f} ms over {_GL_CHUNKS.value}")

  voc = vocoder.streamer()
  silence = max(float(np.abs(voc(np.full((frames, spec.n_mels), v, np.float32))).max())
                for v in [spec.dmel_min] * 10 + [-10.0] * 5)
  wild = 0.0
  for v in (1e3, -1e3, np.nan, np.inf, -np.inf):
    y = voc(np.full((frames, spec.n_mels), v, np.float32))
    wild = max(wild, float(np.abs(y).max()) if np.isfinite(y).all() else np.inf)
  print(f"silence in -> peak {silence:.2e} out ({20 * np.log10(silence + 1e-12):.0f} dBFS); "
        f"out-of-range mel in -> peak {wild:.3f}")

  figures = {
      "wer_original_ratio": round(wer["original"], 4),
      "wer_griffin_lim_ratio": round(wer["griffin_lim"], 4),
      "wer_griffin_lim_offline_ratio": round(wer["griffin_lim_offline"], 4),
      "wer_learned_ratio": round(wer["learned"], 4),
      "lsd_griffin_lim_db": round(lsd_db["griffin_lim"], 3),
      "lsd_griffin_lim_offline_db": round(lsd_db["griffin_lim_offline"], 3),
      "lsd_learned_db": round(lsd_db["learned"], 3),
      "learned_chunk_p50_ms": round(learned_t["p50"], 3),
      "learned_chunk_p99_ms": round(learned_t["p99"], 3),
      "learned_chunk_max_ms": round(learned_t["max"], 3),
      "griffin_lim_chunk_p50_ms": round(gl_t["p50"], 3),
      "griffin_lim_chunk_p99_ms": round(gl_t["p99"], 3),
      "learned_delay_ms": round(1000 * delay / spec.sample_rate, 2),
      **({"wer_learned_untrained_ratio": round(wer["learned_untrained"], 4),
          "lsd_learned_untrained_db": round(lsd_db["learned_untrained"], 3)}
         if untrained is not None else {}),
      "silence_peak": silence, "out_of_range_peak": wild,
      "utterances": len(speech), "words": words,
      "params": lv.count_params(vocoder.params), "one_core": core is not None,
  }
  common.emit(figures)
  return 0
