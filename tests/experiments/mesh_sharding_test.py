"""The tiny model on device meshes: same losses on every layout; bad meshes refused.

Each mesh runs on 8 simulated CPU devices in its own subprocess
(tests/experiments/mesh_sharding_worker.py; the suite's own processes have 4):
two train steps (their losses, i.e. the forward, grad norms and the updated
parameters) on (8 data), (2 data x 4 fsdp), (2 data x 2 tensor x 2
sequence) and (4 expert x 2 data), each against the trainer's step on one
device in the test process. The rest needs
no devices: mesh strings, partition rules and the checks that refuse a mesh
that does not divide the devices or the model, naming both.
"""

import json
import os
import subprocess
import sys

import pytest
from jax.sharding import PartitionSpec as P

from interaction import sharding as sh

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MESHES = ("data=8", "data=2,fsdp=4", "data=2,tensor=2,sequence=2", "expert=4,data=2")


@pytest.fixture(scope="module")
def reference():
  """Two train steps of the trainer's own jitted step on one device."""
  import jax
  import numpy as np
  from experiments import trainer
  from tests.experiments import mesh_sharding_worker as w
  config = w.tiny_config()
  state = trainer.create_train_state(config)
  step = trainer.make_train_step(config)
  losses, norms = [], []
  for batch in w.batches(config):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
    norms.append(float(metrics["grad_norm"]))
  return {"losses": losses, "grad_norms": norms,
          "params": w.flat_params(jax.tree_util.tree_map(np.asarray, state["params"]))}


def run_mesh(mesh, tmp_path):
  import numpy as np
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  npz = tmp_path / "params.npz"
  out = subprocess.run([sys.executable, "-m", "tests.experiments.mesh_sharding_worker",
                        mesh, str(npz)], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  with np.load(npz) as f:
    got["params"] = {k: f[k] for k in f.files}
  return got


EXPECTED_LAYOUT = {
    "data=8": dict(batch_spec=P("data", None), q_spec=P(None, None),
                   w_gate_spec=P(None, None, None)),
    "data=2,fsdp=4": dict(batch_spec=P(("data", "fsdp"), None), q_spec=P("fsdp", None),
                          w_gate_spec=P(None, "fsdp", None)),
    "data=2,tensor=2,sequence=2": dict(batch_spec=P("data", "sequence"),
                                       q_spec=P("tensor", None),
                                       w_gate_spec=P(None, None, None)),
    "expert=4,data=2": dict(batch_spec=P(("data", "expert"), None), q_spec=P(None, None),
                            w_gate_spec=P("expert", None, None)),
}


@pytest.mark.parametrize("mesh", MESHES)
def test_train_steps_match_one_device(reference, mesh, tmp_path):
  """Same losses (the forward), grad norms and updated parameters as one
  device, with the intended layout."""
  import numpy as np
  got = run_mesh(mesh, tmp_path)
  assert got["devices"] == 8
  np.testing.assert_allclose(got["losses"], reference["losses"], rtol=2e-5)
  np.testing.assert_allclose(got["grad_norms"], reference["grad_norms"], rtol=1e-4)
  assert sorted(got["params"]) == sorted(reference["params"])
  worst = max(float(np.max(np.abs(got["params"][k] - v))) for k, v in reference["params"].items())
  assert worst < 1e-5, worst
  for key, spec in EXPECTED_LAYOUT[mesh].items():
    assert got[key] == str(spec), (key, got[key], spec)
  assert got["mu_q_spec"] == got["q_spec"]          # AdamW moments follow the parameter


# ---------------------------------------------------------------------------
# No devices needed
# ---------------------------------------------------------------------------
def test_parse_mesh():
  assert sh.parse_mesh("data=2,fsdp=4", 8) == {
      "data": 2, "fsdp": 4, "expert": 1, "sequence": 1, "tensor": 1}
  assert sh.parse_mesh("tensor=2,data=-1", 8)["data"] == 4
  assert sh.parse_mesh("", 8)["data"] == 8
  assert sh.mesh_string(sh.parse_mesh("expert=4,data=2", 8)) == "data=2,expert=4"


@pytest.mark.parametrize("text, devices, words", [
    ("data=3", 8, ["'data=3'", "3 devices in the mesh", "8 devices"]),
    ("data=2,fsdp=2", 8, ["4 devices in the mesh", "8 devices"]),
    ("tensor=3,data=-1", 8, ["fixed axes (3 devices)", "do not divide", "8"]),
    ("data=-1,fsdp=-1", 8, ["only one axis may be -1"]),
    ("model=8", 8, ["unknown axis 'model'"]),
    ("data=two", 8, ["'two'", "not an integer"]),
    ("data=0", 8, ["must be positive"]),
    ("data", 8, ["not AXIS=SIZE"]),
])
def test_bad_mesh_strings_name_the_problem(text, devices, words):
  with pytest.raises(ValueError) as e:
    sh.parse_mesh(text, devices)
  for w in words:
    assert w in str(e.value), str(e.value)


def test_mesh_that_does_not_divide_the_model_is_refused(tiny_config):
  sizes = sh.parse_mesh("tensor=8", 8)
  with pytest.raises(ValueError) as e:
    sh.check_model_fits(tiny_config, sizes)
  msg = str(e.value)
  assert "'tensor=8'" in msg
  assert "model.num_heads=4 is not divisible by tensor=8" in msg
  assert "model.num_kv_heads=2 is not divisible by tensor=8" in msg
  with pytest.raises(ValueError, match=r"model.moe.num_experts=4 is not divisible by expert=8"):
    sh.check_model_fits(tiny_config, sh.parse_mesh("expert=8", 8), batch_size=8)
  with pytest.raises(ValueError, match=r"data.batch_size=2 is not divisible by data\*fsdp\*expert=8"):
    sh.check_model_fits(tiny_config, sh.parse_mesh("data=8", 8))
  with pytest.raises(ValueError, match=r"data.turns=6 is not divisible by sequence=4"):
    sh.check_model_fits(tiny_config, sh.parse_mesh("sequence=4", 4))
  sh.check_model_fits(tiny_config, sh.parse_mesh("data=2,tensor=2,sequence=2", 8),
                      batch_size=2)


def test_partition_rules_from_the_parameters_names(tiny_config):
  from experiments.mesh import state_specs
  sizes = sh.parse_mesh("data=2,fsdp=2,expert=2,tensor=2", 16)
  specs = state_specs(tiny_config, sizes)
  blocks = specs["params"]["blocks"]
  assert blocks[0]["attn"]["q"]["weight"] == P("tensor", "fsdp")   # [out, in]
  assert blocks[0]["attn"]["o"]["weight"] == P("fsdp", "tensor")
  assert blocks[0]["ffn"]["down"]["weight"] == P("fsdp", "tensor")
  assert blocks[1]["ffn"]["w_gate"] == P("expert", "fsdp", None)  # [E, d=32, f=32]: first largest
  assert blocks[1]["ffn"]["w_router"] == P("fsdp", None)
  assert specs["step"] == P() and specs["rng"] == P()
  # The AdamW moments follow their parameters; the count is replicated.
  import jax
  flat = {jax.tree_util.keystr(p): s for p, s in jax.tree_util.tree_flatten_with_path(
      specs["opt_state"], is_leaf=lambda x: isinstance(x, P))[0]}
  mu = [s for k, s in flat.items() if "mu" in k and "w_gate" in k]
  assert mu == [P("expert", "fsdp", None)], flat
  assert all(s == P() for k, s in flat.items() if "count" in k)
  # Replicated on a mesh whose axes are all 1.
  one = state_specs(tiny_config, sh.parse_mesh("data=1", 1))
  assert all(s == P() or all(e is None for e in s) for s in jax.tree_util.tree_leaves(
      one, is_leaf=lambda x: isinstance(x, P)))


def test_kv_cache_and_batch_specs():
  sizes = sh.parse_mesh("data=2,tensor=2,sequence=2", 8)
  assert sh.kv_cache_spec(sizes) == P("data", None, "tensor", None)
  specs = sh.batch_specs({"user_audio": (8, 6, 16, 80), "first_turn": (8,)}, sizes)
  assert specs == {"user_audio": P("data", "sequence"), "first_turn": P("data")}


def test_checkpoint_saved_on_one_mesh_restores_on_another(tmp_path, tiny_config):
  """A sharded state saved from (2 data x 2 fsdp) restores into (2 expert x 2
  tensor), each array in the new layout, every value unchanged; a single-device
  trainer checkpoint restores onto a mesh the same way."""
  import jax
  import numpy as np
  from experiments import checkpointing
  from experiments.mesh import MeshTrainer, restore_sharded
  if jax.device_count() < 4:
    pytest.skip("needs 4 CPU devices (tests/conftest.py sets them)")
  devices = jax.devices()[:4]
  config = tiny_config
  config.data.batch_size = 4
  a = MeshTrainer(config, sh.make_mesh("data=2,fsdp=2", devices=devices))
  state = a.init_state()
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  ckpt.save(3, state, {"step": 3}, checkpointing.structure_meta(config))
  ckpt.wait()
  ckpt.close()
  b = MeshTrainer(config, sh.make_mesh("expert=2,tensor=2", devices=devices))
  restored, data_state, step = restore_sharded(str(tmp_path), config, b)
  assert step == 3 and data_state == {"step": 3}
  w = restored["params"]["blocks"][1]["ffn"]["w_gate"]
  assert w.sharding.spec == P("expert", None, None)
  assert restored["params"]["blocks"][0]["attn"]["q"]["weight"].sharding.spec == P("tensor", None)
  for x, y in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # The mesh's initial state is the trainer's own (same seed, same bits).
  from experiments import trainer
  host = trainer.create_train_state(config)
  for x, y in zip(jax.tree_util.tree_leaves(host["params"]),
                  jax.tree_util.tree_leaves(state["params"])):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
