"""Eval agents from plain settings, for the evaluate/replay/run_session entry points.

eval builds every agent from constructor arguments (`eval.agents.make_agent`)
but may not import experiments, so the one thing it cannot do lives here:
loading the model agent's config and parameters from a training workdir.
"""

from __future__ import annotations

from absl import logging

from eval.agents import AGENTS, make_agent
from experiments import cli

# Agents whose replies are synthesised speech (the replay's tts backend applies).
_SPEAKING = ("oracle", "vad_cascade")


def load_model(checkpoint: str | None, config=None):
  """(config, params) of a training workdir, or of a fresh model of `config`.

  The fresh model (no checkpoint) is for smoke tests: its output is noise.
  """
  if checkpoint:
    from experiments import trainer
    return trainer.load_trained(checkpoint)
  if config is None:
    raise ValueError("the model agent needs a checkpoint (a training workdir), "
                     "or a config for a randomly initialised model")
  from interaction import params as params_lib
  logging.warning("no checkpoint: running a randomly initialised model")
  return config, params_lib.init_params(config, int(config.train.seed))


def build_agent(kind: str, settings: dict, *, tts: str = "auto"):
  """An agent of `kind` (see eval.agents.AGENTS) from its settings.

  settings: constructor arguments; for 'model', `checkpoint` (a workdir) instead
  of config/params. `tts` is the replay's speech backend, used by the agents
  that speak unless their settings name their own.
  """
  if kind not in AGENTS:
    raise ValueError(f"unknown agent {kind!r}; known: {', '.join(AGENTS)}")
  settings = dict(settings)
  if kind == "model":
    checkpoint = settings.pop("checkpoint", None) or None
    if settings:
      raise ValueError(f"model agent: unknown settings {sorted(settings)}")
    if not checkpoint:
      raise ValueError("model agent: set its checkpoint (a training workdir)")
    config, params = load_model(checkpoint)
    return make_agent("model", config=config, params=params, checkpoint=checkpoint)
  if kind in _SPEAKING:
    settings.setdefault("tts_backend", tts)
  try:
    return make_agent(kind, **settings)
  except TypeError as e:  # an unknown setting: name the agent, not the class
    raise ValueError(f"{kind} agent: {e}") from None


def agents_from_config(config) -> dict:
  """label -> Agent for each of an eval config's `run_agents`, all built before any
  replay so a bad setting fails first. A section's `type` picks the agent kind
  (default: the section's name)."""
  labels = cli.comma_list(config.run_agents)
  if not labels:
    raise ValueError("run_agents: name at least one section of `agents`")
  out = {}
  for label in labels:
    if label not in config.agents:
      raise ValueError(f"run_agents: no section agents.{label}; have "
                       f"{', '.join(config.agents.keys())}")
    settings = config.agents[label].to_dict()
    kind = settings.pop("type", label)
    try:
      out[label] = build_agent(kind, settings, tts=config.replay.tts)
    except ValueError as e:
      raise ValueError(f"agents.{label}: {e}") from None
  return out
