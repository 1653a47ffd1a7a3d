"""Runs the MoE Triton kernels on torch CPU tensors under Triton's interpreter.

  TRITON_INTERPRET=1 PYTHONPATH=REPO python tests/moe/triton_worker.py IN.npz OUT.npy

A test helper, not an entry point: tests/moe/triton_test.py runs it in a side
Python that has torch and triton (and no JAX), since no CPU torch wheel for the
project's Python is reachable. Arrays go through .npz / .npy files.
"""

import os
import sys

from moe.triton_kernels import run_torch


def _main(argv):
  """IN.npz (x, expert_ids, gates, w_gate, w_up, w_down[, block_d, block_f]) -> OUT.npy."""
  if len(argv) != 3:
    print("usage: TRITON_INTERPRET=1 python tests/moe/triton_worker.py IN.npz OUT.npy",
          file=sys.stderr)
    return 2
  if os.environ.get("TRITON_INTERPRET") != "1":
    print("warning: TRITON_INTERPRET is not 1; this needs a GPU", file=sys.stderr)
  import numpy as np
  import torch
  data = np.load(argv[1])
  names = ("x", "expert_ids", "gates", "w_gate", "w_up", "w_down")
  tensors = [torch.from_numpy(np.ascontiguousarray(data[n])) for n in names]
  blocks = {n: int(data[n]) for n in ("block_d", "block_f") if n in data}
  y = run_torch(*tensors, **blocks)
  np.save(argv[2], y.numpy())
  return 0


if __name__ == "__main__":
  sys.exit(_main(sys.argv))
