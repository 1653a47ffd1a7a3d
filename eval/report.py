"""Side-by-side report: every metric of every agent, per benchmark."""

from __future__ import annotations

import datetime
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (benchmark, metric, scale to [0, 1], label) for the summary plot; all "higher is better".
HEADLINE = (("timespeak", "accuracy", 1, "TimeSpeak acc"),
            ("cuespeak", "accuracy", 1, "CueSpeak acc"),
            ("charades", "mIoU", 0.01, "Charades mIoU"),
            ("repcount", "OBO", 1, "RepCount OBO"),
            ("proactive_videoqa", "PAUC@0.5", 0.01, "PAUC@0.5"),
            ("fdb_v1", "turn_taking/TOR", 1, "FDB turn-taking TOR"),
            ("fdb_v1_5", "user_backchannel/desired_rate", 1, "FDB1.5 backchannel resume"))


def _fmt(v):
  if v is None:
    return "n/a"
  if isinstance(v, float):
    return f"{v:.3f}"
  return str(v)


def to_markdown(results: dict, meta: dict) -> str:
  """results: agent -> benchmark -> ScoreResult.to_json()."""
  agents = list(results)
  lines = ["# Evaluation report", "",
           f"Generated {meta.get('date', '')}. Suite: `{meta.get('suite', '')}`.", ""]
  judges = sorted({r["judge"] for a in results.values() for r in a.values()})
  lines += [f"Judge(s): {', '.join(judges)}.", ""]
  for a in agents:
    lines.append(f"- **{a}**: `{json.dumps(meta.get('agents', {}).get(a, {}))}`")
  if meta.get("manifests"):
    lines += ["", "Suite manifests: " + "; ".join(
        f"{b}: seed={m.get('seed')}, voices={m.get('voice_set', m.get('voices'))}"
        for b, m in meta["manifests"].items() if isinstance(m, dict))]
  benchmarks = sorted({b for a in results.values() for b in a})
  for b in benchmarks:
    lines += ["", f"## {b}", ""]
    judge_names = sorted({results[a][b]["judge"] for a in agents if b in results[a]})
    lines += [f"Judge: {', '.join(judge_names)}", ""]
    keys = []
    for a in agents:
      for k in results[a].get(b, {}).get("metrics", {}):
        if k not in keys:
          keys.append(k)
    lines.append("| metric | " + " | ".join(agents) + " |")
    lines.append("|---|" + "---|" * len(agents))
    for k in keys:
      lines.append(f"| {k} | " + " | ".join(
          _fmt(results[a].get(b, {}).get("metrics", {}).get(k)) for a in agents) + " |")
    lines.append("| errors | " + " | ".join(
        str(len(results[a].get(b, {}).get("errors", []))) for a in agents) + " |")
    for note in sorted({n for a in agents for n in results[a].get(b, {}).get("notes", [])}):
      lines.append(f"\nNote: {note}")
  errs = [(a, e) for a in agents for b in benchmarks
          for e in results[a].get(b, {}).get("errors", [])]
  lines += ["", "## Per-sample errors", ""]
  if not errs:
    lines.append("None.")
  for a, e in errs:
    lines.append(f"- {a} / {e.get('benchmark')} / `{e.get('key')}`: {e.get('error')}")
  return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> bool:
  rows = [(b, m, s, label) for b, m, s, label in HEADLINE
          if any(results[a].get(b, {}).get("metrics", {}).get(m) is not None for a in results)]
  if not rows:
    return False
  agents = list(results)
  fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 3.2), dpi=100)
  width = 0.8 / len(agents)
  for i, a in enumerate(agents):
    vals = [(results[a].get(b, {}).get("metrics", {}).get(m) or 0.0) * s for b, m, s, _ in rows]
    ax.bar([j + i * width for j in range(len(rows))], vals, width, label=a)
  ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], [r[3] for r in rows],
                rotation=20, ha="right", fontsize=8)
  ax.set_ylim(0, 1.05)
  ax.set_ylabel("score (1 = perfect)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return True


def write_report(out_dir: str, results: dict, meta: dict) -> dict:
  os.makedirs(out_dir, exist_ok=True)
  meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), **meta}
  md = to_markdown(results, meta)
  if plot(results, os.path.join(out_dir, "report.png")):
    md += "\n![headline metrics](report.png)\n"
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write(md)
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump({"meta": meta, "results": results}, f, indent=1)
  return {"report_md": os.path.join(out_dir, "report.md")}
