"""The ASR-aligner slot: word timings for agents that only produce audio.

FD-bench transcribes `output.wav` with NeMo parakeet-tdt-0.6b-v2 (word
timestamps). No model can be downloaded on this project's machines, so no
aligner ships here: implement `Aligner.align(audio_16k) -> [(t0, t1, word)]`
(e.g. wrapping NeMo or whisper-timestamped where weights are available) and
pass it to `eval.score.score_benchmark(..., aligner=...)`; the scorers then
use its words instead of the agent's text events.
"""

from __future__ import annotations

import abc


class Aligner(abc.ABC):
  name = "aligner"

  @abc.abstractmethod
  def align(self, audio_16k) -> list[tuple[float, float, str]]:
    ...


class UnavailableAligner(Aligner):
  """Placeholder that says clearly why there are no words."""

  name = "unavailable"

  def align(self, audio_16k):
    raise ValueError("no ASR aligner is installed (model downloads are not possible "
                     "here); score from the agent's events.jsonl or plug an Aligner in")
