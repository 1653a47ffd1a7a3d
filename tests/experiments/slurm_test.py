"""The SLURM launch path with fake `sbatch` and `srun` on PATH.

The fakes record what they are given: `sbatch` its arguments and the
script, then runs the script as SLURM would (SLURM_JOB_ID, SLURM_NNODES,
SLURM_NTASKS from its #SBATCH lines); `srun` its arguments, one per line,
and its environment. The test reads the task counts, the environment and the
command back. Plus --dry_run, a failing sbatch, and the local launcher's
environment.
"""

import os
import stat
import subprocess
import sys

import pytest

from experiments import distributed, slurm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FAKE_SBATCH = r"""#!/bin/bash
set -e
printf '%s\n' "$@" > "$REC/sbatch.args"
script="${@: -1}"
cp "$script" "$REC/script.sbatch"
if [ -n "$FAKE_SBATCH_FAIL" ]; then echo "sbatch: error: invalid partition" >&2; exit 1; fi
nodes=$(sed -n 's/^#SBATCH --nodes=\([0-9]*\)$/\1/p' "$script")
tpn=$(sed -n 's/^#SBATCH --ntasks-per-node=\([0-9]*\)$/\1/p' "$script")
export SLURM_JOB_ID=4242 SLURM_NNODES=$nodes SLURM_NTASKS=$((nodes * tpn)) SLURM_JOB_NODELIST="gpu[01-0$nodes]"
bash "$script" > "$REC/batch.out" 2>&1
echo "Submitted batch job 4242"
"""

FAKE_SRUN = r"""#!/bin/bash
printf '%s\n' "$@" > "$REC/srun.args"
env > "$REC/srun.env"
"""


@pytest.fixture
def fakes(tmp_path):
  bin_dir, rec = tmp_path / "bin", tmp_path / "rec"
  bin_dir.mkdir()
  rec.mkdir()
  for name, text in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN)):
    path = bin_dir / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", REC=str(rec),
             PYTHONPATH=REPO)
  return env, rec


def _launch(env, *args):
  return subprocess.run([sys.executable, "-m", "experiments.slurm", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=60)


TRAIN_ARGS = ["--config=experiments/configs/demo.py", "--config.data.path=/shared/data",
              "--config.train.steps=1000"]


def test_sbatch_script_runs_srun_with_one_task_per_gpu(fakes, tmp_path):
  env, rec = fakes
  workdir = tmp_path / "run"
  out = _launch(env, "--launcher=slurm", "--nodes=2", "--gpus_per_node=8",
                f"--workdir={workdir}", "--partition=h200", "--time=12:00:00",
                "--env=XLA_FLAGS=--xla_gpu_deterministic_ops=true", "--", *TRAIN_ARGS)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "Submitted batch job 4242"

  script_path = workdir / "launch" / "job.sbatch"
  assert (rec / "sbatch.args").read_text().split() == [str(script_path)]
  script = (rec / "script.sbatch").read_text()
  for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8",
               "#SBATCH --gpus-per-node=8", "#SBATCH --partition=h200",
               "#SBATCH --time=12:00:00", "#SBATCH --signal=TERM@300", "#SBATCH --requeue",
               f"#SBATCH --output={workdir}/logs/slurm-%j.out"):
    assert line in script.splitlines(), (line, script)

  args = (rec / "srun.args").read_text().splitlines()
  assert "--ntasks=16" in args and "--ntasks-per-node=8" in args
  assert "--gpus-per-task=1" in args and "--kill-on-bad-exit=1" in args
  assert f"--output={workdir}/logs/%j/%N-task%t.log" in args
  i = args.index("-m")
  assert args[i - 1] == sys.executable
  assert args[i:] == ["-m", "experiments.main", f"--workdir={workdir}", *TRAIN_ARGS]

  srun_env = dict(line.split("=", 1) for line in (rec / "srun.env").read_text().splitlines()
                  if "=" in line)
  assert srun_env["SLURM_NTASKS"] == "16" and srun_env["SLURM_NNODES"] == "2"
  assert srun_env["SLURM_JOB_ID"] == "4242"
  assert srun_env["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=true"
  assert srun_env["NCCL_DEBUG"] == "WARN"
  assert (workdir / "logs" / "4242").is_dir()           # the per-job log folder
  # What each task's distributed.maybe_initialize() will see under srun.
  spec = distributed.detect(env={**srun_env, "SLURM_PROCID": "9"})
  assert (spec.source, spec.num_processes, spec.process_id) == ("slurm", 16, 9)


def test_dry_run_prints_the_script_and_submits_nothing(fakes, tmp_path):
  env, rec = fakes
  out = _launch(env, "--launcher=slurm", "--nodes=1", "--gpus_per_node=4",
                f"--workdir={tmp_path / 'run'}", "--dry_run", "--", *TRAIN_ARGS)
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith("#!/bin/bash\n")
  assert "--ntasks=4 --ntasks-per-node=4" in out.stdout
  assert not (rec / "sbatch.args").exists()


def test_failing_sbatch_is_reported(fakes, tmp_path):
  env, _ = fakes
  out = _launch(dict(env, FAKE_SBATCH_FAIL="1"), "--launcher=slurm",
                f"--workdir={tmp_path / 'run'}", "--", *TRAIN_ARGS)
  assert out.returncode != 0
  assert "sbatch failed with status 1: sbatch: error: invalid partition" in out.stderr


def test_workdir_after_the_separator_is_refused():
  with pytest.raises(ValueError, match="give --workdir to the launcher"):
    slurm.sbatch_script(workdir="/w", train_args=["--workdir=/x"], nodes=1, gpus_per_node=1)


def test_local_launcher_environment():
  env = slurm.local_env(1, 2, 5555, 2, base={})
  assert env["JAX_COORDINATOR_ADDRESS"] == "127.0.0.1:5555"
  assert (env["JAX_NUM_PROCESSES"], env["JAX_PROCESS_ID"]) == ("2", "1")
  assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
  spec = distributed.detect(env=env)
  assert (spec.source, spec.num_processes, spec.process_id) == ("env", 2, 1)


def test_local_launcher_stops_the_others_when_one_fails(tmp_path):
  """Process 1 fails at once; process 0 would sleep for a minute: it is
  stopped and the launcher returns both codes quickly."""
  code = ("import os, sys, time\n"
          "sys.exit(5) if os.environ['JAX_PROCESS_ID'] == '1' else time.sleep(60)")
  import time
  t0 = time.monotonic()
  codes = slurm.launch_local([sys.executable, "-c", code], num_processes=2,
                             log_dir=str(tmp_path / "logs"))
  assert codes[1] == 5 and codes[0] != 0
  assert time.monotonic() - t0 < 30
  assert (tmp_path / "logs" / "process-0.log").exists()
