"""MoE layer: every impl matches the `loop` reference, forward and gradients."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from moe import grouped_gemm
from moe import layer as layer_lib
from moe import router as router_lib
from moe.config import MoEConfig
from moe.layer import MoE, expert_param_count
from pallas_kernels.numerics import Numerics

IMPLS = ("dense", "ragged_dot", "gather_gemv")


def make(d=16, num_experts=8, top_k=2, d_ff=24, shared=0, gating="softmax",
         impl="auto", dtype=jnp.float32, numerics=Numerics(), seed=0, **extra):
  cfg = MoEConfig(num_experts=num_experts, top_k=top_k, d_ff=d_ff,
                  num_shared_experts=shared, gating=gating, impl=impl, **extra)
  return MoE(d, cfg, numerics=numerics, rngs=nnx.Rngs(seed), dtype=dtype,
             param_dtype=dtype), cfg


def tol(dtype):
  return {"float32": 2e-5, "bfloat16": 3e-2}[jnp.dtype(dtype).name]


def forward_and_grads(model, x, impl):
  """Output, and grads w.r.t. params and x of a loss using y and the aux losses."""
  graphdef, params = nnx.split(model, nnx.Param)

  def loss_fn(params, x):
    m = nnx.merge(graphdef, params)
    y, aux = m(x, impl=impl)
    w = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
    return (jnp.sum(y.astype(jnp.float32) * w) + aux["load_balance_loss"]
            + aux["z_loss"]), y

  (_, y), grads = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True))(
      params, x)
  return y, grads


def assert_close(a, b, atol, what):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  scale = max(1.0, float(np.max(np.abs(b))))
  err = float(np.max(np.abs(a - b))) if a.size else 0.0
  assert err <= atol * scale, f"{what}: max err {err} > {atol} * {scale}"


# Together the fast cases cover E in {4, 8, 64}, k in {1, 2, 8} and 1..512
# tokens; the slow ones add the other pairings.
@pytest.mark.parametrize("num_experts,top_k,tokens", [
    (4, 1, 1), (8, 8, 33), (64, 2, 512),
    pytest.param(8, 2, 5, marks=pytest.mark.slow),
    pytest.param(64, 8, 16, marks=pytest.mark.slow)])
def test_impls_match_loop_forward_and_grad(num_experts, top_k, tokens):
  model, _ = make(num_experts=num_experts, top_k=top_k, shared=1)
  x = jax.random.normal(jax.random.key(tokens), (1, tokens, 16))
  y_ref, g_ref = forward_and_grads(model, x, "loop")
  for impl in IMPLS:
    y, g = forward_and_grads(model, x, impl)
    assert_close(y, y_ref, tol(jnp.float32), f"{impl} forward")
    for path, a, b in zip(jax.tree_util.tree_leaves_with_path(g), jax.tree.leaves(g),
                          jax.tree.leaves(g_ref)):
      assert_close(a, b, tol(jnp.float32), f"{impl} grad {jax.tree_util.keystr(path[0])}")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_uneven_load_and_empty_experts(dtype):
  """13 token-slots on expert 5, one on expert 0, experts 1-4, 6, 7 get none."""
  t, num_experts, d, f = 7, 8, 16, 24
  ids = np.full((t, 2), 5, np.int32)
  ids[0, 0] = 0  # slot 0 of token 0; every other slot (13) on expert 5
  routing = router_lib.Routing(
      expert_ids=jnp.asarray(ids),
      gates=jax.random.uniform(jax.random.key(1), (t, 2)),
      load_balance_loss=jnp.float32(0), z_loss=jnp.float32(0))
  ks = jax.random.split(jax.random.key(2), 4)
  x = jax.random.normal(ks[0], (t, d)).astype(dtype)
  w = [(jax.random.normal(k, s) * 0.2).astype(dtype)
       for k, s in zip(ks[1:], [(num_experts, d, f)] * 2 + [(num_experts, f, d)])]
  y_ref = layer_lib.ffn_loop(x, routing, *w)
  for name, fn in [("dense", layer_lib.ffn_dense), ("ragged_dot", layer_lib.ffn_ragged_dot),
                   ("gather_gemv", layer_lib.ffn_gather_gemv)]:
    assert_close(fn(x, routing, *w), y_ref, tol(dtype), name)
  padded = grouped_gemm.padded_grouped_ffn(x, routing.expert_ids, routing.gates, *w,
                                           capacity=13)
  assert_close(padded, y_ref, tol(dtype), "padded_grouped")


def test_interface_shapes_and_param_count():
  model, cfg = make(d=16, num_experts=4, top_k=2, d_ff=8, shared=2)
  y, aux = model(jnp.ones((2, 3, 16)))
  assert y.shape == (2, 3, 16) and y.dtype == jnp.float32
  assert set(aux) == {"load_balance_loss", "z_loss"}
  assert all(v.shape == () and v.dtype == jnp.float32 for v in aux.values())
  assert expert_param_count(16, cfg) == 3 * 16 * 8
  counts = layer_lib.layer_param_counts(16, cfg)
  n_params = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert counts["total"] == n_params
  assert counts["active"] == (2 + 2) * 3 * 16 * 8 + 16 * 4


def test_expert_weights_carry_expert_sharding_names():
  model, _ = make()
  specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
  for name in ("w_gate", "w_up", "w_down"):
    assert tuple(specs[name].get_value()) == ("expert", None, None)


def test_auto_resolution():
  default, invariant = Numerics(), Numerics(mode="invariant")
  assert layer_lib.resolve_impl("auto", 16, 16, default) == "gather_gemv"
  assert layer_lib.resolve_impl("auto", 17, 16, default) == "ragged_dot"
  for tokens in (1, 17, 4096):
    assert layer_lib.resolve_impl("auto", tokens, 16, invariant) == "gather_gemv"
  assert layer_lib.resolve_impl("dense", 1, 16, invariant) == "dense"
  with pytest.raises(ValueError, match="moe.impl"):
    layer_lib.resolve_impl("fast", 1, 16, default)


@pytest.mark.parametrize("field,value", [
    ("impl", "fast"), ("gating", "relu"), ("top_k", 9), ("num_experts", 0),
    ("d_ff", 0), ("top_k", 0), ("num_shared_experts", -1), ("auto_threshold", -1),
    ("gemv_kernel", "cuda"), ("router_dtype", "int32"),
    ("load_balance_weight", -1.0), ("z_loss_weight", float("nan"))])
def test_bad_config_raises(field, value):
  with pytest.raises(ValueError, match=rf"model\.moe\.{field}"):
    make(**{"shared" if field == "num_shared_experts" else field: value})


def test_from_config_reads_every_field():
  """ConfigDict -> MoEConfig keeps every value; a missing field is an error
  (no silent default: the base config defines them all)."""
  cfg = MoEConfig(num_experts=16, top_k=4, d_ff=40, num_shared_experts=2,
                  gating="sigmoid", impl="dense", auto_threshold=3,
                  load_balance_weight=0.5, z_loss_weight=0.25,
                  router_dtype="bfloat16", gemv_kernel="pallas")
  assert all(getattr(cfg, f.name) != f.default for f in dataclasses.fields(cfg))
  as_dict = ml_collections.ConfigDict(dataclasses.asdict(cfg))
  assert MoEConfig.from_config(as_dict) == cfg
  del as_dict["gemv_kernel"]
  with pytest.raises(AttributeError, match="gemv_kernel"):
    MoEConfig.from_config(as_dict)


def test_moe_takes_a_typed_config_only():
  with pytest.raises(TypeError, match="MoEConfig"):
    MoE(16, ml_collections.ConfigDict(dataclasses.asdict(MoEConfig())),
        numerics=Numerics(), rngs=nnx.Rngs(0))


def test_gemv_kernel_auto_follows_kernels_impl():
  resolve = layer_lib.resolve_gemv_kernel
  assert resolve("auto", Numerics(impl="pallas")) == "pallas"
  assert resolve("auto", Numerics(impl="xla")) == "xla"
  assert resolve("auto", Numerics(impl="xla_blocked")) == "xla"
  assert resolve("triton", Numerics(impl="pallas")) == "triton"
  model, _ = make(gemv_kernel="auto", numerics=Numerics(impl="xla_blocked"))
  assert model.gemv_kernel == "xla"


def test_bad_input_raises():
  model, _ = make()
  with pytest.raises(ValueError, match="d_model"):
    model(jnp.ones((2, 3, 5)))


def test_tml_small_layer_param_counts_match_the_module():
  """Accounting vs the real module's shapes (nnx.eval_shape: nothing allocated).

  The layer of experiments/configs/tml_small.py (d_model 4096, 48 layers);
  tests/experiments/configs_test.py checks that config's totals.
  """
  d_model, num_layers = 4096, 48
  moe = MoEConfig(num_experts=256, top_k=8, d_ff=1824, num_shared_experts=1,
                  gating="sigmoid")
  abstract = nnx.eval_shape(lambda: MoE(d_model, moe, numerics=Numerics(),
                                        rngs=nnx.Rngs(0), dtype=jnp.bfloat16,
                                        param_dtype=jnp.bfloat16))
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  counts = layer_lib.layer_param_counts(d_model, moe)
  assert counts["total"] == n_params
  expert = expert_param_count(d_model, moe)
  assert counts["total"] - counts["active"] == (moe.num_experts - moe.top_k) * expert
  # 48 MoE layers: routed experts hold ~97% of tml_small's parameters, and the
  # active ones ~9B of its ~12B active.
  assert 270e9 < num_layers * counts["total"] < 280e9
  assert 8e9 < num_layers * counts["active"] < 12e9


def test_expert_weights_are_sharded_over_an_expert_mesh_axis():
  """Under a mesh with an 'expert' axis the E dimension is split across devices.

  Auto axes: XLA inserts the collectives. (Under Explicit axes the per-token
  expert indexing raises ShardingTypeError until the scale-out issue adds the
  token exchange.)
  """
  if len(jax.devices()) < 4:
    pytest.skip("needs 4 host devices (tests/conftest.py sets them)")
  mesh = jax.make_mesh((4,), ("expert",), axis_types=(jax.sharding.AxisType.Auto,))
  with jax.set_mesh(mesh):
    model, _ = make(num_experts=8)
    y, _ = model(jnp.ones((1, 3, 16)))
  sharding = model.w_gate[...].sharding
  assert tuple(sharding.spec) == ("expert", None, None)
  assert {s.data.shape for s in model.w_gate[...].addressable_shards} == {(2, 16, 24)}
  assert y.shape == (1, 3, 16)
