"""Words of a phrase, and a phrase's time shared among them.

The one definition of "a word" for every timed text stream: the generators'
word-timed model text (through `tts`), the eval harness's placeholder speech
and the scorers that split an agent's phrase events into words. A word is a
whitespace-separated token with the punctuation around it dropped ("Sure," ->
"Sure"), so the text the model is trained to say and the text it is scored on
cut phrases the same way. Control tokens such as "<delegate>" stay whole.
"""

from __future__ import annotations

import re

# Sentence punctuation is not spoken: it belongs to no word.
_PUNCTUATION = " ,.?!;:\"()[]"


def split(text: str) -> list[tuple[int, int, str]]:
  """[(start, end, word)]: each word and its character span in `text`."""
  out = []
  for m in re.finditer(r"\S+", text):
    token = m.group()
    word = token.strip(_PUNCTUATION)
    if word:
      start = m.start() + len(token) - len(token.lstrip(_PUNCTUATION))
      out.append((start, start + len(word), word))
  return out


def spread(words: list[str], t0: float, t1: float) -> list[tuple[float, float, str]]:
  """[(start, end, word)] tiling [t0, t1], each word's share its length + 1.

  The timing when no synthesizer says where words start (an agent's phrase
  event, placeholder speech): longer words take longer, and the +1 stands
  for the gap between words.
  """
  weights = [len(w) + 1 for w in words]
  total = sum(weights)
  out, t = [], t0
  for w, k in zip(words, weights):
    dt = (t1 - t0) * k / total
    out.append((t, t + dt, w))
    t += dt
  return out
