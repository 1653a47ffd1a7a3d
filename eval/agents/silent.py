"""An agent that never speaks (the floor of every metric; PAUC 25.0)."""

from eval.agents.base import Agent, OutputChunk


class SilentAgent(Agent):
  name = "silent"
  capabilities = frozenset()  # it says nothing, by construction

  def step(self, chunk):
    return OutputChunk.silence()
