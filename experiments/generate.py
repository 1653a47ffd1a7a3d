r"""Write synthetic episodes (and, for held-out data, evaluation references).

  python -m experiments.generate --family=all --num=12 --out=/tmp/data \
      [--split=train|heldout] [--seed=0] [--workers=2] [--eval_refs]

--num is per family. With --split=heldout (or --eval_refs) it also writes the
benchmark-format suites that `python -m experiments.evaluate` replays; the
layout is in data_pipeline/generate.py. Sample i of a family is a pure
function of (seed, split, family, i), so runs with any --workers are identical.
"""

import sys

from absl import flags

from data_pipeline import generate, generators, tts
from experiments import cli

_FAMILY = flags.DEFINE_string("family", "all", "Comma list of families, or 'all': "
                              + ",".join(generators.FAMILIES))
_NUM = flags.DEFINE_integer("num", 10, "Episodes per family.")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "heldout"],
                           "Voice set and seed stream; heldout also writes eval references.")
_SEED = flags.DEFINE_integer("seed", 0, "Base seed.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Processes (0 = one per core).")
_EVAL_REFS = flags.DEFINE_bool("eval_refs", False,
                               "Write eval references for --split=train too.")
flags.mark_flags_as_required(["out"])


def main(argv):
  del argv
  try:
    summary = generate.generate(generate.parse_families(_FAMILY.value), _NUM.value,
                                _OUT.value, split=_SPLIT.value, seed=_SEED.value,
                                workers=_WORKERS.value, eval_refs=_EVAL_REFS.value or None)
  except tts.EspeakNotFound as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  n = sum(len(v) for v in summary["families"].values())
  print(f"wrote {n} episodes ({summary['total_seconds']} s of audio) to {_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
