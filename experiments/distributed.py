"""Multi-process start-up: one `maybe_initialize()` for every entry point.

JAX's own cluster detection covers SLURM (SLURM_JOB_ID, SLURM_NTASKS, ...) and
Open MPI, so a bare `jax.distributed.initialize()` is the standard recipe
under `srun` (one task per GPU). Single-process runs skip it. The scale-out
issue adds explicit coordinator flags and launch scripts on top of this.
"""

import os

import jax
from absl import logging


def _in_cluster() -> bool:
  return (int(os.environ.get("SLURM_NTASKS", "1")) > 1
          or int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
          or "JAX_COORDINATOR_ADDRESS" in os.environ)


def maybe_initialize():
  if _in_cluster() and not jax.distributed.is_initialized():
    jax.distributed.initialize()
  logging.info("process %d of %d; %d local / %d global devices (%s)",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               jax.default_backend())
