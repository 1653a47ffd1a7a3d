"""Benchmarks: `python -m experiments.bench NAME` runs `experiments.bench.NAME.main`.

Conventions (DEVELOPERS.md): each benchmark runs on CPU in a few minutes,
measures what it compares side by side in one run, and prints as its last line
one JSON object of its figures (ratios `*_ratio`, times `*_ms`). Record results
in BENCHMARKS.md with the command, date and machine.
"""
