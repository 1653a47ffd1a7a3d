"""Score predictions against a benchmark's references (`python -m experiments.score`).

Metric keys are the names the benchmarks write (`TOR`, `latency_s`, `JSD`,
`PAUC@0.5`, `OBO`, `MAE`, `mIoU`, `R1@0.5`, `accuracy`; FD-bench metrics are
prefixed by their task, e.g. `turn_taking/TOR`). `errors` has one entry per
sample that could not be scored: never a silent zero.

Timing source (`timing`): `audio` scores what the listener hears (the VAD and
the recogniser on output.wav, as Full-Duplex-Bench does), `events` the words
the agent reports about itself. FD-bench families default to `audio`, the
others to `events` (`DEFAULT_TIMING`). `score_both` scores under both and
lists, per sample, where they disagree.
"""

from __future__ import annotations

import os

from eval import loaders, predictions as pred_lib, vad as vad_lib
from eval.judges import make_judge
from eval.scoring import SCORERS
from eval.scoring.pauc import OMEGAS

DEFAULT_TIMING = {"fdb_v1": "audio", "fdb_v1_5": "audio"}
# Seconds of speech one source has and the other lacks before a sample is
# listed as a disagreement (VAD edges and word ends differ by ~0.1 s).
SPEECH_DISAGREE_S = 0.5
LATENCY_DISAGREE_S = 0.1


def default_timing(benchmark: str) -> str:
  return DEFAULT_TIMING.get(benchmark, "events")


def _known_keys(loaded) -> set:
  keys = {s.key for s in loaded.samples} | {s.id for s in loaded.samples}
  # A sample that failed to load is still a known sample: its prediction must not
  # be reported a second time as "unknown" (keys and bare ids both count).
  for e in loaded.errors:
    keys |= {e.key, e.key.split("/")[-1]}
  return keys


def score_benchmark(benchmark, references, predictions, *, judge=None, omega=None,
                    timing=None, vad="silero", aligner=None, strict=False, loaded=None):
  """Returns a ScoreResult; raises ValueError only for unusable roots/arguments.

  timing: 'audio' | 'events' | None (the benchmark's default); vad: the VAD of
  the audio source ('silero' | 'webrtc'); aligner: the recogniser
  (eval.asr.Aligner; default PocketSphinx).
  """
  if benchmark not in SCORERS:
    raise ValueError(f"unknown benchmark {benchmark!r}; known: {sorted(SCORERS)}")
  timing = timing or default_timing(benchmark)
  if timing not in pred_lib.TIMINGS:
    raise ValueError(f"timing must be one of {pred_lib.TIMINGS}, got {timing!r}")
  if vad not in vad_lib.VADS:
    raise ValueError(f"vad must be one of {vad_lib.VADS}, got {vad!r}")
  judge = judge or make_judge("rule")
  loaded = loaded or loaders.load(benchmark, references)
  extra_errors = []
  if os.path.isfile(predictions):
    if not predictions.endswith(".jsonl"):
      raise ValueError(f"predictions file must be a pred.jsonl, got {predictions}")
    table, row_errors = pred_lib.read_pred_jsonl(predictions)
    extra_errors += [{"key": "", "benchmark": benchmark, "error": e} for e in row_errors]

    def read(sample):
      if sample.id not in table:
        raise ValueError(f"no prediction rows for question_id {sample.id}")
      return table[sample.id]

    known = {s.id for s in loaded.samples} | {e.key.split("/")[-1] for e in loaded.errors}
    unknown = sorted(set(table) - known)
  elif os.path.isdir(predictions):
    def read(sample):
      return pred_lib.read_prediction(predictions, sample)

    unknown = sorted(pred_lib.prediction_keys(predictions) - _known_keys(loaded) - {"."})
  else:
    raise ValueError(f"predictions not found: {predictions}")
  if timing == "audio" and aligner is None:
    from eval.asr import make_aligner
    aligner = make_aligner()
  speech = {}

  def get_prediction(sample):
    pred = pred_lib.timing_view(read(sample), timing, vad=vad, aligner=aligner)
    if pred.timing == "audio" and pred.audio_segments is not None:
      speech[sample.key] = speech_agreement(pred)
    return pred

  kwargs = {}
  if benchmark == "proactive_videoqa":
    kwargs["omegas"] = OMEGAS + ((omega,) if omega is not None else ())
  elif benchmark == "fdb_v1_5":
    kwargs["vad"] = vad  # the user's segments of input.wav
  elif benchmark == "charades":
    kwargs["strict"] = strict
  result = SCORERS[benchmark](loaded.samples, get_prediction, judge, **kwargs)
  result.timing = timing
  result.speech = speech
  source = (f"audio: {vad_lib.describe(vad)} + {aligner.name} on output.wav" if timing == "audio"
            else "events: the agent's own word times (events.jsonl)")
  result.notes = [f"timing source {source}"] + result.notes
  result.errors = ([e.to_json() for e in loaded.errors] + extra_errors + result.errors
                   + [{"key": k, "benchmark": benchmark,
                       "error": "prediction for an unknown sample id"} for k in unknown])
  return result


def speech_agreement(pred) -> dict:
  """Seconds of speech by the text (events) and by the audio (VAD), and how much
  of each the other lacks: the text says it speaks while the audio is silent
  (`text_only_s`), or the reverse (`audio_only_s`)."""
  from eval.asr import word_errors
  said = pred_lib.split_words(pred.text_events or [])
  text = vad_lib.segments_from_words([(w.t_start, w.t_end, w.text) for w in said])
  audio = pred.audio_segments or []
  both = vad_lib.overlap_seconds(text, audio)
  # The recogniser's word errors against what the agent says it said: for an
  # agent whose text and audio agree (the oracle), the recogniser's own WER.
  errors, n_words = word_errors(" ".join(w.text for w in said),
                                " ".join(e.text for e in pred.events))
  return {"text_s": round(vad_lib.total(text), 3), "audio_s": round(vad_lib.total(audio), 3),
          "text_only_s": round(max(0.0, vad_lib.total(text) - both), 3),
          "audio_only_s": round(max(0.0, vad_lib.total(audio) - both), 3),
          "text_words": n_words, "word_errors": errors,
          "sound_s": round(pred.audio_sound_s or 0.0, 3)}


def corpus_wer(speech: dict):
  """Word errors / text words over a result's samples (None without text words)."""
  n = sum(v["text_words"] for v in speech.values())
  return sum(v["word_errors"] for v in speech.values()) / n if n else None


def _row_values(row: dict) -> dict:
  """The per-sample numbers and tags worth comparing between timing sources."""
  out = {}
  for k, v in row.items():
    if k in ("key", "task"):
      continue
    if isinstance(v, bool) or isinstance(v, (int, float, str)) or v is None:
      out[k] = v
  return out


def disagreements(audio_json: dict, events_json: dict) -> list[dict]:
  """Per sample: metrics that differ between the sources, and speech one has and
  the other lacks (from the audio result's `speech`)."""
  ev_rows = {r["key"]: r for r in events_json.get("per_sample", [])}
  speech = audio_json.get("speech", {})
  out = []
  for row in audio_json.get("per_sample", []):
    key = row["key"]
    ev = ev_rows.get(key)
    differs = {}
    if ev is not None:
      a, e = _row_values(row), _row_values(ev)
      for k in sorted(set(a) | set(e)):
        va, ve = a.get(k), e.get(k)
        if isinstance(va, (int, float)) and isinstance(ve, (int, float)) \
            and not isinstance(va, bool) and not isinstance(ve, bool):
          tol = LATENCY_DISAGREE_S if "latency" in k else 1e-9
          if abs(va - ve) > tol:
            differs[k] = [va, ve]
        elif va != ve:
          differs[k] = [va, ve]
    sp = speech.get(key)
    said = []
    if sp and sp["text_only_s"] > SPEECH_DISAGREE_S:
      said.append(f"text speaks {sp['text_only_s']:.1f} s where the audio has no speech")
    if sp and sp["audio_only_s"] > SPEECH_DISAGREE_S:
      said.append(f"audio has {sp['audio_only_s']:.1f} s of speech the text does not say")
    if sp and sp.get("sound_s", 0) - sp["audio_s"] > SPEECH_DISAGREE_S:
      said.append(f"audio has {sp['sound_s'] - sp['audio_s']:.1f} s of sound that is not speech")
    if differs or said:
      out.append({"key": key, "differs": differs, "speech": sp, "what": "; ".join(said)})
  return out


def score_both(benchmark, references, predictions, **kwargs) -> dict:
  """Scores under both timing sources: the default source's ScoreResult JSON
  plus `by_timing` ({source: metrics}) and `disagreements` (per sample)."""
  kwargs.pop("timing", None)
  results = {t: score_benchmark(benchmark, references, predictions, timing=t, **kwargs)
             for t in pred_lib.TIMINGS}
  primary = default_timing(benchmark)
  out = results[primary].to_json()
  out["by_timing"] = {t: r.metrics for t, r in results.items()}
  out["per_sample_by_timing"] = {t: r.per_sample for t, r in results.items()}
  out["errors_by_timing"] = {t: r.errors for t, r in results.items() if t != primary}
  audio_json = results["audio"].to_json()
  out["disagreements"] = disagreements(audio_json, results["events"].to_json())
  out["speech"] = audio_json["speech"]
  out["wer_text_vs_audio"] = corpus_wer(audio_json["speech"])
  return out
