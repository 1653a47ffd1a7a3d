"""One definition of a word: the text's words, with espeak's timings."""

import pytest

from data_pipeline import tts, words


def test_split_drops_sentence_punctuation_and_keeps_offsets():
  text = '  "Sure," let me -5 <delegate> ... twenty-one.'
  got = words.split(text)
  assert [w for _, _, w in got] == ["Sure", "let", "me", "-5", "<delegate>", "twenty-one"]
  assert all(text[a:b] == w for a, b, w in got)


def test_spread_tiles_the_span_by_length():
  spans = words.spread(["ab", "c"], 1.0, 2.0)
  assert spans == [(1.0, pytest.approx(1.6), "ab"), (pytest.approx(1.6), pytest.approx(2.0), "c")]
  assert words.spread([], 0.0, 1.0) == []


@pytest.mark.parametrize("text,want", [
    ("what is 34 times 56", ["what", "is", "34", "times", "56"]),
    ("I'm fine, don't worry", ["I'm", "fine", "don't", "worry"]),
    ("twenty-one apples", ["twenty-one", "apples"]),
])
def test_synthesized_words_are_the_texts_words(text, want):
  speech = tts.synthesize(text)
  assert [w["text"] for w in speech.words] == want
  starts = [w["t_start"] for w in speech.words]
  assert starts == sorted(starts) and starts[0] == 0.0
  assert all(w["t_end"] == n["t_start"] for w, n in zip(speech.words, speech.words[1:]))
  assert speech.words[-1]["t_end"] == pytest.approx(speech.duration, abs=1e-4)


def test_espeak_events_alone_would_give_other_words():
  # The companion: espeak reports one WORD event per spoken part of a number
  # and a short length for a contraction, so words read off the events alone
  # would be wrong; the text decides what the words are.
  _, events = tts.engine().synth("what is 34 times 56", "en-us", 160, 50, 50)
  assert len(events) > 5
  text = "don't worry"
  _, events = tts.engine().synth(text, "en-us", 160, 50, 50)
  assert text[events[0][0] - 1:events[0][0] - 1 + events[0][1]] != "don't"
