"""The per-sample timeline picture: who speaks when, and what the model said."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from interaction.audio_io import SAMPLE_RATE  # noqa: E402


def _envelope(x: np.ndarray, hop: int = 800):
  n = len(x) // hop
  if n == 0:
    return np.zeros(1), np.zeros(1)
  env = np.abs(x[:n * hop]).reshape(n, hop).max(axis=1)
  return np.arange(n) * hop / SAMPLE_RATE, env


def draw(path: str, user_audio, model_audio, events, *, title: str = "",
         windows: list | None = None) -> None:
  """windows: [(t0, t1, label)] reference spans to shade (targets, turns, ...)."""
  duration = len(user_audio) / SAMPLE_RATE
  fig, ax = plt.subplots(figsize=(10, 2.6), dpi=80)
  t, e = _envelope(user_audio)
  ax.fill_between(t, 1.0, 1.0 + 0.8 * e / (e.max() + 1e-9), color="tab:blue", lw=0, label="user")
  t, e = _envelope(model_audio)
  ax.fill_between(t, 0.0, 0.8 * e / (e.max() + 1e-9), color="tab:orange", lw=0, label="model")
  for w0, w1, label in windows or []:
    ax.axvspan(w0, w1, color="tab:green", alpha=0.15)
    ax.text(w0, 1.95, label[:24], fontsize=6, va="top")
  for ev in events[:200]:  # keep huge outputs readable
    ax.text(ev.t_start, -0.1, ev.text[:20], fontsize=6, rotation=45, va="top")
  ax.set_xlim(0, max(duration, 0.2))
  ax.set_ylim(-0.8, 2.0)
  ax.set_yticks([0.4, 1.4], ["model", "user"])
  ax.set_xlabel("seconds")
  ax.set_title(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def reference_windows(sample) -> list:
  ref, b = sample.reference, sample.benchmark
  if b in ("timespeak", "cuespeak"):
    return [(*t["window"], t["text"]) for t in ref["targets"]]
  if b == "charades":
    return [(*ref["segment"], "event")]
  if b == "delegation":
    return [(*ref["delegate_window"], "<delegate>"), (*ref["answer_window"], ref["answer"])]
  if b == "proactive_videoqa":
    return [(*a["reply_timespan"], a["content"]) for a in ref["answer"]]
  if b == "fdb_v1_5":
    return [(*ref["overlap"], "overlap")]
  if b == "fdb_v1":
    for k, label in (("pause", "pause"), ("turn", "turn end")):
      if k in ref:
        return [(a, c, label) for a, c in ref[k]]
    if "interrupt" in ref:
      return [(*ref["interrupt"], "interrupt")]
  return []
