"""Reading predictions: replay folders and the benchmarks' own formats.

- replay folder: `<root>/<sample key>/events.jsonl` (+ `output.wav`,
  `meta.json`); `<root>/<id>/` is accepted too when ids are unique.
- FD-bench: `<root>/<key>/output.json` = `{"text", "chunks": [{"text",
  "timestamp": [s, e]}]}` (the parakeet ASR output), with `output.wav`.
- ProactiveVideoQA: a `pred.jsonl` file, one row per chunk; a row's time is
  `video_span[1]` and only rows with `answerable == "Yes"` count (as in the
  published scorer).
"""

from __future__ import annotations

import dataclasses
import json
import os

from eval.events import SPOKEN, TextEvent, jsonl_lines, read_events, split_words


@dataclasses.dataclass
class Prediction:
  events: list
  audio_path: str | None = None
  # FD-bench word chunks as published (end may be None); None -> from events.
  fdb_words: list | None = None
  source: str = ""

  def words(self) -> list[tuple[float, float | None, str]]:
    if self.fdb_words is not None:
      return list(self.fdb_words)
    return [(w.t_start, w.t_end, w.text) for w in split_words(self.events)]


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
      t0, t1 = c["timestamp"][0], c["timestamp"][1]
      words.append((float(t0), None if t1 is None else float(t1), str(c["text"])))
    except (KeyError, TypeError, IndexError, ValueError):
      raise ValueError(f"{path}: chunks[{i}] needs 'text' and 'timestamp' [start, end]") from None
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
