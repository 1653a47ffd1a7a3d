"""Runs a hypothesis property on a fixed example budget and reports it.

The determinism properties (issue 12) draw shapes, not only values, so every
example compiles new XLA programs: the budget is a fixed `max_examples` per
property, derandomized (the same cases on every run and machine, so CI time
is stable and a failure reproduces), with no deadline (compile time is not a
property of the code) and no example database (nothing written to the repo).
Shrinking is off: it would recompile for every candidate and could take
minutes; the failing case is printed as drawn.

Each property prints how many cases it tried and how long they took, to the
terminal even under pytest's output capture.
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, Phase, given, settings


def check_property(capsys, name: str, strategy, body, max_examples: int):
  """Runs body(case) for cases drawn from strategy; prints the count."""
  tried = []

  @settings(max_examples=max_examples, deadline=None, derandomize=True,
            database=None, phases=(Phase.explicit, Phase.generate),
            suppress_health_check=list(HealthCheck), print_blob=False)
  @given(strategy)
  def run(case):
    tried.append(case)
    body(case)

  start = time.perf_counter()
  try:
    run()
  finally:
    with capsys.disabled():
      print(f"\n[property] {name}: {len(tried)} cases tried in "
            f"{time.perf_counter() - start:.1f} s (budget {max_examples})")
