"""Side-by-side report: every metric of every agent, per benchmark.

Per benchmark: the metrics under the benchmark's default timing source, then
(when scored both ways) every metric under `audio` and `events` side by
side, the recogniser's word error rate against the agent's own text, and the
samples where the two sources disagree (a metric differs, or the text says it
speaks while the audio is silent, or the reverse).

Structural zeros: a metric that is 0 because the agent cannot do the task by
construction (it lacks a capability the metric needs: the agent's
`capabilities`, eval.agents.base, against eval.scoring.REQUIRES; e.g. the VAD
cascade cannot see, so its Charades mIoU) shows as "0 (structural)" in
report.md; in report.json each result carries `metric_flags` (and
`metric_flags_by_timing`): metric -> {"structural_zero": true, "lacks": [...]}.

Late-session columns (`<benchmark>@late`, eval/late.py) get their own section
with each agent's plain and late figures side by side.
"""

from __future__ import annotations

import datetime
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from eval.scoring import required_capabilities  # noqa: E402

# (benchmark, metric, scale to [0, 1], label) for the summary plot; all "higher is better".
HEADLINE = (("timespeak", "accuracy", 1, "TimeSpeak acc"),
            ("cuespeak", "accuracy", 1, "CueSpeak acc"),
            ("charades", "mIoU", 0.01, "Charades mIoU"),
            ("repcount", "OBO", 1, "RepCount OBO"),
            ("proactive_videoqa", "PAUC@0.5", 0.01, "PAUC@0.5"),
            ("fdb_v1", "turn_taking/TOR", 1, "FDB turn-taking TOR"),
            ("fdb_v1_5", "user_backchannel/desired_rate", 1, "FDB1.5 backchannel resume"),
            ("delegation", "accuracy", 1, "Delegation acc"))


def turn_taking_objective(metrics: dict):
  """How well an agent takes turns on FD-bench (the VAD cascade's tuning score).

  The mean of four rates in [0, 1]: turn-taking TOR, 1 - pause TOR (not
  talking into pauses), interruption TOR and v1.5 backchannel desired rate;
  minus 0.25 per second of mean latency (turn-taking and interruption; a
  missing latency counts 2 s): a reply 0.4 s later costs what one task in ten
  does. metrics: benchmark -> metrics. None when a term is missing.
  """
  f, g = metrics.get("fdb_v1", {}), metrics.get("fdb_v1_5", {})
  rates = [f.get("turn_taking/TOR"), f.get("pause_handling/TOR"),
           f.get("user_interruption/TOR"), g.get("user_backchannel/desired_rate")]
  if any(r is None for r in rates):
    return None
  rates[1] = 1.0 - rates[1]
  lat = [f.get("turn_taking/latency_s"), f.get("user_interruption/latency_s")]
  lat = [2.0 if v is None else v for v in lat]
  return sum(rates) / len(rates) - 0.25 * sum(lat) / len(lat)


OBJECTIVES = {"turn_taking": turn_taking_objective}


def ranking(results: dict, objective: str) -> list:
  """[(agent, score)] best first, by OBJECTIVES[objective] on each agent's metrics."""
  if objective not in OBJECTIVES:
    raise ValueError(f"unknown objective {objective!r}; known: {sorted(OBJECTIVES)}")
  fn = OBJECTIVES[objective]
  scored = [(a, fn({b: r.get("metrics", {}) for b, r in by_b.items()}))
            for a, by_b in results.items()]
  return sorted(scored, key=lambda x: -x[1] if x[1] is not None else float("inf"))


def _fmt(v, flags=None, key=None):
  if flags and key in flags and flags[key].get("structural_zero"):
    return "0 (structural)"
  if v is None:
    return "n/a"
  if isinstance(v, float):
    return f"{v:.3f}"
  return str(v)


def structural_zeros(benchmark: str, metrics: dict, capabilities) -> dict:
  """metric -> {"structural_zero": True, "lacks": [capabilities]} for every
  metric that is 0 and needs a capability the agent lacks (capabilities None:
  unknown, nothing is structural)."""
  if capabilities is None:
    return {}
  out = {}
  for k, v in metrics.items():
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != 0:
      continue
    lacks = sorted(required_capabilities(benchmark, k) - set(capabilities))
    if lacks:
      out[k] = {"structural_zero": True, "lacks": lacks}
  return out


def annotate(results: dict, capabilities: dict) -> dict:
  """Adds `metric_flags` (and `metric_flags_by_timing`) to every result in place.

  capabilities: agent label -> its capabilities (eval.agents.base.CAPABILITIES
  subset); an agent missing from it gets no flags. Returns `results`."""
  for a, by_b in results.items():
    caps = capabilities.get(a)
    for b, r in by_b.items():
      r["metric_flags"] = structural_zeros(b, r.get("metrics", {}), caps)
      if "by_timing" in r:
        r["metric_flags_by_timing"] = {t: structural_zeros(b, m, caps)
                                       for t, m in r["by_timing"].items()}
  return results


def _base(b: str) -> str:
  return b.split("@", 1)[0]


def to_markdown(results: dict, meta: dict) -> str:
  """results: agent -> benchmark -> ScoreResult.to_json()."""
  agents = list(results)
  lines = ["# Evaluation report", "",
           f"Generated {meta.get('date', '')}. Suite: `{meta.get('suite', '')}`.", ""]
  judges = sorted({r["judge"] for a in results.values() for r in a.values()})
  lines += [f"Judge(s): {', '.join(judges)}.", ""]
  caps = meta.get("capabilities", {})
  for a in agents:
    can = (f"; can: {', '.join(sorted(caps[a])) or 'nothing'}" if a in caps else "")
    lines.append(f"- **{a}**: `{json.dumps(meta.get('agents', {}).get(a, {}))}`{can}")
  if meta.get("late_session_s"):
    lines += ["", f"Late session (`@late`): each FD-bench turn-taking and pause sample "
              f"replayed after at least {meta['late_session_s']:g} s of earlier conversation "
              "in the same session (the other turn-taking samples' audio, each followed by "
              "room for an answer), scored on the sample's own part and clock."]
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

    def cell(a, bench, k):
      r = results[a].get(bench, {})
      return _fmt(r.get("metrics", {}).get(k), r.get("metric_flags"), k)

    if b != _base(b):  # a late column: plain and late side by side
      cols = [(a, bench, f"{a} · {tag}") for a in agents
              for bench, tag in ((_base(b), "plain"), (b, "late"))]
    else:
      cols = [(a, b, a) for a in agents]
    lines.append("| metric | " + " | ".join(c[2] for c in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for k in keys:
      lines.append(f"| {k} | " + " | ".join(cell(a, bench, k) for a, bench, _ in cols) + " |")
    lines.append("| errors | " + " | ".join(
        str(len(results[a].get(bench, {}).get("errors", []))) for a, bench, _ in cols) + " |")
    flagged = sorted({(a, k, ", ".join(f["lacks"])) for a in agents
                      for k, f in results[a].get(b, {}).get("metric_flags", {}).items()})
    if flagged:
      lines.append("\n0 (structural): the agent cannot do this by construction ("
                   + "; ".join(f"{a} {k}: lacks {lacks}" for a, k, lacks in flagged) + ").")
    for note in sorted({n for a in agents for n in results[a].get(b, {}).get("notes", [])}):
      lines.append(f"\nNote: {note}")
    lines += _timing_section(results, agents, b)
  if meta.get("rank_by"):
    lines += ["", f"## Ranking by `{meta['rank_by']}`", "",
              (OBJECTIVES[meta["rank_by"]].__doc__ or "").strip().split("\n")[0], "",
              "| rank | agent | score | settings |", "|---|---|---|---|"]
    for i, (a, v) in enumerate(ranking(results, meta["rank_by"]), 1):
      lines.append(f"| {i} | {a} | {_fmt(v)} | `{json.dumps(meta.get('agents', {}).get(a, {}))}` |")
  errs = [(a, e) for a in agents for b in benchmarks
          for e in results[a].get(b, {}).get("errors", [])]
  lines += ["", "## Per-sample errors", ""]
  if not errs:
    lines.append("None.")
  for a, e in errs:
    lines.append(f"- {a} / {e.get('benchmark')} / `{e.get('key')}`: {e.get('error')}")
  return "\n".join(lines) + "\n"


_MAX_LISTED = 12  # disagreeing samples listed per agent and benchmark


def _timing_section(results, agents, b) -> list[str]:
  both = [a for a in agents if "by_timing" in results[a].get(b, {})]
  if not both:
    return []
  lines = ["", f"### {b}: timing source audio vs events", "",
           "`audio`: what the listener hears (VAD + recogniser on output.wav); "
           "`events`: the agent's own word times. Metrics above use "
           + ", ".join(sorted({results[a][b].get("timing", "?") for a in both})) + ".", ""]
  keys = []
  for a in both:
    for t in ("audio", "events"):
      for k in results[a][b]["by_timing"].get(t, {}):
        if k not in keys:
          keys.append(k)
  cols = [(a, t) for a in both for t in ("audio", "events")]
  lines.append("| metric | " + " | ".join(f"{a} · {t}" for a, t in cols) + " |")
  lines.append("|---|" + "---|" * len(cols))
  for k in keys:
    lines.append(f"| {k} | " + " | ".join(
        _fmt(results[a][b]["by_timing"].get(t, {}).get(k),
             results[a][b].get("metric_flags_by_timing", {}).get(t), k)
        for a, t in cols) + " |")
  lines.append("")
  for a in both:
    r = results[a][b]
    sp = r.get("speech", {})
    n_words = sum(v.get("text_words", 0) for v in sp.values())
    wer = r.get("wer_text_vs_audio")
    text_only = sum(v.get("text_only_s", 0) for v in sp.values())
    audio_only = sum(v.get("audio_only_s", 0) for v in sp.values())
    noise = sum(max(0.0, v.get("sound_s", 0) - v.get("audio_s", 0)) for v in sp.values())
    lines.append(f"- **{a}**: recogniser WER against its text {_fmt(wer)} ({n_words} words); "
                 f"text speaks {text_only:.1f} s where the audio has no speech, audio has "
                 f"{audio_only:.1f} s of speech its text does not say and {noise:.1f} s of "
                 "sound that is not speech; "
                 f"{len(r.get('disagreements', []))} of {len(r.get('per_sample', []))} "
                 "samples disagree.")
    for d in r.get("disagreements", [])[:_MAX_LISTED]:
      diff = ", ".join(f"{k} audio {_fmt(v[0])} vs events {_fmt(v[1])}"
                       for k, v in d["differs"].items())
      lines.append(f"  - `{d['key']}`: " + "; ".join(x for x in (diff, d.get("what")) if x))
    extra = len(r.get("disagreements", [])) - _MAX_LISTED
    if extra > 0:
      lines.append(f"  - ... and {extra} more (report.json)")
  return lines


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
  """Writes report.{md,json,png}. meta["capabilities"] (agent -> capabilities)
  marks structural zeros (`annotate`, in place on `results`)."""
  os.makedirs(out_dir, exist_ok=True)
  meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), **meta}
  if "capabilities" in meta:
    meta["capabilities"] = {a: sorted(c) for a, c in meta["capabilities"].items()
                            if c is not None}
    annotate(results, meta["capabilities"])
  md = to_markdown(results, meta)
  if plot(results, os.path.join(out_dir, "report.png")):
    md += "\n![headline metrics](report.png)\n"
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write(md)
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump({"meta": meta, "results": results}, f, indent=1)
  return {"report_md": os.path.join(out_dir, "report.md")}
