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


GRIFFIN_LIM = "griffin_lim"


def load_vocoder(checkpoint: str | None, vocoder: str | None = None):
  """The learned vocoder a model agent speaks through, or None for Griffin-Lim.

  vocoder: a vocoder checkpoint (its dir, or a workdir holding vocoder/;
  a missing one is an error), 'griffin_lim' to force the fallback, or
  ''/None: <checkpoint>/vocoder when that exists (written by
  `python -m experiments.train_vocoder --workdir=<checkpoint>`), else Griffin-Lim.
  """
  from interaction import learned_vocoder
  if vocoder == GRIFFIN_LIM:
    return None
  if vocoder:
    return learned_vocoder.load_vocoder(vocoder)
  if checkpoint and learned_vocoder.has_vocoder(checkpoint):
    return learned_vocoder.load_vocoder(checkpoint)
  return None


def model_config(name_or_file: str):
  """A model config by name (`tiny` = experiments/configs/tiny.py) or file path."""
  import importlib
  import importlib.util
  import os
  if name_or_file.endswith(".py"):
    if not os.path.exists(name_or_file):
      raise ValueError(f"model config file not found: {name_or_file}")
    spec = importlib.util.spec_from_file_location("model_config", name_or_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  else:
    try:
      module = importlib.import_module(f"experiments.configs.{name_or_file}")
    except ModuleNotFoundError:
      raise ValueError(f"no model config {name_or_file!r} in experiments/configs") from None
  return module.get_config()


def build_agent(kind: str, settings: dict, *, tts: str = "auto"):
  """An agent of `kind` (see eval.agents.AGENTS) from its settings.

  settings: constructor arguments; for 'model', `checkpoint` (a workdir) instead
  of config/params, or `config` (a model config name or file) alone for a
  randomly initialised model (smoke tests: its output is noise); `temperature`
  overrides the session's text sampling temperature and `flow_temperature`
  the scale of its flow head's initial noise; `vocoder` picks its audio
  out (see `load_vocoder`: default the checkpoint's vocoder/ if trained, else
  Griffin-Lim). `tts` is the
  replay's speech backend, used by the agents that speak unless their settings
  name their own.
  """
  if kind not in AGENTS:
    raise ValueError(f"unknown agent {kind!r}; known: {', '.join(AGENTS)}")
  settings = dict(settings)
  if kind == "model":
    checkpoint = settings.pop("checkpoint", None) or None
    config_name = settings.pop("config", None) or None
    # Session sampling overrides: text (0 = greedy) and the flow's initial noise.
    sampling = {k: settings.pop(k, None) for k in ("temperature", "flow_temperature")}
    vocoder = settings.pop("vocoder", None)
    if settings:
      raise ValueError(f"model agent: unknown settings {sorted(settings)}")
    if not checkpoint and not config_name:
      raise ValueError("model agent: set its checkpoint (a training workdir), or a model "
                       "config (e.g. config=tiny) for a randomly initialised model")
    if checkpoint and config_name:
      raise ValueError("model agent: set checkpoint or config, not both (a checkpoint "
                       "carries its own config)")
    config, params = load_model(checkpoint, model_config(config_name) if config_name else None)
    for key, value in sampling.items():
      if value is None:
        continue
      if value < 0:
        raise ValueError(f"model agent: {key} must be >= 0, got {value}")
      with config.unlocked():
        config.session[key] = float(value)
    return make_agent("model", config=config, params=params, checkpoint=checkpoint,
                      vocoder=load_vocoder(checkpoint, vocoder))
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


def late_session_seconds(config) -> float:
  """Seconds of earlier conversation before each late-session sample, from an
  eval config (`late_session`, `late_session_s`): 0.0 when the column is off.
  The value for `eval.run.run_suite(..., late_session_s=...)`."""
  if not config.get("late_session", False):
    return 0.0
  seconds = float(config.get("late_session_s", 0.0) or 0.0)
  if seconds <= 0:
    raise ValueError(f"late_session_s: must be > 0 with late_session=True, got {seconds}")
  return seconds
