"""The job behind `python -m experiments.main`: train, evaluate, or both.

  run(config, workdir, mode)   mode 'train' | 'eval' | 'train_and_eval'

- train: `experiments.trainer.train` (resume from the workdir's checkpoint,
  else `train.init_from`, else scratch; SIGTERM checkpoints and stops).
- eval: the held-out evaluation of the workdir's latest checkpoint
  (`config.eval`, experiments/configs/common.py `eval_config()`):
    1. the suite: `eval.suite`, or <workdir>/eval_suite, generated once with
       `data_pipeline.generate.generate(families, num_per_family, ...,
       split='heldout', seed)` (into a temporary folder, then renamed, so an
       interrupted generation is never taken for a suite; eval_suite.json
       records what it was generated from and a different request is refused);
    2. the eval config: experiments/configs/eval_heldout.py's `get_config()`
       with suite, out=<workdir>/eval, run_agents=`eval.agents`,
       benchmarks, agents.model.checkpoint=<workdir>, `late_session` (when
       that eval config has the field) and `eval.overrides`;
    3. `experiments.evaluation.evaluate(eval_config)`: replays (resumable; the
       model agent's replays are redone when the checkpoint step changed),
       scores and writes <workdir>/eval/report.{md,json,png}; this module adds
       <workdir>/eval/metrics.json ({"step", "suite", "results": agent ->
       benchmark -> metrics}) and the same numbers as TensorBoard scalars
       `eval/<agent>/<benchmark>/<metric>` at the checkpoint's step in tb/.
- train_and_eval: train, then eval, unless training was stopped by SIGTERM.

`JobResult.exit_code` is 0, or 143 (128 + SIGTERM) when a SIGTERM stopped the
job: the job did not finish, so a wrapper (`&&`, a SLURM epilog, a requeue
script) does not take it for done; the checkpoint of the step reached is on
disk and rerunning the same command resumes.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil

from absl import logging

from experiments import checkpointing, cli, trainer

MODES = ("train", "eval", "train_and_eval")
SIGTERM_EXIT = 143  # 128 + SIGTERM, the shell's status for a terminated process


@dataclasses.dataclass
class JobResult:
  mode: str
  train: trainer.TrainResult | None = None
  eval: dict | None = None      # agent -> benchmark -> metrics (the eval phase)
  eval_step: int | None = None  # the checkpoint step it evaluated
  exit_code: int = 0


def run(config, workdir: str, mode: str = "train", *, progress: bool = True) -> JobResult:
  """Runs `mode` on `workdir` (module docstring)."""
  if mode not in MODES:
    raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
  result = JobResult(mode=mode)
  if mode in ("train", "train_and_eval"):
    result.train = trainer.train(config, workdir, progress=progress)
    if result.train.signal is not None:
      if mode == "train_and_eval":
        logging.warning("%s: evaluation skipped", result.train.signal)
      result.exit_code = SIGTERM_EXIT
      return result
  if mode in ("eval", "train_and_eval"):
    import jax
    if jax.process_index() == 0:
      result.eval_step, result.eval = evaluate_workdir(config, workdir, progress=progress)
  return result


# ---------------------------------------------------------------------------
# The eval phase
# ---------------------------------------------------------------------------
def latest_step(workdir: str) -> int | None:
  """The workdir's latest checkpoint step, or None (creates nothing)."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return None
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    return ckpt.latest_step()
  finally:
    ckpt.close()


def _suite_spec(config) -> dict:
  from data_pipeline import generate
  e = config.eval
  return {"families": generate.parse_families(str(e.families) or "all"),
          "num_per_family": int(e.num_per_family), "seed": int(e.seed),
          "split": "heldout"}


def suite_dir(config, workdir: str) -> str:
  return str(config.eval.suite) or os.path.join(workdir, "eval_suite")


def ensure_suite(config, workdir: str, *, progress: bool = True) -> str:
  """The eval suite's folder: `eval.suite` as given, or <workdir>/eval_suite,
  generated when absent (module docstring)."""
  e = config.eval
  if e.suite:
    if not os.path.isdir(e.suite):
      raise ValueError(f"eval.suite: {e.suite!r} is not a directory (a suite from "
                       "python -m experiments.generate --split=heldout)")
    return str(e.suite)
  spec = _suite_spec(config)
  path = suite_dir(config, workdir)
  stamp = os.path.join(path, "eval_suite.json")
  if os.path.exists(stamp):
    with open(stamp) as f:
      saved = json.load(f)
    if saved != spec:
      raise ValueError(
          f"eval: {path} was generated with {saved}, not {spec} (eval.families, "
          "eval.num_per_family, eval.seed); remove it to generate the new suite, or "
          f"set --config.eval.suite")
    return path
  if os.path.exists(path):
    raise ValueError(f"eval: {path} exists but was not generated by the eval step "
                     f"(no eval_suite.json); pass it as --config.eval.suite={path} "
                     "or remove it")
  from data_pipeline import generate
  tmp = path + ".tmp"
  if os.path.exists(tmp):  # an interrupted generation
    shutil.rmtree(tmp)
  logging.warning("eval: generating the held-out suite (%d per family of %s, seed %d) "
                  "into %s", spec["num_per_family"], ",".join(spec["families"]),
                  spec["seed"], path)
  generate.generate(spec["families"], spec["num_per_family"], tmp, split="heldout",
                    seed=spec["seed"], progress=progress)
  with open(os.path.join(tmp, "eval_suite.json"), "w") as f:
    json.dump(spec, f, indent=1)
  os.replace(tmp, path)
  return path


def _set_overrides(c, spec: str):
  """'a.b=v,c=w' onto the eval config; values are Python literals or strings."""
  for item in re.split(r",(?=\s*[A-Za-z_][\w.]*\s*=)", spec):
    if not item.strip():
      continue
    key, sep, raw = item.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
      raise ValueError(f"eval.overrides: {item.strip()!r} is not key=value")
    *parents, leaf = key.split(".")
    node = c
    for p in parents:
      if p not in node or not hasattr(node[p], "keys"):
        raise ValueError(f"eval.overrides: the eval config has no section {p!r} "
                         f"(in {key!r})")
      node = node[p]
    if leaf not in node:
      raise ValueError(f"eval.overrides: the eval config has no field {key!r}")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    try:
      node[leaf] = value
    except (TypeError, ValueError) as err:
      raise ValueError(f"eval.overrides: {key}={raw!r}: {err}") from None


def eval_config(config, workdir: str, *, progress: bool = True):
  """eval_heldout's config for this workdir (module docstring); the suite is
  not generated here (`ensure_suite`)."""
  from experiments.configs import eval_heldout
  e = config.eval
  c = eval_heldout.get_config()
  c.suite = suite_dir(config, workdir)
  c.out = os.path.join(workdir, "eval")
  c.run_agents = str(e.agents)
  c.benchmarks = str(e.benchmarks)
  c.agents.model.checkpoint = workdir
  c.agents.model.config = ""
  c.replay.progress = bool(progress)
  if "late_session" in c:
    c.late_session = bool(e.late_session)
  elif e.late_session:
    raise ValueError("eval.late_session: this code's eval config "
                     "(experiments/configs/eval_heldout.py) has no late_session field")
  _set_overrides(c, str(e.overrides))
  return c


def _model_labels(c) -> list[str]:
  labels = cli.comma_list(c.run_agents)
  return [a for a in labels if a in c.agents and c.agents[a].get("type", a) == "model"]


def evaluate_workdir(config, workdir: str, *, progress: bool = True):
  """(step, agent -> benchmark -> metrics): the eval phase on the workdir's
  latest checkpoint (module docstring)."""
  step = latest_step(workdir)
  if step is None:
    raise ValueError(f"eval: no checkpoint in {workdir}/checkpoints; train first "
                     "(--mode=train or --mode=train_and_eval)")
  c = eval_config(config, workdir, progress=progress)
  ensure_suite(config, workdir, progress=progress)
  os.makedirs(c.out, exist_ok=True)
  # Replays resume sample by sample; the model agent's are stale once the
  # checkpoint moved on (the oracle's and the cascade's do not depend on it).
  stamp = os.path.join(c.out, "checkpoint.json")
  if os.path.exists(stamp):
    with open(stamp) as f:
      before = json.load(f).get("step")
    if before != step:
      for label in _model_labels(c):
        if os.path.isdir(os.path.join(c.out, label)):
          logging.warning("eval: step %d replaces the %s replays of step %s", step,
                          label, before)
          shutil.rmtree(os.path.join(c.out, label))
  with open(stamp, "w") as f:
    json.dump({"step": step, "checkpoint": workdir}, f)
  logging.warning("eval: %s on %s at step %d into %s", c.run_agents, c.suite, step, c.out)
  from experiments.evaluation import evaluate
  results = evaluate(c)
  metrics = {a: {b: r["metrics"] for b, r in by_b.items()} for a, by_b in results.items()}
  targets = _write_targets(c, results)
  with open(os.path.join(c.out, "metrics.json"), "w") as f:
    json.dump({"step": step, "suite": c.suite, "results": metrics, "targets": targets},
              f, indent=1)
  _tensorboard(workdir, step, metrics)
  return step, metrics


def _write_targets(c, results) -> list:
  """The issue-15 targets table (eval/targets.py) for the first model agent
  against the VAD cascade, appended to report.md; [] without a model agent."""
  from eval import targets as targets_lib
  labels = [a for a in _model_labels(c) if a in results]
  if not labels:
    return []
  base = next((a for a in results if c.agents[a].get("type", a) == "vad_cascade"), "")
  rows = targets_lib.target_rows(results, agent=labels[0], baseline=base)
  path = os.path.join(c.out, "report.md")
  if os.path.exists(path):
    with open(path, "a") as f:
      f.write("\n" + targets_lib.targets_markdown(rows, labels[0], base or "baseline"))
  return rows


def _tensorboard(workdir: str, step: int, metrics: dict):
  try:
    from tensorboardX import SummaryWriter
  except ImportError:
    return
  tb = SummaryWriter(os.path.join(workdir, "tb"))
  try:
    for agent, by_b in metrics.items():
      for b, m in by_b.items():
        for k, v in m.items():
          if isinstance(v, (int, float)) and not isinstance(v, bool):
            tb.add_scalar(f"eval/{agent}/{b}/{k}", float(v), step)
  finally:
    tb.close()


# ---------------------------------------------------------------------------
# What the entry point prints
# ---------------------------------------------------------------------------
def summary(workdir: str) -> str:
  """First and last logged training metrics, as a small table."""
  from experiments import plots
  rows = plots.read_metrics(workdir)
  if not rows:
    return ""
  keys = [k for k in ("loss", "text_loss", "text_acc", "flow_loss", "grad_norm",
                      "steps_per_sec") if k in rows[-1]]
  lines = ["step    " + "".join(f"{k:>14}" for k in keys)]
  for r in (rows[0], rows[-1]) if len(rows) > 1 else rows[-1:]:
    lines.append(f"{r['step']:<8}" + "".join(f"{r.get(k, float('nan')):>14.4f}"
                                             for k in keys))
  return "\n".join(lines)


def report(result: JobResult, config, workdir: str) -> str:
  """The lines `python -m experiments.main` prints at the end."""
  out = []
  t = result.train
  if t is not None:
    how = {"resumed": f"resumed at step {t.start_step}",
           "init_from": f"initialised from {config.train.init_from}",
           "scratch": "from scratch"}[t.start]
    if t.signal is not None:
      out.append(f"stopped by {t.signal} at step {t.step} of {config.train.steps} "
                 f"({how}); checkpoint saved, rerun the same command to resume")
    else:
      ended = "" if t.stopped_by is None else f"train.{t.stopped_by} reached; "
      out.append(f"finished at step {t.step} of {config.train.steps} ({ended}{how}); "
                 f"checkpoints in {workdir}/checkpoints, metrics in "
                 f"{workdir}/metrics.jsonl")
    if os.path.exists(os.path.join(workdir, "curves.png")):
      out.append(f"curves: {workdir}/curves.png")
    table = summary(workdir)
    if table:
      out.append(table)
  if result.eval is not None:
    out.append(f"eval of step {result.eval_step}: {workdir}/eval/report.md")
    for agent, by_b in result.eval.items():
      for b, m in by_b.items():
        nums = [(k, v) for k, v in m.items() if isinstance(v, (int, float))][:4]
        out.append(f"  {agent:12s} {b:18s} " + ", ".join(f"{k} {v:.3g}" for k, v in nums))
  return "\n".join(out)
