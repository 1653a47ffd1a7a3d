"""Training curves of a workdir: <workdir>/curves.png from <workdir>/metrics.jsonl.

`plot_curves(workdir)` draws loss, text_loss, flow_loss (log y) and text_acc
against the step, one panel each, with matplotlib's Agg canvas (no display,
no global backend switch). The trainer calls it at every checkpoint save and
at the end of a run (`train.plot_curves`); it can also be run by hand on any
workdir, during or after training.
"""

from __future__ import annotations

import json
import os

# (metric, panel title, log y)
CURVES = (("loss", "loss", True), ("text_loss", "text loss", True),
          ("flow_loss", "flow loss", True), ("text_acc", "text accuracy", False))


def read_metrics(workdir: str) -> list[dict]:
  """The rows of <workdir>/metrics.jsonl (a torn last line is skipped)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(row, dict) and "step" in row:
        rows.append(row)
  return rows


def plot_curves(workdir: str, out: str | None = None) -> str | None:
  """Writes the curves to `out` (default <workdir>/curves.png); returns the path,
  or None when there is no metric row yet. The file is replaced atomically."""
  rows = read_metrics(workdir)
  if not rows:
    return None
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  out = out or os.path.join(workdir, "curves.png")
  fig = Figure(figsize=(10, 6.5), dpi=100)
  FigureCanvasAgg(fig)
  axes = fig.subplots(2, 2, sharex=True).ravel()
  for ax, (key, title, log_y) in zip(axes, CURVES):
    pts = [(r["step"], r[key]) for r in rows
           if isinstance(r.get(key), (int, float)) and (not log_y or r[key] > 0)]
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if not pts:
      ax.text(0.5, 0.5, f"no {key}", ha="center", va="center", transform=ax.transAxes)
      continue
    steps, values = zip(*pts)
    ax.plot(steps, values, marker="." if len(pts) < 50 else None, lw=1.2)
    if log_y:
      ax.set_yscale("log")
  for ax in axes[2:]:
    ax.set_xlabel("step")
  fig.suptitle(f"{os.path.basename(os.path.abspath(workdir))}: step {rows[-1]['step']}")
  fig.tight_layout()
  tmp = out + ".tmp.png"
  fig.savefig(tmp)
  os.replace(tmp, out)
  return out
