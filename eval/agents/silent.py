"""An agent that never speaks (the floor of every metric; PAUC 25.0)."""

from eval.agents.base import Agent, OutputChunk


class SilentAgent(Agent):
  name = "silent"

  def step(self, chunk):
    return OutputChunk.silence()
