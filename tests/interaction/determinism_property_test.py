"""Property-based determinism of the model's heads and sessions (issue 12).

Hypothesis draws what the fixed tests do not vary, in f32 with every
parameter perturbed (tests/interaction/nontrivial.py, so the flow head's
velocity is not zero):

- the flow head's Euler sample: head widths, depths, step counts, batch sizes
  on both sides of a row block, kernel paths; a row alone == in any batch;
- a free-running session of a very small model (one MoE layer, as many KV
  heads as query heads, no video) for 100-160 micro-turns past eviction: a
  session alone == the same session at a random row of a batch of 3 with
  other inputs and seeds, in every output.

Fixed example budgets (tests/property_budget.py); each prints its case count.
Compiling a session step is the cost here, so the session property keeps one
model, capacity and batch size and draws row, seeds, inputs and length.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from hypothesis import strategies as st

from experiments.configs import tiny
from interaction.config import FlowConfig
from interaction.flow_head import FlowHead, euler_sample
from interaction.params import init_params
from interaction.streaming import SessionRunner, TurnInputs
from pallas_kernels import numerics as nm
from tests.interaction.nontrivial import perturbed
from tests.property_budget import check_property


# ---------------------------------------------------------------------------
# The flow head.
# ---------------------------------------------------------------------------
@st.composite
def flow_cases(draw):
  m1, m2 = draw(st.integers(1, 12)), draw(st.integers(1, 12))
  return dict(
      impl=draw(st.sampled_from(["xla", "xla_blocked"])),
      d_model=draw(st.sampled_from([8, 16, 32])),
      d_out=draw(st.sampled_from([12, 80, 320])),
      width=draw(st.sampled_from([16, 32, 64])), depth=draw(st.integers(0, 2)),
      steps=draw(st.integers(1, 4)), m1=m1, m2=m2,
      row=draw(st.integers(0, min(m1, m2) - 1)),
      seed=draw(st.integers(0, 2**16)))


def _flow_property(c):
  numerics = nm.Numerics(mode="invariant", impl=c["impl"])
  head = FlowHead(c["d_model"], c["d_out"],
                  FlowConfig(width=c["width"], depth=c["depth"]),
                  numerics=numerics, rngs=nnx.Rngs(c["seed"]))
  graphdef, state = nnx.split(head)
  state = perturbed(state, seed=c["seed"], scale=0.1)
  # Parameters as arguments, as a session passes them.
  fn = jax.jit(lambda s, h, x: euler_sample(nnx.merge(graphdef, s), h, x,
                                            c["steps"]))
  rng = np.random.default_rng(c["seed"])
  r = c["row"]
  h_row = rng.standard_normal(c["d_model"]).astype(np.float32)
  x_row = rng.standard_normal(c["d_out"]).astype(np.float32)

  def sample(m):
    h = rng.standard_normal((m, c["d_model"])).astype(np.float32)
    x = rng.standard_normal((m, c["d_out"])).astype(np.float32)
    h[r % m], x[r % m] = h_row, x_row
    return np.asarray(fn(state, jnp.asarray(h), jnp.asarray(x)))[r % m]

  want = sample(c["m1"])
  assert np.abs(want - x_row).max() > 1e-3          # the head moves the noise
  np.testing.assert_array_equal(sample(c["m2"]), want, err_msg="m2 != m1 rows")
  np.testing.assert_array_equal(sample(1), want, err_msg="alone != in a batch")


def test_flow_head_batch_property(capsys):
  check_property(capsys, "flow head rows", flow_cases(), _flow_property,
                 max_examples=6)


# ---------------------------------------------------------------------------
# Free-running sessions.
# ---------------------------------------------------------------------------
def _small_config():
  c = tiny.get_config()
  c.layout.video.enabled = False
  m = c.model
  m.d_model, m.num_layers, m.first_dense_layers = 16, 1, 0
  m.num_heads, m.num_kv_heads, m.head_dim = 2, 2, 8    # GQA ratio 1
  m.d_ff, m.moe.d_ff, m.time_embed_dim, m.flow.width = 32, 16, 8, 16
  m.kernels.mode = "invariant"
  m.kernels.split_size = 16
  c.session.capacity_turns, c.session.prefix_turns = 4, 1
  c.session.temperature, c.session.top_p = 0.8, 0.9
  return c


@functools.lru_cache(maxsize=None)
def _small_runner():
  c = _small_config()
  return SessionRunner(c, perturbed(init_params(c, 0)))


@st.composite
def session_cases(draw):
  # One batch size: each one compiles a session step (the flow head and
  # kernel properties draw batch sizes).
  batch = 3
  return dict(batch=batch, row=draw(st.integers(0, batch - 1)),
              turns=draw(st.integers(100, 160)),
              seeds=draw(st.lists(st.integers(0, 2**31 - 1), min_size=batch,
                                  max_size=batch)),
              data_seed=draw(st.integers(0, 2**16)))


def _session_property(c):
  runner = _small_runner()
  spec = runner.spec
  rng = np.random.default_rng(c["data_seed"])
  b, r, turns = c["batch"], c["row"], c["turns"]
  # Random input bins and text for every session and turn.
  bins = rng.integers(0, spec.dmel_bins,
                      (turns, b, spec.frames_per_turn, spec.n_mels), np.int32)
  text = rng.integers(0, 256, (turns, b, 4), np.int32)

  def run(rows, seeds):
    state = runner.init(len(seeds), seeds=seeds)
    outs = []
    for t in range(turns):
      inp = TurnInputs(jnp.asarray(bins[t, rows]), jnp.asarray(text[t, rows, :2]),
                       jnp.asarray(text[t, rows, 2:]))
      state, out = runner.step(state, inp)
      outs.append(jax.device_get(out))
    return outs

  together = run(slice(0, b), c["seeds"])
  alone = run(slice(r, r + 1), c["seeds"][r:r + 1])
  assert len({int(x) for o in alone for x in o.audio_bins.reshape(-1)}) > 1
  for t in range(turns):
    for field in together[t]._fields:
      np.testing.assert_array_equal(
          getattr(together[t], field)[r], getattr(alone[t], field)[0],
          err_msg=f"turn {t} {field}")


def test_free_run_session_batch_property(capsys):
  check_property(capsys, "free-run sessions (>= 100 turns)", session_cases(),
                 _session_property, max_examples=4)
