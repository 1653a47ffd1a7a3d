"""The expert-parallel MoE path (moe/expert_parallel.py) against the single-device layer.

One subprocess with 8 simulated CPU devices (tests/moe/expert_parallel_worker.py;
the suite's own processes have 4) runs an 8-expert layer with a shared
expert on one device and under `jax.set_mesh` on expert=4 x data=2 and
expert=8 meshes: in invariant mode the output is bit-identical (top_k 2 and
3), in default mode (ragged_dot) equal within float reordering; gradients
match within tolerance in both. The companion: the same mesh with the
experts rolled onto the wrong devices differs, so the comparison can fail.
"""

import json

import pytest

from interaction import sharding as sh
from moe import expert_parallel as ep
from tests.workers import run_worker


@pytest.fixture(scope="module")
def cases():
  out = run_worker("tests.moe.expert_parallel_worker", devices=8)
  rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  return {(r["mesh"], r["mode"], r["top_k"]): r for r in rows}


@pytest.mark.parametrize("mesh", ["expert=4,data=2", "expert=8"])
@pytest.mark.parametrize("mode", ["invariant", "default"])
def test_matches_the_single_device_layer(cases, mesh, mode):
  r = cases[(mesh, mode, 2)]
  assert r["devices"] == 8 and r["exchanged"], r      # it ran the explicit exchange
  if mode == "invariant":
    assert r["bit_identical"], r
  assert r["y_err"] <= 2e-5 * max(1.0, r["y_scale"]), r
  assert r["grad_err"] <= 2e-5 * max(1.0, r["grad_scale"]), r


def test_bit_identical_with_three_slots_per_token(cases):
  """k=3: the slots are still added in the single-device order."""
  r = cases[("expert=4,data=2", "invariant", 3)]
  assert r["bit_identical"], r


@pytest.mark.parametrize("mesh", ["expert=4,data=2", "expert=8"])
def test_experts_on_the_wrong_devices_differ(cases, mesh):
  """The companion: each device holding another device's experts changes the
  output by far more than the tolerance above."""
  r = cases[(mesh, "invariant", 2)]
  assert r["rolled_err"] > 1e-2 * max(1.0, r["y_scale"]), r


# ---------------------------------------------------------------------------
# No devices needed
# ---------------------------------------------------------------------------
def test_token_layout_is_the_sharding_modules():
  assert ep.BATCH_AXES == sh.BATCH_AXES
  assert ep.EXPERT_AXIS in sh.AXES and ep.SEQUENCE_AXIS in sh.AXES


def test_token_spec_and_fallback():
  from jax.sharding import PartitionSpec as P
  mesh = sh.abstract_mesh("data=2,expert=4", 8)
  assert ep.token_spec(mesh, (8, 6, 16)) == P(("data", "expert"), None, None)
  assert ep.token_spec(mesh, (4, 6, 16)) is None     # 4 rows over 8: the layer's own path
  mesh = sh.abstract_mesh("expert=2,sequence=2", 4)
  assert ep.token_spec(mesh, (2, 6, 16)) == P("expert", "sequence", None)
  assert ep.token_spec(mesh, (2, 5, 16)) is None
  assert ep.expert_mesh() is None                    # no context mesh: not taken
