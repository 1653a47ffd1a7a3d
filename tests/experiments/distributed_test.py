"""Multi-process start-up (experiments/distributed.py): detection and bad input.

Each bad cluster fails within a bounded time with a message naming the
problem: an unreachable coordinator (probed with a short timeout), a process
count SLURM contradicts, a process id out of range, an incomplete set of
flags, and a run in which fewer processes arrive than num_processes says
(a real `jax.distributed.initialize` in a subprocess, 3 s timeout).
"""

import os
import socket
import subprocess
import sys
import time

import pytest

from experiments import distributed as dist

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _closed_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_single_process_is_a_no_op():
  assert dist.detect(env={}) is None
  assert dist.detect(env={"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
  dist.initialize(None)                      # logs, checks nothing else


def test_detects_slurm_env_and_explicit_flags():
  spec = dist.detect(env={"SLURM_NTASKS": "16", "SLURM_PROCID": "5", "SLURM_JOB_ID": "7"})
  assert (spec.source, spec.num_processes, spec.process_id) == ("slurm", 16, 5)
  spec = dist.detect(env={"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234",
                          "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"})
  assert (spec.source, spec.coordinator_address, spec.num_processes, spec.process_id) == (
      "env", "127.0.0.1:1234", 2, 1)
  spec = dist.detect(env={}, coordinator_address="10.0.0.1:9000", num_processes=4,
                     process_id=3, local_device_ids="0,1")
  assert spec.source == "explicit" and spec.local_device_ids == (0, 1)


@pytest.mark.parametrize("kwargs, env, words", [
    (dict(coordinator_address="127.0.0.1:1", num_processes=2, process_id=2), {},
     ["process_id: 2 is not in 0..num_processes-1=1"]),
    (dict(coordinator_address="127.0.0.1:1", num_processes=2, process_id=0),
     {"SLURM_NTASKS": "4", "SLURM_PROCID": "0"},
     ["num_processes=2", "SLURM_NTASKS=4", "must match"]),
    (dict(num_processes=2, process_id=0), {}, ["coordinator_address missing"]),
    (dict(coordinator_address="nohost", num_processes=2, process_id=0), {},
     ["'nohost' is not host:port"]),
    (dict(coordinator_address="h:99999", num_processes=2, process_id=0), {},
     ["port 99999"]),
    ({}, {"SLURM_NTASKS": "4", "SLURM_PROCID": "4"}, ["SLURM_PROCID='4'", "0..SLURM_NTASKS-1=3"]),
    ({}, {"JAX_NUM_PROCESSES": "two"}, ["JAX_NUM_PROCESSES: 'two' is not an integer"]),
])
def test_bad_cluster_settings_name_the_problem(kwargs, env, words):
  with pytest.raises(dist.DistributedError) as e:
    dist.detect(env=env, **kwargs)
  for w in words:
    assert w in str(e.value), str(e.value)


def test_unreachable_coordinator_fails_within_its_timeout():
  port = _closed_port()
  spec = dist.ClusterSpec("explicit", f"127.0.0.1:{port}", 2, 1)
  t0 = time.monotonic()
  with pytest.raises(dist.DistributedError) as e:
    dist.initialize(spec, timeout_s=2)
  took = time.monotonic() - t0
  assert 1.5 < took < 10, took
  msg = str(e.value)
  assert f"coordinator 127.0.0.1:{port} is unreachable" in msg and "2 s" in msg, msg


_MISSING_PEER = """
import sys, time
from experiments import distributed as d
t0 = time.monotonic()
try:
  d.initialize(d.ClusterSpec("explicit", "127.0.0.1:%d", 2, 0), timeout_s=3)
except d.DistributedError as e:
  print("ERR", round(time.monotonic() - t0, 1), e)
  sys.exit(3)
print("joined?")
"""


def test_fewer_processes_than_num_processes_fails_in_bounded_time():
  """Process 0 of num_processes=2 alone, through distributed.initialize: the
  roll call times out and says what is missing (JAX itself would abort the
  process with DEADLINE_EXCEEDED)."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  t0 = time.monotonic()
  out = subprocess.run([sys.executable, "-c", _MISSING_PEER % _closed_port()], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=90)
  took = time.monotonic() - t0
  assert took < 60, took
  text = out.stdout + out.stderr
  assert out.returncode != 0, text
  assert out.returncode == 3, text[-3000:]
  assert "only 1 of num_processes=2 processes reached coordinator" in text, text[-3000:]
  assert "missing ids [1]" in text and "did all 2 processes start" in text, text


def _rollcall_threads(calls, timeout_s=3.0):
  """Runs distributed.rollcall for each (n, id) in threads; returns
  {id: error text or None}."""
  import threading
  port = _closed_port() - 1          # the roll call listens on port + 1
  address = f"127.0.0.1:{port}"
  errors = {}

  def one(n, pid):
    try:
      dist.rollcall(address, n, pid, timeout_s)
      errors[pid] = None
    except dist.DistributedError as e:
      errors[pid] = str(e)
  threads = [threading.Thread(target=one, args=c) for c in calls]
  for t in threads:
    t.start()
  for t in threads:
    t.join(30)
  return errors


def test_rollcall_passes_a_complete_cluster():
  assert _rollcall_threads([(3, 0), (3, 1), (3, 2)]) == {0: None, 1: None, 2: None}


def test_rollcall_names_a_process_count_mismatch_on_every_process():
  t0 = time.monotonic()
  errors = _rollcall_threads([(2, 0), (3, 1)])
  assert time.monotonic() - t0 < 10
  for pid in (0, 1):
    assert "process 1 (127.0.0.1) says num_processes=3, process 0 says num_processes=2" in (
        errors[pid] or ""), errors


def test_rollcall_names_a_duplicate_process_id():
  errors = _rollcall_threads([(3, 0), (3, 1), (3, 1)])
  assert "process id 1 given twice" in (errors[0] or ""), errors


def _losses(path):
  import json
  with open(path) as f:
    return json.load(f)


@pytest.mark.slow
def test_two_processes_train_save_restore_and_continue_like_one(tmp_path):
  """2 processes x 2 CPU devices on loopback (gloo collectives, a fresh
  coordinator port each run) train tiny data-parallel for 2 steps and save;
  a new 2-process run restores and trains 2 more. The losses equal those of
  one process with 4 devices training 4 steps."""
  from experiments import slurm
  worker = [sys.executable, "-m", "tests.experiments.distributed_worker"]
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or k in (
      "JAX_PLATFORMS", "JAX_COMPILATION_CACHE_DIR",
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES")}
  env.update(PYTHONPATH=REPO, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  ref_dir, mp_dir = tmp_path / "one", tmp_path / "two"
  ref_dir.mkdir()
  mp_dir.mkdir()
  out = subprocess.run(worker + [str(ref_dir), "1", "4", "ref"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  for first, last, tag in ((1, 2, "a"), (3, 4, "b")):
    codes = slurm.launch_local(worker + [str(mp_dir), str(first), str(last), tag],
                               num_processes=2, local_devices=2,
                               log_dir=str(tmp_path / f"logs-{tag}"), timeout_s=300)
    logs = "".join((tmp_path / f"logs-{tag}" / f"process-{i}.log").read_text()[-2000:]
                   for i in range(2))
    assert codes == [0, 0], logs
  ref = _losses(ref_dir / "losses-ref.json")
  a, b = _losses(mp_dir / "losses-a.json"), _losses(mp_dir / "losses-b.json")
  assert (ref["processes"], ref["devices"]) == (1, 4)
  assert (a["processes"], a["devices"], b["processes"]) == (2, 4, 2)
  got = {**a["losses"], **b["losses"]}
  assert sorted(got) == sorted(ref["losses"]) == ["1", "2", "3", "4"]
  for step, loss in ref["losses"].items():
    assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), (step, got, ref)


def test_entry_point_reports_a_bad_cluster_as_one_error_line(run_module, tmp_path):
  """experiments.main with explicit flags: an unreachable coordinator is one
  `error:` line and exit status 2 within the timeout, before any work."""
  port = _closed_port()
  t0 = time.monotonic()
  r = run_module("experiments.main", "--config=experiments/configs/tiny.py",
                 f"--workdir={tmp_path / 'w'}", f"--coordinator_address=127.0.0.1:{port - 1}",
                 "--num_processes=2", "--process_id=1", "--distributed_timeout_s=2",
                 timeout=60)
  assert time.monotonic() - t0 < 45
  assert r.returncode == 2, r.stderr[-2000:]
  assert f"error: coordinator 127.0.0.1:{port - 1} is unreachable" in r.stderr, r.stderr
  assert not (tmp_path / "w").exists()
  r = run_module("experiments.main", "--config=experiments/configs/tiny.py",
                 f"--workdir={tmp_path / 'w'}", "--num_processes=2", "--process_id=3",
                 timeout=60)
  assert r.returncode == 2 and "coordinator_address missing" in r.stderr, r.stderr
