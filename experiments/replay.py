r"""Replay one benchmark folder into one agent (no scoring).

  python -m experiments.replay --agent=vad_cascade --benchmark=timespeak \
      --data=SUITE/timespeak --out=runs/cascade/timespeak [--pace=wall] \
      [--end_silence_s=S] [--cascade_vad=webrtc|silero] [--response_delay_s=0] \
      [--tts=auto|espeak|placeholder] \
      [--recorded_dir=DIR] [--checkpoint=WORKDIR] [--notimeline] [--noresume]

Writes OUT/<key>/{output.wav,events.jsonl,timeline.png,meta.json} (see
eval/replay.py) and OUT/replay_summary.json; prints one JSON object
(done, skipped, errors). Score it with `python -m experiments.score`; a whole
suite with several agents is `python -m experiments.evaluate`.
"""

import json
import os

from absl import flags

from eval import loaders
from eval.agents import AGENTS
from eval.agents.base import OUTPUT_LAG_CHUNKS
from eval.agents.vad_cascade import DEFAULTS as CASCADE
from eval.replay import ReplayConfig, replay
from experiments import agents as agents_lib
from experiments import cli

_AGENT = flags.DEFINE_enum("agent", None, list(AGENTS), "Agent to replay.")
_BENCHMARK = flags.DEFINE_enum("benchmark", None, sorted(loaders.LOADERS), "Benchmark.")
_DATA = flags.DEFINE_string("data", None, "The benchmark's folder.")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_PACE = flags.DEFINE_enum("pace", "simulated", ["simulated", "wall"], "Replay clock.")
_LAG = flags.DEFINE_integer("lag_chunks", OUTPUT_LAG_CHUNKS,
                            "Output windows trail the input by this many chunks.")
_TIMELINE = flags.DEFINE_bool("timeline", True, "Draw timeline.png per sample.")
_RESUME = flags.DEFINE_bool("resume", True, "Skip samples already done.")
_RECORDED = flags.DEFINE_string("recorded_dir", None, "recorded: a previous replay folder.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "model: a training workdir.")
_END_SILENCE = flags.DEFINE_float("end_silence_s", CASCADE["end_silence_s"],
                                  "vad_cascade: end-of-turn silence (default: the tuned one).")
_CASCADE_VAD = flags.DEFINE_enum("cascade_vad", CASCADE["vad"], ["webrtc", "silero"],
                                 "vad_cascade: its VAD (default: the tuned one).")
_AGGRESSIVENESS = flags.DEFINE_integer("aggressiveness", CASCADE["aggressiveness"],
                                       "vad_cascade: webrtcvad aggressiveness 0..3.")
_THRESHOLD = flags.DEFINE_float("threshold", CASCADE["threshold"],
                                "vad_cascade: Silero speech threshold.")
_DELAY = flags.DEFINE_float("response_delay_s", 0.0, "vad_cascade: extra reply delay.")
_TTS = flags.DEFINE_enum("tts", "auto", ["auto", "espeak", "placeholder"],
                         "Speech backend of oracle and vad_cascade.")
flags.mark_flags_as_required(["agent", "benchmark", "data", "out"])


def _settings(agent: str) -> dict:
  if agent == "recorded":
    return {"recorded_dir": _RECORDED.value}
  if agent == "vad_cascade":
    return {"end_silence_s": _END_SILENCE.value, "response_delay_s": _DELAY.value,
            "vad": _CASCADE_VAD.value, "aggressiveness": _AGGRESSIVENESS.value,
            "threshold": _THRESHOLD.value}
  if agent == "model":
    return {"checkpoint": _CHECKPOINT.value}
  return {}


def main(argv):
  del argv
  if _AGENT.value == "model" and not _CHECKPOINT.value:
    raise ValueError("--agent=model needs --checkpoint=WORKDIR (a training run)")
  agent = agents_lib.build_agent(_AGENT.value, _settings(_AGENT.value), tts=_TTS.value)
  loaded = loaders.load(_BENCHMARK.value, _DATA.value)
  cfg = ReplayConfig(pace=_PACE.value, lag_chunks=_LAG.value, timeline=_TIMELINE.value,
                     resume=_RESUME.value)
  summary = replay(agent, loaded.samples, _OUT.value, cfg, loaded.errors)
  with open(os.path.join(_OUT.value, "replay_summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  print(json.dumps({k: summary[k] for k in ("done", "skipped")}
                   | {"errors": len(summary["errors"])}))


if __name__ == "__main__":
  cli.run(main)
