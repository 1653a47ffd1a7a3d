"""The interaction model as an eval agent, through a streaming session.

The agent takes the model's config and parameters as values; loading them
from a training workdir is the entry points' job
(`experiments.trainer.load_trained`), since eval may not import experiments.

`reset` starts a fresh session (the compiled step is kept across samples);
`step` appends the chunk's input block (audio, video frame, typed text and
background text, i.e. tool results, each to its own stream) and decodes one
output block: its model_text tokens become word events, its control tokens
(`<delegate>`, `<cancel>`) events of stream `control`, its mel frames (through
the streaming vocoder) the chunk's 3200 samples. The session's output block for turn t is
spoken during turn t+1, the harness's default output window.
"""

from __future__ import annotations

import numpy as np

from eval.agents.base import CAPABILITIES, CHUNK_SAMPLES, Agent, InputChunk, OutputChunk
from eval.events import TextEvent


class ModelAgent(Agent):
  name = "model"

  def __init__(self, config, params, *, checkpoint: str | None = None, vocoder=None):
    """config: the model's ConfigDict; params: its pure-dict parameters;
    checkpoint: the workdir they came from, recorded in meta.json and the report
    (None for freshly initialised parameters); vocoder: a trained
    `interaction.learned_vocoder.LearnedVocoder` (None: Griffin-Lim)."""
    from interaction.session import Sessions
    if config is None or params is None:
      raise ValueError("the model agent needs a config and its params "
                       "(experiments.trainer.load_trained(workdir) returns both)")
    self.checkpoint = checkpoint
    self.config = config
    self.vocoder = vocoder
    self.sessions = Sessions(config, params, batch_size=1,
                             vocoder=True if vocoder is None else vocoder)
    from interaction.layout import Stream
    spec = self.sessions.spec
    lacks = set()
    if not spec.count(Stream.VIDEO):
      lacks.add("vision")
    if not spec.count(Stream.BACKGROUND_TEXT):
      lacks.add("background_text")
    self.capabilities = CAPABILITIES - lacks

  def reset(self, sample) -> None:
    self.sessions.reset()

  def step(self, chunk: InputChunk) -> OutputChunk:
    from data_pipeline.video import resize_frames
    spec = self.sessions.spec
    frame = chunk.frame
    if frame is not None:
      if not spec.video_enabled:
        frame = None
      elif frame.shape[:2] != (spec.video_height, spec.video_width):
        frame = resize_frames(frame[None], spec.video_height, spec.video_width)[0]
    r = self.sessions.step(np.asarray(chunk.audio, np.float32), video=frame,
                           user_text=chunk.user_text,
                           background_text=chunk.background_text)
    # Session times assume a one-chunk lag; re-anchor on the harness's window.
    shift = chunk.out_t - (self.sessions.turn * spec.turn_seconds)
    events = [TextEvent(e["t_start"] + shift, e["t_end"] + shift, e["text"],
                        e["stream"]) for e in r.events[0]]
    audio = r.audio[0]
    assert audio.shape == (CHUNK_SAMPLES,)
    return OutputChunk(audio=audio, events=events)

  def describe(self) -> dict:
    return {"name": self.name, "checkpoint": self.checkpoint, "config": self.config.name,
            "kernels": self.config.model.kernels.mode,
            "vocoder": (self.vocoder.source if self.vocoder is not None
                        else "griffin_lim")}
