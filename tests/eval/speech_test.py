"""The scripted agents' TTS: espeak through data_pipeline.tts, or the placeholder."""

import numpy as np
import pytest

from eval.agents import speech
from eval.agents.base import SAMPLE_RATE


@pytest.mark.parametrize("backend", ["espeak", "placeholder"])
def test_synthesize_gives_the_texts_words_tiling_the_audio(backend):
  tts = speech.TTS(backend)
  assert tts.backend == backend
  audio, spans = tts.synthesize("Sure, the answer is 42.")
  assert audio.dtype == np.float32 and len(audio) > SAMPLE_RATE // 2
  assert [w for _, _, w in spans] == ["Sure", "the", "answer", "is", "42"]
  assert spans[0][0] == 0.0
  assert all(a[1] == pytest.approx(b[0]) for a, b in zip(spans, spans[1:]))
  assert spans[-1][1] == pytest.approx(len(audio) / SAMPLE_RATE, abs=1e-3)
  audio, spans = tts.synthesize("  ")
  assert len(audio) == 0 and spans == []


def test_espeak_timings_are_espeaks_not_the_placeholders():
  # "42" is spoken "forty two": over a third of the phrase in espeak's timing,
  # an eighth by character count.
  text = "Sure, the answer is 42."
  _, real = speech.TTS("espeak").synthesize(text)
  _, by_length = speech.TTS("placeholder").synthesize(text)
  share = lambda spans: (spans[-1][1] - spans[-1][0]) / spans[-1][1]
  assert share(real) > 0.3 > 0.15 > share(by_length)


def test_auto_falls_back_to_the_placeholder_without_espeak(monkeypatch):
  monkeypatch.setattr(speech, "espeak_available", lambda: False)
  assert speech.TTS("auto").backend == "placeholder"
  with pytest.raises(ValueError, match="apt-get install espeak-ng"):
    speech.TTS("espeak")
  with pytest.raises(ValueError, match="auto|espeak|placeholder"):
    speech.TTS("festival")
