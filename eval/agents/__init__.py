"""Agents and the plain factory the entry points build them with.

`make_agent(name, **settings)`: the settings are the agent's constructor
arguments (an eval config's `agents.<name>` section). The model agent takes
`config` and `params` values; experiments/ loads them from a checkpoint.
"""

from __future__ import annotations

from eval.agents.base import Agent, InputChunk, OutputChunk

AGENTS = ("silent", "oracle", "vad_cascade", "recorded", "model")


def make_agent(name: str, **kwargs) -> Agent:
  """Builds an agent by name; kwargs go to its constructor."""
  if name == "silent":
    from eval.agents.silent import SilentAgent
    return SilentAgent()
  if name == "oracle":
    from eval.agents.oracle import OracleAgent
    return OracleAgent(**kwargs)
  if name == "vad_cascade":
    from eval.agents.vad_cascade import VadCascadeAgent
    return VadCascadeAgent(**kwargs)
  if name == "recorded":
    from eval.agents.recorded import RecordedAgent
    return RecordedAgent(**kwargs)
  if name == "model":
    from eval.agents.model import ModelAgent
    return ModelAgent(**kwargs)
  raise ValueError(f"unknown agent {name!r}; known: {AGENTS}")


__all__ = ["Agent", "InputChunk", "OutputChunk", "make_agent", "AGENTS"]
