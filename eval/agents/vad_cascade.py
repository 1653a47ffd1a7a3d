"""The conventional stack: VAD decides the turn end, then a turn-based reply.

The VAD marks frames as speech: `vad="webrtc"` (PyPI `webrtcvad-wheels`, 20 ms
frames, `aggressiveness` 0..3) or `vad="silero"` (Silero VAD's ONNX model,
32 ms frames, speech from `threshold` up and, once in speech, until below
threshold - 0.15, as Silero's own iterator). Both are recurrent: a new VAD
per sample (`reset`), so a sample scores the same alone and after any other
(a webrtcvad kept across samples adapts to the previous file's trailing
digital silence and then hears the next file's quiet noise as speech). A
turn opens after `min_speech_s` of continuous speech and ends after
`end_silence_s` of non-speech; typed text is a turn that ends at once. At a turn end the
responder (`responder.py`) produces a reply which is spoken from the first
output window at or after `turn_end + response_delay_s`. With `barge_in`, user
speech while the agent talks cuts the agent off. It cannot speak unprompted:
no timed speech, no reaction to video, no talking over the user; it never
delegates (no `<delegate>`) and ignores background text (tool results). Its
`capabilities` say so, and the report marks the zeros these cause as
structural.

Defaults (`DEFAULTS`: webrtcvad aggressiveness 1, end of turn after 0.45 s
of silence): tuned on a train-split suite only, never on held-out data, by
`experiments/configs/eval_tune_cascade.py` (grid and result: WORKSPACE.md,
section eval).
"""

from __future__ import annotations

import numpy as np
import webrtcvad

from eval import vad as vad_lib
from eval.agents.base import CHUNK_SAMPLES, SAMPLE_RATE, Agent, OutputChunk
from eval.agents.responder import ScriptedResponder, turn_transcript
from eval.agents.speech import TTS, SpeechPlayer

_FRAME = 320  # 20 ms at 16 kHz, one of webrtcvad's frame sizes
_SILERO_HYSTERESIS = 0.15

# The tuned setting: the best of 25 (webrtcvad aggressiveness 1..3, Silero 0.5 / 0.8,
# end silence 0.3..1.0 s) on a train-split suite, scored from the audio by the
# `turn_taking` objective (experiments/configs/eval_tune_cascade.py): 0.522, vs 0.499
# for the previous default (webrtcvad 2, 0.6 s). Never tuned on held-out data.
DEFAULTS = {"vad": "webrtc", "end_silence_s": 0.45, "aggressiveness": 1, "threshold": 0.5}


class VadCascadeAgent(Agent):
  name = "vad_cascade"
  # It speaks only in reply to a finished user turn: no timed speech, no cue
  # reaction, no vision, no delegation, no tool results.
  capabilities = frozenset({"speech"})

  def __init__(self, end_silence_s: float = DEFAULTS["end_silence_s"],
               aggressiveness: int = DEFAULTS["aggressiveness"],
               min_speech_s: float = 0.1, response_delay_s: float = 0.0,
               barge_in: bool = True, tts_backend: str = "auto",
               vad: str = DEFAULTS["vad"], threshold: float = DEFAULTS["threshold"]):
    if end_silence_s <= 0:
      raise ValueError(f"end_silence_s must be > 0, got {end_silence_s}")
    if aggressiveness not in (0, 1, 2, 3):
      raise ValueError(f"aggressiveness must be 0..3, got {aggressiveness}")
    if response_delay_s < 0:
      raise ValueError(f"response_delay_s must be >= 0, got {response_delay_s}")
    if vad not in vad_lib.VADS:
      raise ValueError(f"vad must be one of {vad_lib.VADS}, got {vad!r}")
    if not 0 < threshold < 1:
      raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    self.end_silence_s = end_silence_s
    self.aggressiveness = aggressiveness
    self.min_speech_s = min_speech_s
    self.response_delay_s = response_delay_s
    self.barge_in = barge_in
    self.vad_kind = vad
    self.threshold = threshold
    self._new_vad()  # fails here, before any replay, when the VAD is not installed
    self.responder = ScriptedResponder()
    self.tts = TTS(tts_backend)
    self.player = SpeechPlayer(self.tts)
    self.turns: list[dict] = []

  def _new_vad(self):
    if self.vad_kind == "webrtc":
      self.vad = webrtcvad.Vad(self.aggressiveness)
    else:
      self.vad = vad_lib.SileroStream()
      self._in_speech = False

  def reset(self, sample):
    # A fresh VAD per sample: both VADs carry state across frames (see above).
    self._new_vad()
    self.sample = sample
    self.player.reset()
    self.run = 0.0            # seconds of continuous speech so far
    self.turn_start = None    # start of the open user turn, None when none is open
    self.last_speech = 0.0    # end of the last speech frame
    self.typed = None
    self.turns = []

  def _vad_frames(self, chunk):
    """(frame start, frame seconds, speech?) for the frames this chunk completes."""
    if self.vad_kind == "webrtc":
      pcm = (np.clip(chunk.audio, -1, 1) * 32767).astype(np.int16)
      for i in range(0, len(pcm) - _FRAME + 1, _FRAME):
        yield (chunk.t + i / SAMPLE_RATE, _FRAME / SAMPLE_RATE,
               self.vad.is_speech(pcm[i:i + _FRAME].tobytes(), SAMPLE_RATE))
      return
    # Silero frames straddle chunks: frame k covers [k, k+1) x 32 ms of the sample.
    probs = self.vad.feed(chunk.audio)
    frame_s = vad_lib.SILERO_FRAME / SAMPLE_RATE
    first = int(round(chunk.t_end * SAMPLE_RATE)) // vad_lib.SILERO_FRAME - len(probs)
    for j, p in enumerate(probs):
      cut = self.threshold - _SILERO_HYSTERESIS if self._in_speech else self.threshold
      self._in_speech = bool(p >= cut)
      yield (first + j) * frame_s, frame_s, self._in_speech

  def step(self, chunk):
    heard_speech = False
    for t, frame_s, speech in self._vad_frames(chunk):
      if speech:
        self.run += frame_s
        if self.run >= self.min_speech_s:
          heard_speech = True
          if self.turn_start is None:
            self.turn_start = t - self.run + frame_s
          self.last_speech = t + frame_s
      else:
        self.run = 0.0
    if chunk.user_text:
      self.typed = chunk.user_text
    if heard_speech and self.barge_in and self.player.speaking(chunk.out_t, chunk.out_t + 1e3):
      self.player.stop(chunk.out_t)  # the earliest moment it can react
    now = chunk.t_end
    turn_over = (self.turn_start is not None and now - self.last_speech >= self.end_silence_s)
    if turn_over or (self.typed and self.turn_start is None):
      if self.typed:
        text = self.typed
      else:
        text = turn_transcript(self.sample, self.turn_start, self.last_speech)
      reply = self.responder.reply(text)
      at = max(chunk.out_t, now + self.response_delay_s)
      self.turns.append({"turn": [self.turn_start, self.last_speech], "heard": text,
                         "reply": reply, "at": at})
      self.player.say(reply, at)
      self.turn_start, self.typed = None, None
    audio, events = self.player.render(chunk.out_t, CHUNK_SAMPLES)
    return OutputChunk(audio, events)

  def describe(self):
    vad = (f"webrtcvad(aggressiveness={self.aggressiveness})" if self.vad_kind == "webrtc"
           else f"silero(threshold={self.threshold})")
    return {"name": self.name, "vad": vad,
            "end_silence_s": self.end_silence_s, "min_speech_s": self.min_speech_s,
            "response_delay_s": self.response_delay_s, "barge_in": self.barge_in,
            "responder": self.responder.name, "tts": self.tts.backend}
