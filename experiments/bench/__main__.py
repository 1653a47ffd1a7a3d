"""Dispatch `python -m experiments.bench NAME [args...]` to experiments.bench.NAME."""

import importlib
import pkgutil
import sys

import experiments.bench as bench_pkg


def _available():
  return sorted(m.name for m in pkgutil.iter_modules(bench_pkg.__path__)
                if m.name not in ("common", "__main__"))


def main(argv):
  names = _available()
  if len(argv) < 2 or argv[1] in ("-h", "--help"):
    print(f"usage: python -m experiments.bench NAME [args]\n  NAME: {', '.join(names)}")
    return 0 if len(argv) >= 2 else 2
  name = argv[1]
  if name not in names:
    print(f"unknown benchmark {name!r}; available: {', '.join(names)}", file=sys.stderr)
    return 2
  module = importlib.import_module(f"experiments.bench.{name}")
  return module.main(argv[2:]) or 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
