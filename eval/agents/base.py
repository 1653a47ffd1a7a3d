"""The agent protocol: one call per 200 ms micro-turn.

The harness calls `reset(sample)` once per sample, then `step(chunk)` for each
200 ms input chunk in time order. `step` returns what the agent says during
the chunk's *output window* `[chunk.out_t, chunk.out_t + 0.2)`, which by
default is the next 200 ms (interaction/layout.py: the output block of turn t is
what the model says during the next 200 ms), so no agent can answer audio it
has not heard yet.

Output: exactly 3200 samples of 16 kHz float32 audio, plus text events for the
words that *start* inside the output window (their `t_end` may run past it).
Event times are absolute seconds on the sample's clock; control tokens
(`<delegate>`) are events of stream `control`. The harness moves an
event that starts before the window to the window's start and counts it
(`clamped_events` in meta.json), so late words cannot be back-dated.

To wrap a streaming model: `reset` opens a session, `step` appends the chunk's
input block, decodes one output block, turns its model_text tokens into
events and its mel frames (through the vocoder) into the 3200 samples.
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np

from eval.events import CONTROL, SPOKEN, TextEvent

SAMPLE_RATE = 16000
CHUNK_SECONDS = 0.2
CHUNK_SAMPLES = 3200
# Output windows trail the input by this many chunks (harness default).
OUTPUT_LAG_CHUNKS = 1

# What an agent can do by construction. A metric that needs a capability the
# agent lacks (eval.scoring.REQUIRES) and comes out 0 is a structural zero in
# the report: the agent could not have scored, whatever its settings.
CAPABILITIES = frozenset({
    "speech",           # says anything at all
    "timed_speech",     # speaks at a set time without a new user turn (TimeSpeak)
    "cue_reaction",     # reacts to a cue word while the user keeps the turn (CueSpeak)
    "vision",           # sees the video (Charades, RepCount, ProactiveVideoQA)
    "delegation",       # emits the <delegate> control token (delegation)
    "background_text",  # reads tool results fed to its background stream (delegation)
})

__all__ = ["Agent", "InputChunk", "OutputChunk", "TextEvent", "SPOKEN", "CONTROL",
           "SAMPLE_RATE", "CHUNK_SECONDS", "CHUNK_SAMPLES", "OUTPUT_LAG_CHUNKS",
           "CAPABILITIES"]


@dataclasses.dataclass(frozen=True)
class InputChunk:
  """200 ms of input. `t` is the chunk's start; `out_t` its output window's start."""
  index: int
  t: float
  audio: np.ndarray                   # float32 [3200], 16 kHz user audio
  out_t: float
  frame: np.ndarray | None = None     # uint8 [H, W, 3], the video frame at `t`
  user_text: str | None = None        # text the user typed during this chunk
  background_text: str | None = None  # tool results arriving during this chunk

  @property
  def t_end(self) -> float:
    return self.t + CHUNK_SECONDS


@dataclasses.dataclass
class OutputChunk:
  audio: np.ndarray                   # float32 [3200], 16 kHz model audio
  events: list = dataclasses.field(default_factory=list)  # list[TextEvent]

  @classmethod
  def silence(cls) -> "OutputChunk":
    return cls(np.zeros(CHUNK_SAMPLES, np.float32), [])


class Agent(abc.ABC):
  """Base class; subclasses set `name` and implement `step`, and narrow
  `capabilities` (a subset of CAPABILITIES; instances may narrow it further)
  to what they can do by construction."""

  name = "agent"
  capabilities: frozenset = CAPABILITIES

  def reset(self, sample) -> None:
    """Start of a sample (`eval.samples.Sample`); drop all per-sample state."""

  @abc.abstractmethod
  def step(self, chunk: InputChunk) -> OutputChunk:
    ...

  def describe(self) -> dict:
    """Settings recorded in meta.json and the report."""
    return {"name": self.name}
