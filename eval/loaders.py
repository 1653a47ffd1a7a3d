"""Loaders for the benchmarks' published formats and our synthetic suites.

Each loader takes the benchmark's root folder and returns a `LoadResult`: the
samples it could parse and one `SampleError` per item it could not (missing
file, malformed JSON or CSV row, ...). A bad item never stops the others.
Formats: WORKSPACE.md (section eval) and each loader's docstring.
"""

from __future__ import annotations

import csv
import json
import math
import os

from interaction import audio_io
from eval.samples import LoadResult, Sample, SampleError

# FD-bench v1 task files -> our task names.
FDB_V1_TASK_FILES = {"pause.json": "pause_handling",
                     "turn_taking.json": "turn_taking",
                     "interrupt.json": "user_interruption"}
FDB_V1_5_TASKS = ("user_interruption", "user_backchannel", "talking_to_other",
                  "background_speech")


def _read_json(path: str):
  if not os.path.exists(path):
    raise ValueError(f"missing file {os.path.basename(path)}")
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"malformed JSON in {os.path.basename(path)}: {e}") from None


def _interval(value, what: str) -> tuple[float, float]:
  if (not isinstance(value, (list, tuple)) or len(value) != 2
      or not all(isinstance(v, (int, float)) for v in value)):
    raise ValueError(f"{what} must be [start, end] in seconds, got {value!r}")
  a, b = float(value[0]), float(value[1])
  if not (math.isfinite(a) and math.isfinite(b)) or b < a:
    raise ValueError(f"{what} must satisfy start <= end, got {value!r}")
  return a, b


def _subdirs(path: str) -> list[str]:
  return sorted(d for d in os.listdir(path)
                if not d.startswith(".") and os.path.isdir(os.path.join(path, d)))


# Files that mark a folder as one FD-bench sample (scoring needs no input.wav:
# a sample folder may hold only the reference json and the model's output.json).
SAMPLE_FILES = ("input.wav", "pause.json", "turn_taking.json", "interrupt.json",
                "metadata.json", "output.json", "output.wav")
# Seconds a reference time may pass the input's end (wav lengths are whole samples,
# reference times are written rounded).
_END_SLACK_S = 0.05


def _is_sample_dir(d: str) -> bool:
  return any(os.path.exists(os.path.join(d, f)) for f in SAMPLE_FILES)


def _sample_dirs(root: str) -> list[tuple[str, str]]:
  """(task_dir_name, sample_dir) pairs under `root` = benchmark or task folder."""
  if not os.path.isdir(root):
    raise ValueError(f"benchmark folder not found: {root}")
  subs = _subdirs(root)
  # A task folder holds sample folders directly; a benchmark folder holds tasks.
  if any(_is_sample_dir(os.path.join(root, s)) for s in subs):
    return [(os.path.basename(os.path.normpath(root)), os.path.join(root, s)) for s in subs]
  out = []
  for task in subs:
    for s in _subdirs(os.path.join(root, task)):
      out.append((task, os.path.join(root, task, s)))
  return out


def _read_manifest(root: str):
  path = os.path.join(root, "manifest.json")
  if not os.path.exists(path):
    return None
  try:
    return _read_json(path)
  except ValueError:
    return {"error": "malformed manifest.json"}


def _check_audio(sample: Sample) -> None:
  """Marks the sample's media as broken (not the sample) when input.wav is bad."""
  try:
    sample.duration  # reads the header
  except ValueError as e:
    sample.media_error = str(e)


def _check_within_audio(sample: Sample, points) -> None:
  """ValueError when a reference time the agent must react to lies past the end
  of the input audio: it could never answer (a truncated input.wav would score
  take-over 0 in silence). Skipped without a readable input.wav (scoring only)."""
  if sample.media_error or not sample.audio_path:
    return
  dur = sample.duration
  for what, t in points:
    if t > dur + _END_SLACK_S:
      raise ValueError(f"reference {what} {t:g} s lies past the end of "
                       f"{os.path.basename(sample.audio_path)} ({dur:.2f} s): truncated input?")


def _reference_points(sample: Sample) -> list:
  """(what, time) the agent must hear before it can answer: a pause's end (the
  user resumes), the turn end (turn_taking.json [0]), the interruption's end
  ([1]), the v1.5 overlap's end, a target window's start (a window may run past
  the input: answering early in it is right), the spoken instruction's end."""
  ref, b = sample.reference, sample.benchmark
  if b == "fdb_v1":
    return ([("pause.json timestamp end", p[1]) for p in ref.get("pause", [])]
            + [("turn_taking.json timestamp start", t[0]) for t in ref.get("turn", [])[:1]]
            + ([("interrupt.json timestamp end", ref["interrupt"][1])]
               if "interrupt" in ref else []))
  if b == "fdb_v1_5":
    return [("metadata.json timestamps end", ref["overlap"][1])]
  if b in ("timespeak", "cuespeak"):
    return ([("task.json instruction_time end", ref["instruction_time"][1])]
            + [(f"task.json targets[{i}].window start", t["window"][0])
               for i, t in enumerate(ref["targets"])])
  if b == "delegation":
    return [("task.json delegate_window start", ref["delegate_window"][0]),
            ("task.json answer_window start", ref["answer_window"][0])]
  return []


def _audio_sample(sample: Sample, errors: list, key: str):
  """Checks an audio sample's media and reference times; the sample, or None
  (and a SampleError) when its reference cannot be answered."""
  _check_audio(sample)
  try:
    _check_within_audio(sample, _reference_points(sample))
  except ValueError as e:
    errors.append(SampleError(key, sample.benchmark, str(e)))
    return None
  return sample


# --------------------------------------------------------------------------- #
# Full-Duplex-Bench v1


def _fdb_v1_task(task_dir: str, sample_dir: str) -> str:
  for fname, task in FDB_V1_TASK_FILES.items():
    if os.path.exists(os.path.join(sample_dir, fname)):
      return task
  if "backchannel" in task_dir:
    return "backchannel"
  for fname, task in FDB_V1_TASK_FILES.items():
    if task in task_dir or task_dir.endswith(fname.split(".")[0]):
      return task  # the task file is missing: reported by the parser below
  raise ValueError(f"no task file ({', '.join(FDB_V1_TASK_FILES)}) and the folder "
                   f"{task_dir!r} does not name a known task")


def _parse_fdb_v1(task: str, d: str) -> dict:
  ref: dict = {}
  if task == "pause_handling":
    data = _read_json(os.path.join(d, "pause.json"))
    ref["pause"] = [_interval(x["timestamp"], "pause.json timestamp") for x in data]
  elif task == "turn_taking":
    data = _read_json(os.path.join(d, "turn_taking.json"))
    if not isinstance(data, list) or not data:
      raise ValueError("turn_taking.json must be a non-empty list")
    ref["turn"] = [_interval(x["timestamp"], "turn_taking.json timestamp") for x in data]
  elif task == "user_interruption":
    data = _read_json(os.path.join(d, "interrupt.json"))
    if not isinstance(data, list) or not data:
      raise ValueError("interrupt.json must be a non-empty list")
    first = data[0]
    for k in ("context", "interrupt", "timestamp"):
      if k not in first:
        raise ValueError(f"interrupt.json[0] lacks field {k!r}")
    ref["interrupt"] = _interval(first["timestamp"], "interrupt.json timestamp")
    ref["context_text"] = str(first["context"])
    ref["interrupt_text"] = str(first["interrupt"])
  tpath = os.path.join(d, "transcription.json")
  if os.path.exists(tpath):
    ref["transcription"] = _read_json(tpath)
  return ref


def load_fdb_v1(root: str) -> LoadResult:
  samples, errors = [], []
  for task_dir, d in _sample_dirs(root):
    sid = os.path.basename(d)
    try:
      task = _fdb_v1_task(task_dir, d)
      ref = _parse_fdb_v1(task, d)
    except (ValueError, KeyError, TypeError) as e:
      msg = f"field {e} missing" if isinstance(e, KeyError) else str(e)
      errors.append(SampleError(f"{task_dir}/{sid}", "fdb_v1", msg))
      continue
    s = Sample(sid, "fdb_v1", task, d, ref, audio_path=os.path.join(d, "input.wav"),
               group=task_dir)
    if _audio_sample(s, errors, f"{task_dir}/{sid}"):
      samples.append(s)
  return LoadResult(samples, errors, _read_manifest(root))


# --------------------------------------------------------------------------- #
# Full-Duplex-Bench v1.5


def load_fdb_v1_5(root: str) -> LoadResult:
  samples, errors = [], []
  for task, d in _sample_dirs(root):
    sid = os.path.basename(d)
    try:
      meta = _read_json(os.path.join(d, "metadata.json"))
      if not isinstance(meta, dict):
        raise ValueError("metadata.json must be an object")
      ref = {"overlap": _interval(meta.get("timestamps"), "metadata.json timestamps"),
             "context_text": str(meta.get("context_text", "")),
             "current_turn_text": str(meta.get("current_turn_text", ""))}
    except ValueError as e:
      errors.append(SampleError(f"{task}/{sid}", "fdb_v1_5", str(e)))
      continue
    clean = os.path.join(d, "clean_input.wav")
    ref["clean_input"] = clean if os.path.exists(clean) else None
    s = Sample(sid, "fdb_v1_5", task, d, ref, audio_path=os.path.join(d, "input.wav"))
    if _audio_sample(s, errors, f"{task}/{sid}"):
      samples.append(s)
  return LoadResult(samples, errors, _read_manifest(root))


# --------------------------------------------------------------------------- #
# ProactiveVideoQA


def _proactive_record(rec, task: str, task_root: str) -> Sample:
  if not isinstance(rec, dict):
    raise ValueError("record must be an object")
  for k in ("video", "question_id", "conversation", "answer"):
    if k not in rec:
      raise ValueError(f"record lacks field {k!r}")
  conv = rec["conversation"]
  if not isinstance(conv, list) or not conv:
    raise ValueError("conversation must be a non-empty list")
  answers = rec["answer"]
  if not isinstance(answers, list) or not answers:
    raise ValueError("answer must be a non-empty list")
  turns = []
  for i, a in enumerate(answers):
    turns.append({"content": str(a["content"]),
                  "reply_timespan": _interval(a["reply_timespan"], f"answer[{i}].reply_timespan"),
                  "related_timespan": _interval(a.get("related_timespan", a["reply_timespan"]),
                                                f"answer[{i}].related_timespan")})
  user_text = [(float(c.get("time", 0.0)), str(c["content"])) for c in conv
               if c.get("role", "user") == "user" and c.get("content")]
  stem = os.path.splitext(str(rec["video"]))[0]
  video = os.path.join(task_root, "videos", stem + ".npz")
  s = Sample(str(rec["question_id"]), "proactive_videoqa", task, task_root,
             {"answer": turns, "question": str(conv[0]["content"])},
             video_path=video, user_text=user_text, question=str(conv[0]["content"]),
             duration_hint=float(rec.get("duration", 0.0)) or None)
  if not os.path.exists(video):
    s.media_error = (f"video {stem}.npz not found (only .npz frame files can be replayed; "
                     "convert mp4 first)")
    s.video_path = None
  return s


def load_proactive_videoqa(root: str) -> LoadResult:
  samples, errors = [], []
  if os.path.exists(os.path.join(root, "anno.json")):
    tasks = [(os.path.basename(os.path.normpath(root)), root)]
  elif os.path.isdir(root):
    tasks = [(t, os.path.join(root, t)) for t in _subdirs(root)
             if os.path.exists(os.path.join(root, t, "anno.json"))]
  else:
    raise ValueError(f"benchmark folder not found: {root}")
  for task, task_root in tasks:
    try:
      records = _read_json(os.path.join(task_root, "anno.json"))
      if not isinstance(records, list):
        raise ValueError("anno.json must be a list of records")
    except ValueError as e:
      errors.append(SampleError(task, "proactive_videoqa", str(e)))
      continue
    for i, rec in enumerate(records):
      try:
        samples.append(_proactive_record(rec, task, task_root))
      except (ValueError, KeyError, TypeError) as e:
        qid = rec.get("question_id", f"record{i}") if isinstance(rec, dict) else f"record{i}"
        errors.append(SampleError(f"{task}/{qid}", "proactive_videoqa",
                                  f"anno.json record {i}: {e}"))
  return LoadResult(samples, errors, _read_manifest(root))


# --------------------------------------------------------------------------- #
# RepCount-A


def load_repcount(root: str, csv_name: str = "test.csv") -> LoadResult:
  """RepCount-A CSV: `,type,name,count,L1,L2,...`; the CSV `count` is the truth.

  L values are frame indices read as (start, end) pairs per repetition. The
  TransRAC density-map gt can differ from `count` (TransRAC issue #27); we
  score against `count`, as the notes recommend.
  """
  path = root if root.endswith(".csv") else os.path.join(root, csv_name)
  base = os.path.dirname(path)
  if not os.path.exists(path):
    raise ValueError(f"RepCount CSV not found: {path}")
  samples, errors = [], []
  with open(path, newline="") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if not header or "name" not in header or "count" not in header:
      raise ValueError(f"{path}: header must contain 'name' and 'count', got {header}")
    i_name, i_count = header.index("name"), header.index("count")
    l_cols = [i for i, h in enumerate(header) if h.startswith("L") and h[1:].isdigit()]
    i_type = header.index("type") if "type" in header else None
    for lineno, row in enumerate(reader, 2):
      if not any(c.strip() for c in row):
        continue
      name = row[i_name].strip() if len(row) > i_name else ""
      key = os.path.splitext(name)[0] or f"line{lineno}"
      try:
        if not name:
          raise ValueError("empty name")
        count_str = row[i_count].strip() if len(row) > i_count else ""
        try:
          count = int(float(count_str))
        except ValueError:
          raise ValueError(f"count {count_str!r} is not a number") from None
        if count < 0:
          raise ValueError(f"count must be >= 0, got {count}")
        ls = []
        for i in l_cols:
          if i < len(row) and row[i].strip():
            ls.append(int(float(row[i])))
        if len(ls) % 2:
          raise ValueError(f"odd number of L frame indices ({len(ls)})")
        pairs = [(ls[j], ls[j + 1]) for j in range(0, len(ls), 2)]
      except ValueError as e:
        errors.append(SampleError(key, "repcount", f"{os.path.basename(path)} line {lineno}: {e}"))
        continue
      video = os.path.join(base, "videos", key + ".npz")
      s = Sample(key, "repcount", "", base,
                 {"count": count, "cycles": pairs,
                  "type": row[i_type] if i_type is not None and i_type < len(row) else ""},
                 video_path=video,
                 user_text=[(0.0, "Count the repetitions out loud.")])
      if not os.path.exists(video):
        s.media_error = f"video {key}.npz not found"
        s.video_path = None
      samples.append(s)
  return LoadResult(samples, errors, _read_manifest(base))


# --------------------------------------------------------------------------- #
# Charades-STA


def load_charades(root: str, txt_name: str = "charades_sta_test.txt") -> LoadResult:
  """Lines `VID start end##sentence`; sample id is `VID_L<line>` (one per query)."""
  path = root if root.endswith(".txt") else os.path.join(root, txt_name)
  base = os.path.dirname(path)
  if not os.path.exists(path):
    raise ValueError(f"Charades-STA file not found: {path}")
  samples, errors = [], []
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      head, sep, sentence = line.partition("##")
      parts = head.split()
      key = f"{parts[0]}_L{lineno}" if parts else f"line{lineno}"
      try:
        if not sep or len(parts) != 3:
          raise ValueError("expected 'VID start end##sentence'")
        start, end = _interval([float(parts[1]), float(parts[2])], "segment")
      except ValueError as e:
        errors.append(SampleError(key, "charades", f"line {lineno}: {e}"))
        continue
      vid = parts[0]
      video = os.path.join(base, "videos", vid + ".npz")
      s = Sample(key, "charades", "", base,
                 {"segment": (start, end), "sentence": sentence.strip(), "video": vid},
                 video_path=video, question=sentence.strip(),
                 user_text=[(0.0, f'Say "start" when this begins and "stop" when it ends: '
                                  f'{sentence.strip()}')])
      if not os.path.exists(video):
        s.media_error = f"video {vid}.npz not found"
        s.video_path = None
      samples.append(s)
  return LoadResult(samples, errors, _read_manifest(base))


# --------------------------------------------------------------------------- #
# TimeSpeak / CueSpeak (our format)


def _parse_task_json(task: dict, family: str) -> dict:
  if not isinstance(task, dict):
    raise ValueError("task.json must be an object")
  for k in ("instruction", "instruction_mode", "instruction_time", "targets"):
    if k not in task:
      raise ValueError(f"task.json lacks field {k!r}")
  if task.get("family", family) != family:
    raise ValueError(f"task.json family {task.get('family')!r} != suite {family!r}")
  if task["instruction_mode"] not in ("text", "speech"):
    raise ValueError(f"instruction_mode must be 'text' or 'speech', got "
                     f"{task['instruction_mode']!r}")
  targets = task["targets"]
  if not isinstance(targets, list) or not targets:
    raise ValueError("targets must be a non-empty list")
  parsed = []
  for i, t in enumerate(targets):
    if not isinstance(t, dict) or "text" not in t or "window" not in t:
      raise ValueError(f"targets[{i}] needs 'text' and 'window'")
    parsed.append({"text": str(t["text"]), "window": _interval(t["window"], f"targets[{i}].window")})
  return {"instruction": str(task["instruction"]), "instruction_mode": task["instruction_mode"],
          "instruction_time": _interval(task["instruction_time"], "instruction_time"),
          "cue_word": task.get("cue_word"), "targets": parsed,
          "duration": task.get("duration")}


def _load_task_suite(root: str, family: str) -> LoadResult:
  if not os.path.isdir(root):
    raise ValueError(f"benchmark folder not found: {root}")
  samples, errors = [], []
  for sid in _subdirs(root):
    d = os.path.join(root, sid)
    try:
      ref = _parse_task_json(_read_json(os.path.join(d, "task.json")), family)
    except ValueError as e:
      errors.append(SampleError(sid, family, str(e)))
      continue
    user_text = []
    if ref["instruction_mode"] == "text":
      user_text = [(ref["instruction_time"][0], ref["instruction"])]
    s = Sample(sid, family, "", d, ref, audio_path=os.path.join(d, "input.wav"),
               user_text=user_text, question=ref["instruction"])
    if _audio_sample(s, errors, sid):
      samples.append(s)
  return LoadResult(samples, errors, _read_manifest(root))


def load_timespeak(root: str) -> LoadResult:
  return _load_task_suite(root, "timespeak")


def load_cuespeak(root: str) -> LoadResult:
  return _load_task_suite(root, "cuespeak")


# --------------------------------------------------------------------------- #
# Delegation (our format)


def _time(value, what: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) \
      or not math.isfinite(float(value)) or value < 0:
    raise ValueError(f"{what} must be a time >= 0 in seconds, got {value!r}")
  return float(value)


def _parse_delegation(task: dict) -> dict:
  """task.json: {"id", "family": "delegation", "question", "question_end",
  "delegate_window": [t0, t1], "background": [[t, text], ...], "answer",
  "answer_window": [t0, t1], "duration"}."""
  if not isinstance(task, dict):
    raise ValueError("task.json must be an object")
  for k in ("question", "question_end", "delegate_window", "background", "answer",
            "answer_window", "duration"):
    if k not in task:
      raise ValueError(f"task.json lacks field {k!r}")
  if task.get("family", "delegation") != "delegation":
    raise ValueError(f"task.json family {task.get('family')!r} != suite 'delegation'")
  for k in ("question", "answer"):
    if not isinstance(task[k], str) or not task[k].strip():
      raise ValueError(f"task.json {k} must be a non-empty string")
  bg = task["background"]
  if not isinstance(bg, list):
    raise ValueError("task.json background must be a list of [time, text]")
  background = []
  for i, item in enumerate(bg):
    if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[1], str):
      raise ValueError(f"task.json background[{i}] must be [time, text], got {item!r}")
    background.append((_time(item[0], f"background[{i}] time"), item[1]))
  duration = _time(task["duration"], "duration")
  if duration <= 0:
    raise ValueError("task.json duration must be > 0")
  return {"question": task["question"], "question_end": _time(task["question_end"], "question_end"),
          "delegate_window": _interval(task["delegate_window"], "delegate_window"),
          "background": background, "answer": task["answer"],
          "answer_window": _interval(task["answer_window"], "answer_window"),
          "duration": duration}


def load_delegation(root: str) -> LoadResult:
  """`delegation/<id>/{input.wav,task.json}`: the user's spoken question; the
  agent must emit `<delegate>` inside `delegate_window` (not before the
  question ends), gets the tool result on its background text stream at the
  `background` times, and must say the answer inside `answer_window`. The
  replay lasts `duration` (a shorter input.wav is padded with silence)."""
  if not os.path.isdir(root):
    raise ValueError(f"benchmark folder not found: {root}")
  samples, errors = [], []
  for sid in _subdirs(root):
    d = os.path.join(root, sid)
    try:
      ref = _parse_delegation(_read_json(os.path.join(d, "task.json")))
    except ValueError as e:
      errors.append(SampleError(sid, "delegation", str(e)))
      continue
    s = Sample(sid, "delegation", "", d, ref, audio_path=os.path.join(d, "input.wav"),
               background_text=list(ref["background"]), question=ref["question"],
               min_duration=ref["duration"])
    _check_audio(s)
    if not s.media_error:
      wav_s = audio_io.wav_duration(s.audio_path)
      if ref["question_end"] > wav_s + _END_SLACK_S:
        errors.append(SampleError(sid, "delegation",
                                  f"reference task.json question_end {ref['question_end']:g} s "
                                  f"lies past the end of input.wav ({wav_s:.2f} s): "
                                  "truncated input?"))
        continue
    if _audio_sample(s, errors, sid):
      samples.append(s)
  return LoadResult(samples, errors, _read_manifest(root))


LOADERS = {"fdb_v1": load_fdb_v1, "fdb_v1_5": load_fdb_v1_5,
           "proactive_videoqa": load_proactive_videoqa, "repcount": load_repcount,
           "charades": load_charades, "timespeak": load_timespeak,
           "cuespeak": load_cuespeak, "delegation": load_delegation}


def load(benchmark: str, root: str) -> LoadResult:
  """Loads one benchmark; raises ValueError only when the root itself is unusable
  (missing, or holding no sample at all: never an empty score)."""
  if benchmark not in LOADERS:
    raise ValueError(f"unknown benchmark {benchmark!r}; known: {sorted(LOADERS)}")
  res = LOADERS[benchmark](root)
  if not res.samples and not res.errors:
    raise ValueError(f"{benchmark} folder {root} holds no samples (expected the layout "
                     f"in WORKSPACE.md, section eval)")
  return res


def _fdb_kind(task_dir: str):
  """'fdb_v1' / 'fdb_v1_5' when `task_dir` is an FD-bench task folder, else None."""
  kinds = set()
  for s in _subdirs(task_dir):
    d = os.path.join(task_dir, s)
    if any(os.path.exists(os.path.join(d, f)) for f in FDB_V1_TASK_FILES):
      kinds.add("fdb_v1")
    elif os.path.exists(os.path.join(d, "metadata.json")):
      kinds.add("fdb_v1_5")
    elif "backchannel" in os.path.basename(task_dir) and _is_sample_dir(d):
      kinds.add("fdb_v1")  # icc_backchannel samples have no task file
  return kinds.pop() if len(kinds) == 1 else None


def discover(suite_root: str) -> dict[str, str]:
  """Benchmark name -> folder for every known benchmark folder under a suite.

  A suite is a folder of benchmark folders (`SUITE/fdb_v1/...`), or one
  FD-bench release as published, its task folders directly under it
  (`DIR/candor_turn_taking/<id>/...`): that folder is then the benchmark.
  """
  found = {}
  for b in LOADERS:
    p = os.path.join(suite_root, b)
    if os.path.isdir(p):
      found[b] = p
  if found or not os.path.isdir(suite_root):
    return found
  kinds = {_fdb_kind(os.path.join(suite_root, t)) for t in _subdirs(suite_root)} - {None}
  if len(kinds) == 1:
    found[kinds.pop()] = suite_root
  return found


__all__ = ["load", "discover", "LOADERS", "audio_io"]
