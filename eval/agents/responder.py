"""The cascade's turn-based "LLM": rule-based replies to a finished user turn.

It stands in for ASR -> LLM of a commercial cascade. ASR is assumed perfect:
the turn's words come from the sample's reference transcript (task.json
instruction, FD-bench interrupt/transcription text, typed text). This favours
the cascade; its limits in the report are structural (timing), not
recognition errors. It answers what can be answered the moment the turn ends
(arithmetic, "say/repeat X" with no timing condition); anything that needs
acting later, on a cue, or on something seen gets an acknowledgement, because
a turn-based stack cannot speak unprompted afterwards.
"""

from __future__ import annotations

import re

from eval import text as text_lib

_DEFERRED = re.compile(
    r"\b(in \w+ seconds?|after|when(ever)?|once|every|each time|later|until|at the|"
    r"start|stop|count|hear|see)\b", re.I)
_ARITH = re.compile(r"what(?:'s| is)\s+(\d+)\s*(plus|\+|minus|-|times|x|\*)\s*(\d+)", re.I)
_SAY = re.compile(r"^\s*(?:please\s+)?(?:say|repeat(?: after me)?)[:,]?\s+(.+?)[.!]?\s*$", re.I)


def _overlaps(a0, a1, b0, b1, slack=0.5):
  return a0 < b1 + slack and b0 < a1 + slack


def turn_transcript(sample, t0: float, t1: float) -> str:
  """Reference words the user said in [t0, t1] (perfect-ASR stand-in)."""
  ref = sample.reference
  if sample.benchmark in ("timespeak", "cuespeak") and ref.get("instruction_mode") == "speech":
    i0, i1 = ref["instruction_time"]
    return ref["instruction"] if _overlaps(t0, t1, i0, i1) else ""
  if sample.benchmark == "fdb_v1":
    if "interrupt" in ref:
      i0, i1 = ref["interrupt"]
      return ref["interrupt_text"] if _overlaps(t0, t1, i0, i1) else ref["context_text"]
    words = []
    for spk in ref.get("transcription") or []:
      for item in spk.get("item", []) if isinstance(spk, dict) else []:
        ts = item.get("timestamp") or [None, None]
        if ts[0] is not None and t0 - 0.5 <= ts[0] <= t1 + 0.5:
          words.append(str(item.get("text", "")))
    return " ".join(words)
  if sample.benchmark == "delegation":
    return ref["question"] if _overlaps(t0, t1, 0.0, ref["question_end"]) else ""
  if sample.benchmark == "fdb_v1_5":
    o0, o1 = ref["overlap"]
    return ref["current_turn_text"] if _overlaps(t0, t1, o0, o1) else ref["context_text"]
  return ""


class ScriptedResponder:
  name = "scripted-rules"

  def reply(self, turn_text: str) -> str:
    text = turn_text.strip()
    m = _ARITH.search(text)
    if m:
      a, op, b = int(m.group(1)), m.group(2).lower(), int(m.group(3))
      value = {"plus": a + b, "+": a + b, "minus": a - b, "-": a - b}.get(op, a * b)
      return f"The answer is {text_lib.number_to_words(value) if value >= 0 else value}."
    if not text:
      return "Okay, I see. Tell me more."
    if _DEFERRED.search(text):
      return "Okay, I will do that."
    m = _SAY.match(text)
    if m:
      return m.group(1)
    return "Okay, I see what you mean. Let me think about that."
