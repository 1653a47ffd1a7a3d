"""Compile-only dry runs (experiments/compile_only.py) on abstract meshes.

The tiny model's train and streaming steps lower for a 16-device cluster this
machine does not have; tml_small's per-device parameter and optimizer bytes
on 64 and 256 GPUs equal a hand count from its shapes (BENCHMARKS.md); a mesh
that does not fit is refused before anything is traced.
"""

import json

import pytest


def _summary(result):
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_tiny_lowers_on_an_abstract_16_device_mesh(run_module):
  r = run_module("experiments.compile_only", "--config=experiments/configs/tiny.py",
                 "--devices=16", "--mesh=data=2,fsdp=2,expert=2,tensor=2",
                 "--batch_size=8", "--platform=cuda", timeout=120)
  s = _summary(r)
  assert s["mesh"] == "data=2,fsdp=2,expert=2,tensor=2"
  assert s["train_step_lower_s"] > 0 and s["streaming_step_lower_s"] > 0
  assert "parameters" in r.stdout and "fits in 141 GiB" in r.stdout


def _hand_count_bytes(devices_fsdp, expert):
  """tml_small per device, bf16: the routed experts split E over `expert` and
  d_model over fsdp; everything else over fsdp only."""
  layers, e, d, f = 48, 256, 4096, 1824
  total = 278_728_077_632                     # experiments.param_count
  routed = layers * e * 3 * d * f              # 275,414,777,856
  rest = total - routed                        # 3,313,299,776
  return 2 * (routed // (expert * devices_fsdp) + rest // devices_fsdp)


@pytest.mark.parametrize("devices, mesh, fsdp, expert", [
    (64, "fsdp=8,expert=8", 8, 8), (256, "fsdp=32,expert=8", 32, 8)])
def test_tml_small_memory_table_matches_the_hand_count(run_module, devices, mesh, fsdp, expert):
  r = run_module("experiments.compile_only", "--config=experiments/configs/tml_small.py",
                 f"--devices={devices}", f"--mesh={mesh}", "--nolower", timeout=120)
  s = _summary(r)
  gib = 2 ** 30
  hand = _hand_count_bytes(fsdp, expert)
  assert s["params_gib"] == pytest.approx(hand / gib, rel=1e-3)
  assert s["grads_gib"] == s["params_gib"]
  assert s["opt_state_gib"] == pytest.approx(2 * hand / gib, rel=1e-3)   # mu + nu, bf16
  # 5-minute examples of batch 256 do not fit without rematerialisation: said so.
  assert "DOES NOT FIT" in r.stdout


def test_mesh_that_does_not_fit_is_refused_before_tracing(run_module):
  r = run_module("experiments.compile_only", "--config=experiments/configs/tml_small.py",
                 "--devices=64", "--mesh=tensor=64", "--nolower", timeout=60)
  assert r.returncode == 2
  assert "model.num_heads=32 is not divisible by tensor=64" in r.stderr
  r = run_module("experiments.compile_only", "--config=experiments/configs/tml_small.py",
                 "--devices=64", "--mesh=fsdp=8,expert=4", "--nolower", timeout=60)
  assert r.returncode == 2 and "32 devices in the mesh but 64 devices" in r.stderr
