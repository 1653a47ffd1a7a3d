"""Scoring what the listener hears: Silero VAD (ONNX, no torch), the PocketSphinx
recogniser, word error rates, and the audio vs events timing sources."""

import json
import os

import numpy as np
import pytest

from eval import asr, vad
from eval.events import TextEvent
from eval.score import score_benchmark, score_both
from tests.eval import fixtures


def test_silero_runs_from_the_installed_package_without_torch():
  import sys
  assert os.path.exists(os.path.join(vad.silero_model_dir(), "silero_vad.onnx"))
  vad.silero_probabilities(np.zeros(1600, np.float32))
  # The package is located, never imported: its __init__ imports torch.
  assert "silero_vad" not in sys.modules


def test_silero_fast_path_and_stream_equal_the_frame_by_frame_model():
  rng = np.random.default_rng(0)
  x = fixtures.user_audio(3.0, [(0.5, 1.7)]) + (0.01 * rng.standard_normal(48000)).astype(np.float32)
  ref = vad.silero_probabilities(x, stream=True)  # the package's OnnxWrapper loop
  assert len(ref) == -(-len(x) // 512)
  np.testing.assert_allclose(vad.silero_probabilities(x), ref, atol=1e-5)
  s = vad.SileroStream()
  fed = np.concatenate([s.feed(x[i:i + 3200]) for i in range(0, len(x), 3200)])
  np.testing.assert_allclose(fed, ref[:len(fed)], atol=1e-5)
  assert len(fed) == len(x) // 512


def test_silero_post_processing_hand_computed():
  p = np.zeros(40)
  p[5:15] = 0.9     # speech frames 5..14 (512 samples each)
  p[15:17] = 0.2    # < neg_threshold 0.35 for 2 frames = 1024 samples < 1600 (100 ms): bridged
  p[17:25] = 0.9
  p[30:33] = 0.9    # 3 frames = 1536 samples < 4000 (250 ms): dropped
  spans = vad.timestamps_from_probs(p, 40 * 512)
  # start 5*512 - 480 pad; end at the first quiet frame (25*512) + 480 pad
  assert spans == [(5 * 512 - 480, 25 * 512 + 480)]


def _spoken(text, at=1.0, seconds=4.0):
  from data_pipeline import tts
  sp = tts.synthesize(text, sample_rate=16000, level=0.6, voice="en-us", rate=175)
  x = np.zeros(int(seconds * 16000), np.float32)
  a = int(at * 16000)
  x[a:a + len(sp.wave)] = sp.wave
  return x, sp.duration


def test_speech_segments_find_the_speech_with_either_vad():
  x, dur = _spoken("could you tell me how to get to the station")
  for kind in ("silero", "webrtc"):
    segs = vad.speech_segments(x, vad=kind)
    assert len(segs) == 1, (kind, segs)
    assert segs[0][0] == pytest.approx(1.0, abs=0.15), (kind, segs)
    assert segs[0][1] == pytest.approx(1.0 + dur, abs=0.15), (kind, segs)
  assert vad.speech_segments(np.zeros(32000, np.float32)) == []
  with pytest.raises(ValueError, match="vad must be one of"):
    vad.speech_segments(x, vad="words")


@pytest.mark.parametrize("ref, hyp, wer", [
    ("the cat sat", "the cat sat", 0.0),
    ("the cat sat", "the bat sat", 1 / 3),        # substitution
    ("the cat sat", "the cat", 1 / 3),            # deletion
    ("the cat sat", "the cat sat down", 1 / 3),   # insertion
    ("Forty-two apples!", "42 apples", 0.0),      # normalised tokens
    ("", "", 0.0), ("", "hello", 1.0),
])
def test_word_error_rate_hand_computed(ref, hyp, wer):
  assert asr.word_error_rate(ref, hyp) == pytest.approx(wer)


def test_transcribe_gives_timed_words_of_speech_and_none_of_noise_or_silence():
  text = "could you tell me how to get to the station"
  x, dur = _spoken(text)
  words = asr.transcribe(x)
  assert words and all(t0 < t1 for t0, t1, _ in words)
  assert words[0][0] == pytest.approx(1.0, abs=0.1)                 # speech starts at 1 s
  assert words[-1][1] == pytest.approx(1.0 + dur, abs=0.15)
  assert asr.word_error_rate(text, " ".join(w for _, _, w in words)) < 0.7
  assert asr.transcribe(np.zeros(32000, np.float32)) == []
  noise = (0.3 * np.random.default_rng(0).standard_normal(48000)).astype(np.float32)
  assert asr.transcribe(noise) == []  # gated on the VAD: noise is not speech
  with pytest.raises(ValueError, match="NaN"):
    asr.transcribe(np.full(1600, np.nan, np.float32))


def _claims_words_in_silence(root, pred):
  """A turn-taking prediction whose text answers at 2.1 s while output.wav is silent."""
  d = os.path.join(pred, "turn_taking", "t0")
  os.makedirs(d)
  fixtures.write_wav(os.path.join(d, "output.wav"), np.zeros(5 * 16000, np.float32))
  with open(os.path.join(d, "events.jsonl"), "w") as f:
    for i, w in enumerate("well that really depends on the weather".split()):
      f.write(json.dumps(TextEvent(2.1 + 0.3 * i, 2.35 + 0.3 * i, w).to_json()) + "\n")


def test_text_that_speaks_over_silent_audio_scores_only_under_events(tmp_path):
  refs = fixtures.make_fdb_v1(str(tmp_path / "refs"))
  pred = str(tmp_path / "pred")
  _claims_words_in_silence(refs, pred)
  loaded_refs = os.path.join(refs)
  ev = score_benchmark("fdb_v1", loaded_refs, pred, timing="events")
  au = score_benchmark("fdb_v1", loaded_refs, pred)  # FD-bench default: audio
  assert au.timing == "audio" and ev.timing == "events"
  assert ev.metrics["turn_taking/TOR"] == 1 and ev.metrics["turn_taking/latency_s"] == pytest.approx(0.3)
  assert au.metrics["turn_taking/TOR"] == 0 and au.metrics["turn_taking/latency_s"] is None
  both = score_both("fdb_v1", loaded_refs, pred)
  assert both["metrics"] == au.metrics and both["by_timing"]["events"] == ev.metrics
  (d,) = both["disagreements"]
  assert d["key"] == "turn_taking/t0" and d["differs"]["TOR"] == [0, 1]
  assert "where the audio has no speech" in d["what"]
  assert both["speech"]["turn_taking/t0"]["text_only_s"] > 1.5


def test_audio_timing_needs_output_wav(tmp_path):
  refs = fixtures.make_timespeak(str(tmp_path / "refs"))
  pred = tmp_path / "pred"
  for sid in ("ts0", "ts1"):
    (pred / sid).mkdir(parents=True)
    (pred / sid / "events.jsonl").write_text(json.dumps(TextEvent(2.7, 3.0, "banana").to_json()))
  res = score_benchmark("timespeak", refs, str(pred), timing="audio")
  assert res.metrics["n"] == 0 and len(res.errors) == 2
  assert all("needs output.wav" in e["error"] for e in res.errors)
  assert score_benchmark("timespeak", refs, str(pred)).metrics["n"] == 2  # default: events
  with pytest.raises(ValueError, match="timing must be one of"):
    score_benchmark("timespeak", refs, str(pred), timing="words")
