"""The package map's one rule: imports point one way (README.md, what is where).

  pallas_kernels <- moe <- interaction <- data_pipeline <- eval <- experiments

A module may import its own package and the packages to its left, nothing
else; every import counts, including those inside functions. Command-line
entry points live in experiments/ only: library packages have no `__main__`
block, no absl flags and no argparse.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = ("pallas_kernels", "moe", "interaction", "data_pipeline", "eval", "experiments")
LIBRARIES = ORDER[:-1]


def imported_packages(source: str) -> list[tuple[int, str]]:
  """(line, top-level project package) of every import in `source`."""
  out = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names = [node.module]
    else:
      continue
    out += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in ORDER]
  return out


def back_edges(package: str, source: str) -> list[str]:
  rank = ORDER.index(package)
  return [f"line {line}: imports {pkg}" for line, pkg in imported_packages(source)
          if ORDER.index(pkg) > rank]


def _modules():
  for pkg in ORDER:
    for root, _, files in os.walk(os.path.join(REPO, pkg)):
      for f in sorted(files):
        if f.endswith(".py"):
          path = os.path.join(root, f)
          yield pkg, os.path.relpath(path, REPO), open(path).read()


def test_every_import_points_left():
  bad = [f"{rel} {e}" for pkg, rel, src in _modules() for e in back_edges(pkg, src)]
  assert not bad, "imports against the package order:\n" + "\n".join(bad)


def test_an_added_back_edge_is_caught():
  """Companion: the checker sees a back-edge at module level and inside a function."""
  src = ("import numpy as np\nfrom interaction import layout\n"
         "def f():\n  from experiments import trainer\n  import eval.replay\n")
  assert back_edges("interaction", src) == ["line 4: imports experiments",
                                            "line 5: imports eval"]
  assert back_edges("experiments", src) == []
  # And it is run on a real module: a copy of one with a back-edge appended fails.
  real = open(os.path.join(REPO, "moe", "layer.py")).read()
  assert back_edges("moe", real) == []
  assert back_edges("moe", real + "\nfrom interaction import model\n")


def _entry_point_markers(source: str) -> list[str]:
  """`__main__` blocks, argparse, absl flag definitions and app.run calls."""
  found = []
  for node in ast.walk(ast.parse(source)):
    if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"):
      found.append(f"line {node.lineno}: __main__ block")
    elif isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
      found.append(f"line {node.lineno}: imports argparse")
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
      name, owner = node.func.attr, node.func.value
      owner = owner.id if isinstance(owner, ast.Name) else ""
      if name.startswith("DEFINE") or (owner == "app" and name == "run"):
        found.append(f"line {node.lineno}: {owner}.{name}")
  return sorted(found, key=lambda m: int(m.split()[1].rstrip(":")))


@pytest.mark.parametrize("package", LIBRARIES)
def test_library_packages_have_no_command_line(package):
  bad = [f"{rel} {m}" for pkg, rel, src in _modules() if pkg == package
         for m in _entry_point_markers(src)]
  bad += [os.path.join(package, f) for f in ("__main__.py",)
          if os.path.exists(os.path.join(REPO, package, f))]
  assert not bad, "command-line code outside experiments/:\n" + "\n".join(bad)


def test_command_line_check_can_fail():
  src = ("import argparse\nfrom absl import app, flags\n"
         "X = flags.DEFINE_string('x', None, 'x')\n"
         "if __name__ == '__main__':\n  app.run(print)\n")
  assert _entry_point_markers(src) == [
      "line 1: imports argparse",
      "line 3: flags.DEFINE_string", "line 4: __main__ block", "line 5: app.run"]
  # Reading absl flags (grain's workers need them parsed) is not a command line.
  assert _entry_point_markers("from absl import flags\nflags.FLAGS.mark_as_parsed()\n") == []
