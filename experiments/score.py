r"""Score predictions against one benchmark's references; prints one JSON object.

  python -m experiments.score --benchmark=charades --references=SUITE/charades \
      --predictions=runs/oracle/charades
  python -m experiments.score --benchmark=proactive_videoqa --references=PVQA \
      --predictions=pred.jsonl --omega=0.5 [--timing=audio|events] [--vad=silero|webrtc] \
      [--strict] [--details=per_sample.json]

--predictions is a replay folder (`<key>/events.jsonl` + `output.wav`),
FD-bench folders with `output.json` word chunks, or a ProactiveVideoQA
`pred.jsonl`. The JSON has the benchmark's metrics (FD-bench keys are
`task/metric`), plus `judge`, `timing`, `n_errors` and `errors` (one entry
per sample that could not be scored: never a silent zero). --timing: `audio`
scores what the listener hears (VAD + recogniser on output.wav), `events` the
agent's own word times; default: audio for fdb_v1/fdb_v1_5, events otherwise.
"""

import json

from absl import flags

from eval.judges import make_judge
from eval.score import score_benchmark
from eval.scoring import SCORERS
from experiments import cli

_BENCHMARK = flags.DEFINE_enum("benchmark", None, sorted(SCORERS), "Benchmark.")
_REFERENCES = flags.DEFINE_string("references", None, "The benchmark's folder.")
_PREDICTIONS = flags.DEFINE_string("predictions", None, "Replay folder or pred.jsonl.")
_OMEGA = flags.DEFINE_float("omega", None, "ProactiveVideoQA: an extra PAUC omega.")
_JUDGE = flags.DEFINE_string("judge", "rule", "Judge ('rule' is built in).")
_TIMING = flags.DEFINE_enum("timing", None, ["audio", "events"],
                            "Timing source; default: audio for FD-bench, events otherwise.")
_VAD = flags.DEFINE_enum("vad", "silero", ["silero", "webrtc"],
                         "VAD of the audio timing source.")
_STRICT = flags.DEFINE_bool("strict", False, "Charades: IoU > m instead of >= m.")
_DETAILS = flags.DEFINE_string("details", None, "Also write per-sample JSON here.")
flags.mark_flags_as_required(["benchmark", "references", "predictions"])


def main(argv):
  del argv
  result = score_benchmark(_BENCHMARK.value, _REFERENCES.value, _PREDICTIONS.value,
                           judge=make_judge(_JUDGE.value), omega=_OMEGA.value,
                           timing=_TIMING.value, vad=_VAD.value, strict=_STRICT.value)
  if _DETAILS.value:
    with open(_DETAILS.value, "w") as f:
      json.dump(result.to_json(), f, indent=1)
  print(json.dumps({**result.metrics, "judge": result.judge, "timing": result.timing,
                    "n_errors": len(result.errors), "errors": result.errors}))


if __name__ == "__main__":
  cli.run(main)
