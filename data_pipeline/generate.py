"""Writes synthetic episodes (and, for held-out data, evaluation references).

The library behind `python -m experiments.generate`. `generate(families, num,
out)` writes `num` episodes per family:
  OUT/episodes/<family>/<id>/{episode.json,user.wav,model.wav[,video.npz]}
  OUT/episodes/manifest.json
and with split='heldout' (or eval_refs=True) the benchmark-format references:
  OUT/fdb_v1/{turn_taking,pause_handling,user_interruption}/<id>/...
  OUT/fdb_v1_5/user_backchannel/<id>/...
  OUT/timespeak/<id>/, OUT/cuespeak/<id>/, OUT/delegation/<id>/{input.wav,task.json}
  OUT/repcount/{test.csv,videos/<id>.npz}, OUT/charades/{charades_sta_test.txt,videos/<id>.npz}
each suite with a manifest.json. Sample i of a family is a pure function of
(seed, split, family, i), so runs with any number of workers are identical.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import pathlib
import zlib

import numpy as np

from data_pipeline import episode as episode_lib
from interaction import audio_io
from data_pipeline import generators
from data_pipeline import tts


SPLIT_CODE = {"train": 1, "heldout": 2}


def sample_id(family: str, split: str, seed: int, index: int) -> str:
  return f"{family}-{split}-s{seed}-{index:05d}"


def make_sample(family: str, split: str, seed: int, index: int):
  """(Episode, refs) for sample `index` of `family` (deterministic)."""
  # crc32, not hash(): Python salts str hashes per process.
  rng = np.random.default_rng([seed, SPLIT_CODE[split], zlib.crc32(family.encode()), index])
  voices = tts.TRAIN_VOICES if split == "train" else tts.HELDOUT_VOICES
  ctx = generators.Context(id=sample_id(family, split, seed, index), family=family,
                           split=split, seed=seed, voices=voices)
  return generators.FAMILIES[family](rng, ctx)


def _write_file(path: pathlib.Path, value) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.suffix == ".wav":
    audio_io.write_wav(path, value, generators.SR)
  elif path.suffix == ".json":
    path.write_text(json.dumps(value, indent=1))
  else:
    raise ValueError(f"no writer for {path}")


def _write_video(path: pathlib.Path, frames: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(path, frames=frames, fps=np.float64(generators.VIDEO_FPS))


def _job(args):
  """Worker: generate and write one sample; returns what the parent merges."""
  family, split, seed, index, out, with_refs = args
  ep, refs = make_sample(family, split, seed, index)
  episode_lib.write_episode(pathlib.Path(out) / "episodes" / family / ep.id, ep)
  merged = None
  if with_refs and refs:
    suite = pathlib.Path(out) / refs["suite"]
    for name, value in refs.get("files", {}).items():
      _write_file(suite / ep.id / name, value)
    if "video" in refs:
      sub, name, frames = refs["video"]
      _write_video(suite / sub / f"{name}.npz", frames)
    merged = {k: refs[k] for k in ("row", "line") if k in refs}
    merged["suite"] = refs["suite"]
  return family, ep.id, round(ep.duration, 3), merged


def parse_families(spec: str) -> list[str]:
  """'all' or a comma list of family names -> the list (unknown names raise)."""
  if spec.strip() == "all":
    return list(generators.FAMILIES)
  names = [f.strip() for f in spec.split(",") if f.strip()]
  unknown = [f for f in names if f not in generators.FAMILIES]
  if unknown or not names:
    raise ValueError(f"family: unknown {unknown or spec!r}; choose from "
                     f"{', '.join(generators.FAMILIES)} or 'all'")
  return names


def generate(families, num: int, out, *, split: str = "train", seed: int = 0,
             workers: int = 0, eval_refs: bool | None = None, progress: bool = True):
  """Writes `num` episodes per family under `out`; returns the summary dict."""
  from tqdm import tqdm
  tts.check_available()  # fail fast, with the install command, before forking
  if num < 1:
    raise ValueError(f"num: {num} must be >= 1")
  out = pathlib.Path(out)
  with_refs = (split == "heldout") if eval_refs is None else (eval_refs or split == "heldout")
  jobs = [(f, split, seed, i, str(out), with_refs) for f in families for i in range(num)]
  workers = workers or os.cpu_count() or 1
  results = []
  bar = tqdm(total=len(jobs), desc="episodes", unit="ep", disable=not progress)
  if workers == 1:
    for j in jobs:
      results.append(_job(j))
      bar.update()
  else:
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      for r in pool.imap(_job, jobs, chunksize=1):
        results.append(r)
        bar.update()
  bar.close()
  # imap keeps job order, so manifests and shared files are identical across --workers.
  by_family: dict[str, list] = {}
  for family, ep_id, dur, _ in results:
    by_family.setdefault(family, []).append({"id": ep_id, "duration": dur})
  manifest = {"split": split, "seed": seed, "voice_set": split,
              "families": {f: [e["id"] for e in v] for f, v in by_family.items()},
              "total_seconds": round(sum(r[2] for r in results), 2)}
  (out / "episodes").mkdir(parents=True, exist_ok=True)
  (out / "episodes" / "manifest.json").write_text(json.dumps(manifest, indent=1))
  if with_refs:
    _write_suites(out, results, split, seed)
  return manifest


def _write_suites(out: pathlib.Path, results, split: str, seed: int) -> None:
  suites: dict[str, dict] = {}
  for family, ep_id, _, merged in results:
    if not merged:
      continue
    s = suites.setdefault(merged["suite"], {"family": family, "ids": [], "rows": [], "lines": []})
    s["ids"].append(ep_id)
    if "row" in merged:
      s["rows"].append(merged["row"])
    if "line" in merged:
      s["lines"].append(merged["line"])
  for name, s in suites.items():
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    if s["rows"]:
      width = max(len(r) for r in s["rows"]) - 3
      with open(d / "test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "type", "name", "count"] + [f"L{i + 1}" for i in range(width)])
        for i, r in enumerate(s["rows"]):
          w.writerow([i] + r + [""] * (width + 3 - len(r)))
    if s["lines"]:
      (d / "charades_sta_test.txt").write_text("\n".join(s["lines"]) + "\n")
    (d / "manifest.json").write_text(json.dumps(
        {"ids": s["ids"], "family": s["family"], "seed": seed, "voice_set": split},
        indent=1))

