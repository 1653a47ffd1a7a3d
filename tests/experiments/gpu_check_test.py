"""`python -m experiments.gpu_check --dry_run` on the CPU: everything lowers for an
abstract H200, the Triton kernels compile to sm_90a, one JSON line at the end."""

import json

import pytest


@pytest.mark.integration
def test_dry_run_lowers_everything(run_module, tmp_path):
  out = tmp_path / "gpu_check.json"
  # demo's kernels compiled to sm_90a; tml_small's lowered only (its compiles
  # are in tests/pallas_kernels/gpu_lowering_test.py), to keep this short.
  # The model lowering has its own test (gpu_model_lowering_test.py).
  proc = run_module("experiments.gpu_check", "--dry_run", "--shapes=demo",
                    "--model=", f"--out={out}")
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  result = json.loads(lines[-1])
  assert result["ok"] and result["dry_run"] and not result["failed"]
  assert json.loads(out.read_text()) == result
  names = [r["case"] for r in result["kernels"]]
  assert "attention_decode[demo]" in names and "matmul_nk.grad[demo]" in names
  for rec in result["kernels"]:
    assert rec["lowered"] and rec["would_run"], rec
    if rec["backward"] is None:
      assert all(c["arch"] == "sm_90a" for c in rec["sm_90a"]), rec
  moe = {r["case"]: r for r in result["moe"]}
  assert moe["gather_gemv.triton_source[tml_small]"]["ok"]
  assert moe["gather_gemv.pallas_tpu[small]"]["ok"]
  assert any(line.startswith("ok   attention_prefill[demo]: Triton _partials_kernel")
             for line in lines)


def test_without_a_gpu_it_says_to_use_dry_run(run_module):
  proc = run_module("experiments.gpu_check", "--shapes=demo", timeout=120)
  assert proc.returncode == 2
  assert "no GPU here" in proc.stderr and "--dry_run" in proc.stderr
