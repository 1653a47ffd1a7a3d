"""Reading predictions: replay folders and the benchmarks' own formats.

- replay folder: `<root>/<sample key>/events.jsonl` (+ `output.wav`,
  `meta.json`); `<root>/<id>/` is accepted too when ids are unique.
- FD-bench: `<root>/<key>/output.json` = `{"text", "chunks": [{"text",
  "timestamp": [s, e]}]}` (the parakeet ASR output), with `output.wav`.
- ProactiveVideoQA: a `pred.jsonl` file, one row per chunk; a row's time is
  `video_span[1]` and only rows with `answerable == "Yes"` count (as in the
  published scorer).

Timing sources (`timing_view`): `events` scores the words the agent reports
about itself (events.jsonl; speech = where those words are); `audio` scores
what the listener hears: the recogniser's words on output.wav (eval/asr.py)
and the VAD's speech segments of it (eval/vad.py), as Full-Duplex-Bench
does. An FD-bench `output.json` already holds ASR words of the audio: it is
used as is under both sources (the VAD still runs on output.wav for `audio`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os

from eval.events import SPOKEN, TextEvent, jsonl_lines, read_events, split_words

TIMINGS = ("audio", "events")


@dataclasses.dataclass
class Prediction:
  events: list
  audio_path: str | None = None
  # FD-bench word chunks as published (end may be None); None -> from events.
  fdb_words: list | None = None
  source: str = ""
  timing: str = "events"
  # timing 'audio': VAD speech segments of output.wav (None: no output.wav).
  audio_segments: list | None = None
  audio_duration: float | None = None
  audio_sound_s: float | None = None  # seconds of output louder than -40 dBFS
  # timing 'audio': the agent's own events, kept for the text/audio comparison.
  text_events: list | None = None

  def words(self) -> list[tuple[float, float | None, str]]:
    if self.fdb_words is not None:
      return list(self.fdb_words)
    return [(w.t_start, w.t_end, w.text) for w in split_words(self.events)]

  def speech_segments(self, what: str = "output") -> list[tuple[float, float]]:
    """Where the agent speaks: the VAD's segments of output.wav (timing 'audio')
    or where its words are (timing 'events')."""
    from eval import vad as vad_lib
    if self.timing == "audio":
      if self.audio_segments is None:
        raise ValueError(f"timing 'audio' needs output.wav for the {what} "
                         "(or score with timing='events')")
      return list(self.audio_segments)
    return vad_lib.segments_from_words(self.words())


def _finite_time(value, what: str, path: str, i: int, allow_none: bool = False):
  if value is None and allow_none:
    return None
  try:
    t = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{path}: chunks[{i}] {what} must be a number, got {value!r}") from None
  if not math.isfinite(t):
    # max(0, nan) is 0.0 in Python: a NaN start would score as a perfect latency.
    raise ValueError(f"{path}: chunks[{i}] {what} is {value!r}, not a finite time")
  return t


def read_fdb_output_json(path: str) -> list[tuple[float, float | None, str]]:
  try:
    with open(path) as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"malformed JSON in {path}: {e}") from None
  if not isinstance(data, dict) or not isinstance(data.get("chunks"), list):
    raise ValueError(f"{path}: expected an object with a 'chunks' list")
  words = []
  for i, c in enumerate(data["chunks"]):
    try:
      t0, t1, text = c["timestamp"][0], c["timestamp"][1], str(c["text"])
    except (KeyError, TypeError, IndexError):
      raise ValueError(f"{path}: chunks[{i}] needs 'text' and 'timestamp' [start, end]") from None
    words.append((_finite_time(t0, "start", path, i),
                  _finite_time(t1, "end", path, i, allow_none=True), text))
  return words


def _sample_dir(root: str, sample) -> str | None:
  for rel in (sample.key, sample.id):
    d = os.path.join(root, rel)
    if os.path.isdir(d):
      return d
  return None


def read_prediction(root: str, sample) -> Prediction:
  """The prediction for one sample; ValueError (naming what is wrong) otherwise."""
  d = _sample_dir(root, sample)
  if d is None:
    raise ValueError(f"no prediction folder for {sample.key} under {root}")
  meta_path = os.path.join(d, "meta.json")
  if os.path.exists(meta_path):
    try:
      with open(meta_path) as f:
        meta = json.load(f)
    except json.JSONDecodeError:
      meta = {}
    if meta.get("status") == "error":
      raise ValueError(f"replay failed: {meta.get('error', 'unknown error')}")
  wav = os.path.join(d, "output.wav")
  wav = wav if os.path.exists(wav) else None
  ev_path = os.path.join(d, "events.jsonl")
  if os.path.exists(ev_path):
    return Prediction(read_events(ev_path), wav, source="events.jsonl")
  out_json = os.path.join(d, "output.json")
  if os.path.exists(out_json):
    words = read_fdb_output_json(out_json)
    events = [TextEvent(t0, t0 if t1 is None else max(t0, t1), w, SPOKEN) for t0, t1, w in words]
    return Prediction(events, wav, fdb_words=words, source="output.json")
  raise ValueError(f"{d}: neither events.jsonl nor output.json")


@functools.lru_cache(maxsize=256)
def _heard(path: str, stamp: tuple, vad: str, aligner) -> tuple:
  """(VAD segments, recognised words, duration) of one output.wav; cached so
  scoring under several settings decodes each file once (keyed on its mtime)."""
  from interaction import audio_io
  from eval import vad as vad_lib
  audio = audio_io.load_audio(path, mix_down=True)
  segs = vad_lib.speech_segments(audio, vad=vad)
  words = aligner.align(audio) if aligner is not None else None
  return (tuple(segs), (tuple(words) if words is not None else None),
          len(audio) / audio_io.SAMPLE_RATE, vad_lib.sound_seconds(audio))


def timing_view(pred: Prediction, timing: str, *, vad: str = "silero", aligner=None) -> Prediction:
  """The prediction as the scorers see it under a timing source (module docstring).

  audio: events become the recogniser's words on output.wav (FD-bench
  output.json words stay), `audio_segments` the VAD's segments. Raises
  ValueError when there is no output.wav to listen to.
  """
  if timing not in TIMINGS:
    raise ValueError(f"timing must be one of {TIMINGS}, got {timing!r}")
  if timing == "events":
    return pred
  if pred.fdb_words is not None:
    if not pred.audio_path:  # the ASR words are audio-side already; no VAD without the wav
      return dataclasses.replace(pred, timing="audio", text_events=pred.events)
    aligner = None
  elif not pred.audio_path:
    raise ValueError(f"timing 'audio' needs output.wav; this {pred.source or 'prediction'} "
                     "has text only (score with timing='events')")
  elif aligner is None:
    from eval.asr import make_aligner
    aligner = make_aligner()
  st = os.stat(pred.audio_path)
  segs, words, dur, sound = _heard(pred.audio_path, (st.st_mtime_ns, st.st_size), vad, aligner)
  out = dataclasses.replace(pred, timing="audio", audio_segments=list(segs),
                            audio_duration=dur, audio_sound_s=sound, text_events=pred.events)
  if words is not None:
    out.events = [TextEvent(t0, max(t0, t1), w, SPOKEN) for t0, t1, w in words]
  return out


def read_pred_jsonl(path: str) -> tuple[dict, list]:
  """ProactiveVideoQA pred.jsonl -> ({question_id: Prediction}, [row errors])."""
  preds: dict[str, Prediction] = {}
  errors = []
  for lineno, line in jsonl_lines(path):
    try:
      row = json.loads(line)
      qid = str(row["question_id"])
      t = float(row["video_span"][1])
    except (json.JSONDecodeError, KeyError, TypeError, IndexError, ValueError) as e:
      errors.append(f"{os.path.basename(path)} line {lineno}: bad row ({e})")
      continue
    p = preds.setdefault(qid, Prediction([], source="pred.jsonl"))
    answerable = str(row.get("answerable", "")).lower() == "yes"
    if answerable and row.get("model_response"):
      p.events.append(TextEvent(t, t, str(row["model_response"]), SPOKEN))
  return preds, errors


def prediction_keys(root: str) -> set[str]:
  """Every folder under a replay/prediction root that holds a prediction file."""
  keys = set()
  for dirpath, _, files in os.walk(root):
    if "events.jsonl" in files or "output.json" in files or "meta.json" in files:
      keys.add(os.path.relpath(dirpath, root))
  return keys
