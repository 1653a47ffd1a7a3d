"""The conventional stack: VAD decides the turn end, then a turn-based reply.

webrtcvad (PyPI `webrtcvad-wheels`) marks 20 ms frames as speech. A turn opens
after `min_speech_s` of continuous speech and ends after `end_silence_s` of
non-speech; typed text is a turn that ends at once. At a turn end the
responder (`responder.py`) produces a reply which is spoken from the first
output window at or after `turn_end + response_delay_s`. With `barge_in`, user
speech while the agent talks cuts the agent off. It cannot speak unprompted:
no timed speech, no reaction to video, no talking over the user.
"""

from __future__ import annotations

import numpy as np
import webrtcvad

from eval.agents.base import CHUNK_SAMPLES, SAMPLE_RATE, Agent, OutputChunk
from eval.agents.responder import ScriptedResponder, turn_transcript
from eval.agents.speech import TTS, SpeechPlayer

_FRAME = 320  # 20 ms at 16 kHz, one of webrtcvad's frame sizes


class VadCascadeAgent(Agent):
  name = "vad_cascade"

  def __init__(self, end_silence_s: float = 0.6, aggressiveness: int = 2,
               min_speech_s: float = 0.1, response_delay_s: float = 0.0,
               barge_in: bool = True, tts_backend: str = "auto"):
    if end_silence_s <= 0:
      raise ValueError(f"end_silence_s must be > 0, got {end_silence_s}")
    if aggressiveness not in (0, 1, 2, 3):
      raise ValueError(f"aggressiveness must be 0..3, got {aggressiveness}")
    if response_delay_s < 0:
      raise ValueError(f"response_delay_s must be >= 0, got {response_delay_s}")
    self.end_silence_s = end_silence_s
    self.aggressiveness = aggressiveness
    self.min_speech_s = min_speech_s
    self.response_delay_s = response_delay_s
    self.barge_in = barge_in
    self.vad = webrtcvad.Vad(aggressiveness)
    self.responder = ScriptedResponder()
    self.tts = TTS(tts_backend)
    self.player = SpeechPlayer(self.tts)
    self.turns: list[dict] = []

  def reset(self, sample):
    self.sample = sample
    self.player.reset()
    self.run = 0.0            # seconds of continuous speech so far
    self.turn_start = None    # start of the open user turn, None when none is open
    self.last_speech = 0.0    # end of the last speech frame
    self.typed = None
    self.turns = []

  def _vad_frames(self, audio: np.ndarray):
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    for i in range(0, len(pcm) - _FRAME + 1, _FRAME):
      yield i / SAMPLE_RATE, self.vad.is_speech(pcm[i:i + _FRAME].tobytes(), SAMPLE_RATE)

  def step(self, chunk):
    heard_speech = False
    for dt, speech in self._vad_frames(chunk.audio):
      t = chunk.t + dt
      if speech:
        self.run += _FRAME / SAMPLE_RATE
        if self.run >= self.min_speech_s:
          heard_speech = True
          if self.turn_start is None:
            self.turn_start = t - self.run + _FRAME / SAMPLE_RATE
          self.last_speech = t + _FRAME / SAMPLE_RATE
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
    return {"name": self.name, "vad": f"webrtcvad(aggressiveness={self.aggressiveness})",
            "end_silence_s": self.end_silence_s, "min_speech_s": self.min_speech_s,
            "response_delay_s": self.response_delay_s, "barge_in": self.barge_in,
            "responder": self.responder.name, "tts": self.tts.backend}
