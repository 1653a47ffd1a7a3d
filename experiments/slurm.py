r"""Launch a multi-process training run: on SLURM, or N processes on loopback.

  # SLURM: write an sbatch script (one task per GPU) and submit it with sbatch
  python -m experiments.slurm --launcher=slurm --nodes=2 --gpus_per_node=8 \
      --workdir=/shared/runs/tml --partition=gpu --time=24:00:00 [--dry_run] -- \
      --config=experiments/configs/demo.py --config.data.path=/shared/data

  # local: N processes on this machine, loopback coordinator, K CPU devices each
  python -m experiments.slurm --launcher=local --num_processes=2 --local_devices=2 \
      --workdir=workdirs/mp -- --config=experiments/configs/tiny.py

Everything after `--` goes to `python -m experiments.main` (`--workdir` is
added). The SLURM script runs `srun` once over all tasks (--ntasks-per-node =
--gpus_per_node, one GPU bound per task); each task's `experiments.main` calls
`experiments.distributed.maybe_initialize()`, which finds the job through
JAX's SLURM detection. Logs: `<workdir>/logs/<job id>/<node>-task<rank>.log`
per task, `<workdir>/logs/slurm-<job id>.out` for the batch script itself. The
workdir must be on a file system every node sees (checkpoints are written by
all processes, orbax coordinates). `--signal=TERM@<grace>` makes SLURM send
SIGTERM before the time limit: the trainer checkpoints and exits 143, and
`--requeue` (default on) lets the rerun resume. `--dry_run` prints the
script instead of submitting it; otherwise it is written to
`<workdir>/launch/job.sbatch` and `sbatch` prints the job id.

The local launcher sets JAX_COORDINATOR_ADDRESS (127.0.0.1 and a free port p,
with p + 1 free for the roll call),
JAX_NUM_PROCESSES and JAX_PROCESS_ID for each process, logs each to
`<workdir>/logs/process-<i>.log`, and stops the others as soon as one fails,
so a bad run ends with the first failure's status and log tail, never a hang.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time

from absl import flags

from experiments import cli
from experiments import distributed  # noqa: F401  (defines --num_processes)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_LAUNCHER = flags.DEFINE_enum("launcher", "slurm", ["slurm", "local"], "Where to run.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (shared by all nodes).")
_NODES = flags.DEFINE_integer("nodes", 1, "SLURM nodes.")
_GPUS = flags.DEFINE_integer("gpus_per_node", 8, "GPUs per node = tasks per node.")
_CPUS = flags.DEFINE_integer("cpus_per_task", 8, "CPU cores per task.")
_PARTITION = flags.DEFINE_string("partition", "", "SLURM partition ('' = the default).")
_ACCOUNT = flags.DEFINE_string("account", "", "SLURM account ('' = the default).")
_TIME = flags.DEFINE_string("time", "24:00:00", "SLURM time limit.")
_JOB_NAME = flags.DEFINE_string("job_name", "interaction", "SLURM job name.")
_GRACE = flags.DEFINE_integer("signal_grace_s", 300,
                              "SIGTERM this many seconds before the time limit.")
_REQUEUE = flags.DEFINE_bool("requeue", True, "Requeue on preemption / SIGTERM.")
_PYTHON = flags.DEFINE_string("python", "", "Python on the nodes ('' = this one).")
_ENV = flags.DEFINE_multi_string("env", [], "NAME=VALUE exported in the job (repeatable).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the sbatch script; submit nothing.")
# --num_processes (local: processes to start, default 2) is the flag that
# experiments.distributed defines for the processes themselves.
_LOCAL_DEVICES = flags.DEFINE_integer("local_devices", 1,
                                      "local: CPU devices per process.")
_TIMEOUT = flags.DEFINE_integer("timeout_s", 0, "local: kill the run after this (0: none).")

# Environment of every task (add more with --env, e.g. the NCCL settings that
# pin the native collectives, listed in pallas_kernels/collectives.py).
DEFAULT_ENV = {
    "NCCL_DEBUG": "WARN",
    "TF_CPP_MIN_LOG_LEVEL": "1",
}


def sbatch_script(*, workdir: str, train_args: list[str], nodes: int, gpus_per_node: int,
                  cpus_per_task: int = 8, partition: str = "", account: str = "",
                  time_limit: str = "24:00:00", job_name: str = "interaction",
                  signal_grace_s: int = 300, requeue: bool = True, python: str = "",
                  env: dict | None = None, repo: str = REPO) -> str:
  """The text of the sbatch script (see the module docstring)."""
  if nodes < 1 or gpus_per_node < 1:
    raise ValueError(f"--nodes={nodes} and --gpus_per_node={gpus_per_node} must be >= 1")
  if any(a == "--workdir" or a.startswith("--workdir=") for a in train_args):
    raise ValueError("give --workdir to the launcher, not after --")
  workdir = os.path.abspath(workdir)
  logs = os.path.join(workdir, "logs")
  python = python or sys.executable
  env = {**DEFAULT_ENV, **(env or {})}
  lines = ["#!/bin/bash",
           f"#SBATCH --job-name={job_name}",
           f"#SBATCH --nodes={nodes}",
           f"#SBATCH --ntasks-per-node={gpus_per_node}",
           f"#SBATCH --gpus-per-node={gpus_per_node}",
           f"#SBATCH --cpus-per-task={cpus_per_task}",
           f"#SBATCH --time={time_limit}",
           f"#SBATCH --output={logs}/slurm-%j.out",
           f"#SBATCH --signal=TERM@{int(signal_grace_s)}"]
  if partition:
    lines.append(f"#SBATCH --partition={partition}")
  if account:
    lines.append(f"#SBATCH --account={account}")
  if requeue:
    lines.append("#SBATCH --requeue")
  lines += ["set -euo pipefail",
            f"cd {shlex.quote(repo)}",
            f'mkdir -p {shlex.quote(logs)}/"$SLURM_JOB_ID"']
  lines += [f"export {k}={shlex.quote(str(v))}" for k, v in sorted(env.items())]
  command = [python, "-m", "experiments.main", f"--workdir={workdir}", *train_args]
  lines += [
      f"echo \"job $SLURM_JOB_ID: $SLURM_NNODES nodes x {gpus_per_node} tasks, "
      f"workdir {workdir}\"",
      # One task per GPU; --kill-on-bad-exit: one failed task ends the step
      # (the others would wait forever in a collective).
      f"srun --ntasks={nodes * gpus_per_node} --ntasks-per-node={gpus_per_node} "
      f"--gpus-per-task=1 --cpus-per-task={cpus_per_task} --kill-on-bad-exit=1 "
      f"--output={shlex.quote(logs)}/%j/%N-task%t.log "
      + " ".join(shlex.quote(c) for c in command),
  ]
  return "\n".join(lines) + "\n"


def submit(script: str, workdir: str, *, sbatch: str = "sbatch") -> str:
  """Writes the script to <workdir>/launch/job.sbatch and runs sbatch on it;
  returns sbatch's output (e.g. 'Submitted batch job 123')."""
  workdir = os.path.abspath(workdir)
  os.makedirs(os.path.join(workdir, "launch"), exist_ok=True)
  os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
  path = os.path.join(workdir, "launch", "job.sbatch")
  with open(path, "w") as f:
    f.write(script)
  try:
    out = subprocess.run([sbatch, path], capture_output=True, text=True, timeout=120)
  except FileNotFoundError:
    raise RuntimeError(f"{sbatch}: not found; is this a SLURM login node? "
                       "(--dry_run prints the script)") from None
  if out.returncode:
    raise RuntimeError(f"sbatch failed with status {out.returncode}: "
                       f"{(out.stderr or out.stdout).strip()}")
  return out.stdout.strip()


def free_port(tries: int = 50) -> int:
  """A loopback port p with p + 1 also free (the coordinator and its roll
  call, experiments/distributed.py)."""
  for _ in range(tries):
    with socket.socket() as a:
      a.bind(("127.0.0.1", 0))
      port = a.getsockname()[1]
      if port >= 65535:
        continue
      with socket.socket() as b:
        try:
          b.bind(("127.0.0.1", port + 1))
        except OSError:
          continue
      return port
  raise RuntimeError("no free pair of loopback ports for the coordinator")


def local_env(i: int, n: int, port: int, local_devices: int, base=None) -> dict:
  env = dict(os.environ if base is None else base)
  env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(n),
             JAX_PROCESS_ID=str(i), JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}",
             PYTHONPATH=REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""))
  return env


def launch_local(command: list[str], *, num_processes: int, local_devices: int = 1,
                 log_dir: str, timeout_s: float | None = None, port: int | None = None,
                 poll_s: float = 0.2) -> list[int]:
  """Starts `command` num_processes times on loopback; returns their exit
  codes. When one fails, the others get SIGTERM (then SIGKILL after 10 s)."""
  if num_processes < 1:
    raise ValueError(f"--num_processes={num_processes} must be >= 1")
  os.makedirs(log_dir, exist_ok=True)
  port = port or free_port()
  procs, logs = [], []
  for i in range(num_processes):
    log = open(os.path.join(log_dir, f"process-{i}.log"), "w")
    logs.append(log)
    procs.append(subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  env=local_env(i, num_processes, port, local_devices),
                                  start_new_session=True))
  deadline = None if not timeout_s else time.monotonic() + timeout_s
  try:
    while any(p.poll() is None for p in procs):
      failed = [p for p in procs if p.poll() not in (None, 0)]
      late = deadline is not None and time.monotonic() > deadline
      if failed or late:
        _stop(procs)
        break
      time.sleep(poll_s)
  finally:
    _stop(procs)
    for log in logs:
      log.close()
  return [p.returncode for p in procs]


def _stop(procs, grace_s: float = 10.0):
  alive = [p for p in procs if p.poll() is None]
  for p in alive:
    try:
      os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
      pass
  end = time.monotonic() + grace_s
  for p in alive:
    try:
      p.wait(max(end - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
      try:
        os.killpg(p.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      p.wait()


def _tail(path: str, n: int = 20) -> str:
  try:
    with open(path) as f:
      return "".join(f.readlines()[-n:])
  except OSError:
    return ""


def main(argv):
  train_args = list(argv[1:])
  if not _WORKDIR.value:
    raise ValueError("--workdir is required")
  if _LAUNCHER.value == "slurm":
    env = {}
    for item in _ENV.value:
      k, eq, v = item.partition("=")
      if not eq or not k:
        raise ValueError(f"--env={item!r} is not NAME=VALUE")
      env[k] = v
    script = sbatch_script(
        workdir=_WORKDIR.value, train_args=train_args, nodes=_NODES.value,
        gpus_per_node=_GPUS.value, cpus_per_task=_CPUS.value, partition=_PARTITION.value,
        account=_ACCOUNT.value, time_limit=_TIME.value, job_name=_JOB_NAME.value,
        signal_grace_s=_GRACE.value, requeue=_REQUEUE.value, python=_PYTHON.value, env=env)
    if _DRY_RUN.value:
      print(script, end="")
      return 0
    print(submit(script, _WORKDIR.value))
    return 0
  workdir = os.path.abspath(_WORKDIR.value)
  command = [_PYTHON.value or sys.executable, "-m", "experiments.main",
             f"--workdir={workdir}", *train_args]
  if _DRY_RUN.value:
    print(" ".join(shlex.quote(c) for c in command))
    return 0
  log_dir = os.path.join(workdir, "logs")
  num = distributed._NUM.value  # pylint: disable=protected-access
  codes = launch_local(command, num_processes=2 if num is None else num,
                       local_devices=_LOCAL_DEVICES.value, log_dir=log_dir,
                       timeout_s=_TIMEOUT.value or None)
  for i, c in enumerate(codes):
    print(f"process {i}: exit {c} (log {log_dir}/process-{i}.log)")
  bad = [i for i, c in enumerate(codes) if c]
  if bad:
    print(_tail(os.path.join(log_dir, f"process-{bad[0]}.log")), end="", file=sys.stderr)
    return codes[bad[0]] if codes[bad[0]] > 0 else 1
  return 0


if __name__ == "__main__":
  cli.run(main)
