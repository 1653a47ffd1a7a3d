"""Text events (`events.jsonl`), and the words and utterances scorers read from them.

An event is `{"t_start", "t_end", "text", "stream"}` in seconds on the sample's
clock. Agents may emit one event per word or per phrase; scorers that need
words split phrases and spread the phrase's time over its words in proportion
to their length (`data_pipeline.words`, the rule the TTS placeholder uses too).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

from data_pipeline import words as words_lib

# The stream whose events are the model's spoken words; other streams (e.g.
# 'control' for <delegate>) are kept in events.jsonl but never scored.
SPOKEN = "model_text"
# The stream of control-token events (`<delegate>`, `<cancel>`).
CONTROL = "control"


@dataclasses.dataclass(frozen=True)
class TextEvent:
  t_start: float
  t_end: float
  text: str
  stream: str = SPOKEN

  def to_json(self) -> dict:
    return {"t_start": round(self.t_start, 4), "t_end": round(self.t_end, 4),
            "text": self.text, "stream": self.stream}

  @classmethod
  def from_json(cls, obj) -> "TextEvent":
    if not isinstance(obj, dict):
      raise ValueError(f"event must be a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("t_start", "t_end", "text") if k not in obj]
    if missing:
      raise ValueError(f"event is missing field(s) {missing}: {obj}")
    try:
      t0, t1 = float(obj["t_start"]), float(obj["t_end"])
    except (TypeError, ValueError):
      raise ValueError(f"event times must be numbers: {obj}") from None
    if not (math.isfinite(t0) and math.isfinite(t1)) or t1 < t0:
      raise ValueError(f"event has bad times (t_start={t0}, t_end={t1}): {obj}")
    if not isinstance(obj["text"], str):
      raise ValueError(f"event text must be a string: {obj}")
    return cls(t0, t1, obj["text"], str(obj.get("stream", SPOKEN)))


def write_events(path: str, events) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    for e in events:
      f.write(json.dumps(e.to_json()) + "\n")
  os.replace(tmp, path)


def jsonl_lines(path: str):
  """(line number, line) for every non-blank line of a JSON-lines file."""
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      if line.strip():
        yield lineno, line


def read_events(path: str) -> list[TextEvent]:
  """Reads events.jsonl; raises ValueError naming the file and line on bad rows."""
  if not os.path.exists(path):
    raise ValueError(f"events file not found: {path}")
  events = []
  for lineno, line in jsonl_lines(path):
    try:
      events.append(TextEvent.from_json(json.loads(line)))
    except (json.JSONDecodeError, ValueError) as e:
      raise ValueError(f"{path}:{lineno}: {e}") from None
  return events


@dataclasses.dataclass(frozen=True)
class Word:
  t_start: float
  t_end: float
  text: str


def split_words(events, stream: str = SPOKEN) -> list[Word]:
  """Spoken words in time order; a phrase's span is shared by character count."""
  words = []
  for e in events:
    if e.stream != stream:
      continue
    parts = [w for _, _, w in words_lib.split(e.text)]
    words.extend(Word(t0, t1, w) for t0, t1, w in words_lib.spread(parts, e.t_start, e.t_end))
  words.sort(key=lambda w: w.t_start)
  return words


@dataclasses.dataclass(frozen=True)
class Utterance:
  t_start: float
  t_end: float
  text: str


def utterances(events, max_gap: float = 0.3, stream: str = SPOKEN) -> list[Utterance]:
  """Groups spoken events separated by at most `max_gap` seconds into utterances."""
  spoken = sorted((e for e in events if e.stream == stream and e.text.strip()),
                  key=lambda e: e.t_start)
  out: list[Utterance] = []
  for e in spoken:
    if out and e.t_start - out[-1].t_end <= max_gap:
      u = out[-1]
      out[-1] = Utterance(u.t_start, max(u.t_end, e.t_end), u.text + " " + e.text.strip())
    else:
      out.append(Utterance(e.t_start, e.t_end, e.text.strip()))
  return out
