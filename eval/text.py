"""Text normalisation shared by the judges and the scorers."""

from __future__ import annotations

import re

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve "
          "thirteen fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUE = {w: i for i, w in enumerate(_UNITS)}
_WORD_VALUE.update({w: 20 + 10 * i for i, w in enumerate(_TENS)})

STOPWORDS = frozenset(
    "a an the is are was were be been to of and or in on at for with it this that "
    "i you he she we they me my your our please can could would will do does did "
    "so um uh just".split())


def number_to_words(n: int) -> str:
  """English words for 0 <= n < 1000 (what the TTS should say for a count)."""
  if n < 0 or n >= 1000:
    return str(n)
  if n < 20:
    return _UNITS[n]
  if n < 100:
    tens, unit = divmod(n, 10)
    return _TENS[tens - 2] + ("" if unit == 0 else " " + _UNITS[unit])
  hundreds, rest = divmod(n, 100)
  return _UNITS[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))


def tokens(text: str) -> list[str]:
  """Lower-case word tokens, punctuation dropped, number words turned into digits.

  "Twenty-one apples." -> ["21", "apples"].
  """
  text = text.lower().replace("-", " ")
  words = re.findall(r"[a-z0-9']+", text)
  out: list[str] = []
  i = 0
  while i < len(words):
    w = words[i].strip("'")
    if w in _WORD_VALUE:
      value = _WORD_VALUE[w]
      j = i + 1
      if value >= 20 and value % 10 == 0 and j < len(words) and words[j] in _WORD_VALUE \
          and _WORD_VALUE[words[j]] < 10:
        value += _WORD_VALUE[words[j]]
        j += 1
      if j < len(words) and words[j] == "hundred":
        value *= 100
        j += 1
        if j < len(words) and words[j] == "and":
          j += 1
        if j < len(words) and words[j] in _WORD_VALUE and _WORD_VALUE[words[j]] < 100:
          value += _WORD_VALUE[words[j]]
          j += 1
      out.append(str(value))
      i = j
      continue
    if w:
      out.append(w)
    i += 1
  return out


def normalize(text: str) -> str:
  return " ".join(tokens(text))


def content_tokens(text: str) -> list[str]:
  return [t for t in tokens(text) if t not in STOPWORDS]


def contains_phrase(haystack: list[str], needle: list[str]) -> bool:
  """True when `needle` occurs as a contiguous token run inside `haystack`."""
  if not needle:
    return False
  n = len(needle)
  return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def numbers_in(text: str) -> list[int]:
  return [int(t) for t in tokens(text) if t.isdigit()]
