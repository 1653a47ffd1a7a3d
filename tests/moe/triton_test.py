"""Triton gather+GEMV: the jax-triton wrapper traces on CPU; the kernel source,
run under Triton's interpreter on torch CPU tensors, equals the XLA path.

The interpreter needs torch. The venv's Python 3.12 has no CPU torch wheel
reachable here, so the interpreter run happens in a subprocess whose Python
has torch + triton + numpy: $MOE_TRITON_PYTHON, else this interpreter if it
has torch, else .venv/triton-py311/bin/python (see WORKSPACE.md, moe section,
for how CI builds it). Arrays go through .npz / .npy files.
"""

import functools
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moe import gather_gemv as gg

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_SIDE_PYTHON = REPO / ".venv" / "triton-py311" / "bin" / "python"


@functools.lru_cache(maxsize=None)
def interpreter_python():
  """(python, why-not) for a Python with torch, triton and numpy."""
  candidates = []
  if os.environ.get("MOE_TRITON_PYTHON"):
    candidates.append(os.environ["MOE_TRITON_PYTHON"])
  candidates += [sys.executable, str(DEFAULT_SIDE_PYTHON)]
  for python in candidates:
    if not pathlib.Path(python).exists():
      continue
    probe = subprocess.run([python, "-c", "import torch, triton, numpy"],
                           capture_output=True, timeout=120)
    if probe.returncode == 0:
      return python, ""
  return None, ("torch is not installed: Triton's interpreter (TRITON_INTERPRET=1) "
                "needs torch CPU tensors; set MOE_TRITON_PYTHON to a Python with "
                f"torch, triton and numpy, or build {DEFAULT_SIDE_PYTHON}")


def run_interpreter(tmp_path, arrays, **blocks):
  python, why = interpreter_python()
  if python is None:
    pytest.skip(why)
  src, dst = tmp_path / "in.npz", tmp_path / "out.npy"
  np.savez(src, **{k: np.asarray(v) for k, v in arrays.items()}, **blocks)
  env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO))
  env.pop("JAX_PLATFORMS", None)
  proc = subprocess.run([python, str(REPO / "tests" / "moe" / "triton_worker.py"), str(src),
                         str(dst)],
                        env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return np.load(dst)


def problem(t, num_experts, k, d, f, seed=0):
  ks = jax.random.split(jax.random.key(seed), 6)
  return dict(
      x=jax.random.normal(ks[0], (t, d)),
      expert_ids=jax.random.randint(ks[1], (t, k), 0, num_experts, jnp.int32),
      gates=jax.random.uniform(ks[2], (t, k)),
      w_gate=jax.random.normal(ks[3], (num_experts, d, f)) * d ** -0.5,
      w_up=jax.random.normal(ks[4], (num_experts, d, f)) * d ** -0.5,
      w_down=jax.random.normal(ks[5], (num_experts, f, d)) * f ** -0.5)


def test_triton_call_wrapper_traces_on_cpu():
  pytest.importorskip("jax_triton", reason="jax-triton is not installed")
  from moe import triton_gather_gemv as tg
  p = problem(3, 8, 2, 32, 48)
  traced = jax.jit(tg.gather_gemv_triton).trace(*p.values())
  calls = [e for e in traced.jaxpr.eqns if e.primitive.name == "triton_kernel_call"]
  assert [c.params["fn"].fn.__name__ for c in calls] == ["gate_up_kernel", "down_kernel"]
  assert [c.outvars[0].aval.shape for c in calls] == [(6, 48), (3, 32)]
  assert traced.out_info.shape == (3, 32)
  # The MoE layer reaches it through gather_gemv(kernel='triton').
  traced = jax.jit(functools.partial(gg.gather_gemv, kernel="triton")).trace(*p.values())
  assert "triton_kernel_call" in str(traced.jaxpr)


@pytest.mark.parametrize("t,num_experts,k,d,f,blocks", [
    (5, 8, 2, 48, 80, dict(block_d=16, block_f=32)),   # ragged tails in both dims
    (3, 4, 1, 64, 64, dict(block_d=64, block_f=64))])
def test_triton_interpreter_matches_xla(tmp_path, t, num_experts, k, d, f, blocks):
  p = problem(t, num_experts, k, d, f)
  got = run_interpreter(tmp_path, p, **blocks)
  want = np.asarray(gg.gather_gemv_xla(*p.values()))
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5)


def test_triton_interpreter_is_batch_invariant(tmp_path):
  p = problem(6, 8, 2, 32, 48)
  full = run_interpreter(tmp_path, p, block_d=16, block_f=16)
  alone = run_interpreter(tmp_path, {n: v[:1] if n in ("x", "expert_ids", "gates") else v
                                     for n, v in p.items()}, block_d=16, block_f=16)
  np.testing.assert_array_equal(alone[0], full[0])
