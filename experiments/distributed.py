"""Multi-process start-up: one `maybe_initialize()` for every entry point.

JAX's multi-controller runtime is the distributed engine: every process runs
the same program, `jax.distributed.initialize` connects them through a
coordinator (process 0 serves it), and jit'ed computations on a mesh that
spans the processes' devices run their collectives over NCCL (GPU) or gloo
(CPU, loopback tests).

Where the cluster comes from, first match wins (`detect`):
  1. explicit flags / arguments: --coordinator_address, --num_processes,
     --process_id (and --local_device_ids), or the environment variables
     JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID that
     `experiments.slurm --launcher=local` sets for each process it starts;
  2. SLURM (`srun`, one task per GPU): SLURM_NTASKS > 1; JAX's own SLURM
     detection finds the coordinator (first node of the job, port from the
     job id) and each task's id and GPU;
  3. Open MPI (OMPI_COMM_WORLD_SIZE > 1), also JAX's detection;
  4. otherwise one process: nothing to initialise.

Bad input fails fast with a message naming the problem, never a hang: a
process id outside [0, num_processes), a process count that disagrees with
SLURM's task count, a coordinator address that is not host:port, and a
coordinator that does not answer, fewer processes than --num_processes, a
process that disagrees on the count. JAX's coordinator would abort the process
with a C++ fatal error (DEADLINE_EXCEEDED) in those cases, so explicit clusters
first take a roll call (`rollcall`: plain TCP on the coordinator's port + 1,
bounded by --distributed_timeout_s) that fails with a DistributedError naming
the problem on every process; JAX's own `initialization_timeout` bounds the
rest. After start-up every process logs its index and local
and global device counts, and `expected_devices` is checked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time

import jax
from absl import flags, logging

_COORD = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0's coordinator (multi-process runs without SLURM).")
_NUM = flags.DEFINE_integer("num_processes", None, "Number of processes in the run.")
_PID = flags.DEFINE_integer("process_id", None, "This process's id, 0..num_processes-1.")
_LOCAL = flags.DEFINE_string("local_device_ids", None,
                             "Comma list of this process's local device ids.")
_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout_s", 300,
    "Seconds to wait for the coordinator and the other processes before failing.")


class DistributedError(ValueError):
  """The cluster could not be set up; the message says why (a ValueError, so
  entry points report it as one `error: ...` line, exit status 2)."""


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
  source: str                     # 'explicit' | 'env' | 'slurm' | 'ompi'
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None


def _int(value, what):
  if value is None or value == "":
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise DistributedError(f"{what}: {value!r} is not an integer") from None


def _flag(holder):
  try:
    return holder.value
  except flags.UnparsedFlagAccessError:
    return None


def check_address(address: str, what: str = "coordinator_address") -> tuple[str, int]:
  host, sep, port = str(address).rpartition(":")
  if not sep or not host:
    raise DistributedError(f"{what}: {address!r} is not host:port")
  p = _int(port, f"{what} port")
  if not 0 < p < 65536:
    raise DistributedError(f"{what}: port {p} of {address!r} is not in 1..65535")
  return host.strip("[]"), p


def detect(env=None, *, coordinator_address=None, num_processes=None, process_id=None,
           local_device_ids=None) -> ClusterSpec | None:
  """The cluster this process belongs to, or None for a single process."""
  env = os.environ if env is None else env
  slurm_tasks = _int(env.get("SLURM_NTASKS"), "SLURM_NTASKS")
  if coordinator_address or num_processes is not None or process_id is not None:
    source = "explicit"
  else:
    source = "env"
    coordinator_address = env.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = _int(env.get("JAX_NUM_PROCESSES"), "JAX_NUM_PROCESSES")
    process_id = _int(env.get("JAX_PROCESS_ID"), "JAX_PROCESS_ID")
    if local_device_ids is None and env.get("JAX_LOCAL_DEVICE_IDS"):
      local_device_ids = env["JAX_LOCAL_DEVICE_IDS"]
  if isinstance(local_device_ids, str):
    local_device_ids = tuple(_int(x, "local_device_ids") for x in local_device_ids.split(",")
                             if x.strip())
  if coordinator_address or num_processes is not None or process_id is not None:
    spec = ClusterSpec(source, coordinator_address, num_processes, process_id,
                       tuple(local_device_ids) if local_device_ids else None)
    validate(spec, slurm_tasks=slurm_tasks)
    return spec
  if slurm_tasks and slurm_tasks > 1:
    pid = _int(env.get("SLURM_PROCID"), "SLURM_PROCID")
    if pid is None or not 0 <= pid < slurm_tasks:
      raise DistributedError(f"SLURM_PROCID={env.get('SLURM_PROCID')!r} is not in "
                             f"0..SLURM_NTASKS-1={slurm_tasks - 1}")
    return ClusterSpec("slurm", None, slurm_tasks, pid)
  ompi = _int(env.get("OMPI_COMM_WORLD_SIZE"), "OMPI_COMM_WORLD_SIZE")
  if ompi and ompi > 1:
    return ClusterSpec("ompi", None, ompi, _int(env.get("OMPI_COMM_WORLD_RANK"),
                                                "OMPI_COMM_WORLD_RANK"))
  return None


def validate(spec: ClusterSpec, *, slurm_tasks: int | None = None) -> None:
  """Static checks of an explicit cluster (no network)."""
  where = f"({spec.source} cluster)"
  if not spec.coordinator_address or spec.num_processes is None or spec.process_id is None:
    missing = [n for n, v in (("coordinator_address", spec.coordinator_address),
                              ("num_processes", spec.num_processes),
                              ("process_id", spec.process_id)) if v in (None, "")]
    raise DistributedError(f"multi-process run {where}: {', '.join(missing)} missing; "
                           "give all of --coordinator_address, --num_processes, "
                           "--process_id (or none of them)")
  check_address(spec.coordinator_address)
  if spec.num_processes < 1:
    raise DistributedError(f"num_processes: {spec.num_processes} must be >= 1")
  if not 0 <= spec.process_id < spec.num_processes:
    raise DistributedError(f"process_id: {spec.process_id} is not in "
                           f"0..num_processes-1={spec.num_processes - 1}")
  if slurm_tasks and slurm_tasks > 1 and slurm_tasks != spec.num_processes:
    raise DistributedError(f"num_processes={spec.num_processes} but SLURM started "
                           f"SLURM_NTASKS={slurm_tasks} tasks: the process count "
                           "must match (one task per GPU)")


def rollcall_address(coordinator_address: str) -> tuple[str, int]:
  """Where process 0 takes the roll call: the coordinator's host, its port + 1."""
  host, port = check_address(coordinator_address)
  if port >= 65535:
    raise DistributedError(f"coordinator_address: port {port} leaves no port + 1 "
                           "for the roll call")
  return host, port + 1


def _send(conn, obj):
  conn.sendall((json.dumps(obj) + "\n").encode())


def _recv(conn, deadline) -> dict | None:
  buf = b""
  while b"\n" not in buf:
    left = deadline - time.monotonic()
    if left <= 0:
      return None
    conn.settimeout(left)
    try:
      chunk = conn.recv(4096)
    except (socket.timeout, OSError):
      return None
    if not chunk:
      return None
    buf += chunk
  try:
    return json.loads(buf.split(b"\n", 1)[0])
  except json.JSONDecodeError:
    return None


def rollcall(coordinator_address: str, num_processes: int, process_id: int,
             timeout_s: float) -> None:
  """Checks, before JAX connects, that exactly num_processes processes with
  distinct ids 0..n-1 and the same num_processes are there.

  JAX's coordinator aborts the process (a C++ fatal error, DEADLINE_EXCEEDED)
  when a peer is missing; this roll call (plain TCP on the coordinator's port
  + 1) turns every such case into a DistributedError naming the problem, on
  every process, within timeout_s: the coordinator unreachable, fewer
  processes than num_processes, a process that disagrees on num_processes, an
  id given twice."""
  host, port = rollcall_address(coordinator_address)
  deadline = time.monotonic() + timeout_s
  where = f"coordinator {coordinator_address}"
  if process_id != 0:
    last = None
    while True:
      try:
        conn = socket.create_connection((host, port), timeout=1.0)
        break
      except OSError as e:
        last = e
      if time.monotonic() >= deadline:
        raise DistributedError(
            f"{where} is unreachable: no answer within {timeout_s:g} s "
            f"({type(last).__name__}: {last}); is process 0 running and the address "
            "right (--coordinator_address / JAX_COORDINATOR_ADDRESS)?")
      time.sleep(0.2)
    with conn:
      _send(conn, {"id": process_id, "n": num_processes})
      reply = _recv(conn, deadline)
    if reply is None:
      raise DistributedError(f"{where}: process 0 did not answer the roll call within "
                             f"{timeout_s:g} s (process {process_id} of "
                             f"num_processes={num_processes})")
    if "error" in reply:
      raise DistributedError(reply["error"])
    return
  server = socket.socket()
  server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    server.bind(("", port))   # all interfaces: peers connect to the coordinator host
  except OSError as e:
    server.close()
    raise DistributedError(f"{where}: cannot listen for the roll call on port {port} "
                           f"({e}); choose another coordinator port") from None
  server.listen(num_processes)
  peers, seen, error = [], {0: "process 0"}, None
  try:
    while len(seen) < num_processes and error is None:
      left = deadline - time.monotonic()
      if left <= 0:
        break
      server.settimeout(left)
      try:
        conn, addr = server.accept()
      except (socket.timeout, OSError):
        break
      hello = _recv(conn, deadline)
      peers.append(conn)
      if not isinstance(hello, dict) or "id" not in hello:
        continue
      pid, n = int(hello["id"]), int(hello.get("n", -1))
      if n != num_processes:
        error = (f"process {pid} ({addr[0]}) says num_processes={n}, process 0 says "
                 f"num_processes={num_processes}: every process must be given the "
                 "same process count")
      elif pid in seen:
        error = f"process id {pid} given twice (by {seen[pid]} and {addr[0]})"
      elif not 0 < pid < num_processes:
        error = f"process id {pid} is not in 0..num_processes-1={num_processes - 1}"
      else:
        seen[pid] = addr[0]
    if error is None and len(seen) < num_processes:
      missing = sorted(set(range(num_processes)) - set(seen))
      error = (f"only {len(seen)} of num_processes={num_processes} processes reached "
               f"{where} within {timeout_s:g} s (missing ids {missing[:8]}"
               f"{'...' if len(missing) > 8 else ''}): did all {num_processes} processes "
               "start, with the same coordinator and process count?")
    for conn in peers:
      try:
        _send(conn, {"error": error} if error else {"ok": True})
      except OSError:
        pass
  finally:
    for conn in peers:
      conn.close()
    server.close()
  if error:
    raise DistributedError(error)


def initialize(spec: ClusterSpec | None, *, timeout_s: int = 300,
               expected_devices: int | None = None) -> None:
  """Connects this process to the cluster `spec` (None: single process)."""
  if spec is None or jax.distributed.is_initialized():
    _log_and_check(spec, expected_devices)
    return
  timeout_s = int(timeout_s)
  if timeout_s < 1:
    raise DistributedError(f"distributed_timeout_s: {timeout_s} must be >= 1")
  kwargs = {"initialization_timeout": timeout_s}
  if spec.source in ("explicit", "env"):
    rollcall(spec.coordinator_address, spec.num_processes, spec.process_id, timeout_s)
    kwargs.update(coordinator_address=spec.coordinator_address,
                  num_processes=spec.num_processes, process_id=spec.process_id)
    if spec.local_device_ids:
      kwargs["local_device_ids"] = list(spec.local_device_ids)
  t0 = time.monotonic()
  try:
    jax.distributed.initialize(**kwargs)
  except Exception as e:  # pylint: disable=broad-except  # XlaRuntimeError & co
    raise DistributedError(
        f"jax.distributed.initialize failed after {time.monotonic() - t0:.1f} s "
        f"(process {spec.process_id} of num_processes={spec.num_processes}, coordinator "
        f"{spec.coordinator_address or 'from ' + spec.source}, timeout {timeout_s} s): "
        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; did all "
        f"{spec.num_processes} processes start, with the same coordinator?") from e
  _log_and_check(spec, expected_devices)


def _log_and_check(spec, expected_devices):
  if spec is not None and spec.num_processes and jax.process_count() != spec.num_processes:
    raise DistributedError(f"{jax.process_count()} processes joined, "
                           f"num_processes says {spec.num_processes}")
  logging.info("process %d of %d; %d local / %d global devices (%s)",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(), jax.default_backend())
  if expected_devices is not None and jax.device_count() != int(expected_devices):
    raise DistributedError(
        f"{jax.device_count()} devices in the run ({jax.process_count()} processes x "
        f"{jax.local_device_count()} local), {expected_devices} expected")


def maybe_initialize(*, coordinator_address=None, num_processes=None, process_id=None,
                     local_device_ids=None, timeout_s=None, expected_devices=None):
  """Initialises JAX's distributed runtime when this is a multi-process run.

  Arguments default to the absl flags of this module (when parsed), then the
  environment (module docstring). Returns the ClusterSpec (None: one process).
  """
  spec = detect(coordinator_address=coordinator_address or _flag(_COORD),
                num_processes=num_processes if num_processes is not None else _flag(_NUM),
                process_id=process_id if process_id is not None else _flag(_PID),
                local_device_ids=local_device_ids or _flag(_LOCAL))
  if timeout_s is None:
    timeout_s = _flag(_TIMEOUT) or 300
  initialize(spec, timeout_s=timeout_s, expected_devices=expected_devices)
  return spec
