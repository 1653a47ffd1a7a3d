"""Dispatch `python -m experiments.bench NAME [--flags]` to experiments.bench.NAME.

Only the named benchmark is imported, so its absl flags are the only ones
defined; `python -m experiments.bench NAME --help` lists them.
"""

import importlib
import pkgutil
import sys

from absl import flags

import experiments.bench as bench_pkg
from experiments import cli


def _available():
  return sorted(m.name for m in pkgutil.iter_modules(bench_pkg.__path__)
                if m.name not in ("common", "__main__"))


def main(argv):
  names = _available()
  if len(argv) < 2 or argv[1] in ("-h", "--help"):
    print(f"usage: python -m experiments.bench NAME [--flags]\n  NAME: {', '.join(names)}")
    return 0 if len(argv) >= 2 else 2
  name = argv[1]
  if name not in names:
    print(f"unknown benchmark {name!r}; available: {', '.join(names)}", file=sys.stderr)
    return 2
  module = importlib.import_module(f"experiments.bench.{name}")
  # --help shows the benchmark's docstring and flags, not the dispatcher's.
  flags.adopt_module_key_flags(module)
  sys.modules["__main__"].__doc__ = module.__doc__
  cli.run(module.main, argv=[f"{argv[0]} {name}", *argv[2:]])


if __name__ == "__main__":
  sys.exit(main(sys.argv))
