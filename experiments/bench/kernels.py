"""Benchmark: the cost of the invariant kernels on CPU.

  python -m experiments.bench kernels [--turns=50,10] [--batch=4] [--rounds=7]
      [--cache_lengths=1024,8192,32768] [--session_capacity=768]
      [--session_offset=600] [--skip_model]

(a) Forward of the `demo` model (experiments/configs/demo.py, teacher-forced
    over each of `--turns` micro-turns, random tokens by the layout contract;
    the first is the demo's training shape) with kernels.mode='default' vs
    'invariant' on the 'xla' path (one padded dot per matmul) and on the
    'xla_blocked' path (fixed 8-row blocks), same parameters, timed
    round-robin in one run.
(b) One-token decode attention at the demo's head shapes against a full cache
    of each length: split-KV (invariant XLA path) vs plain jnp attention
    (the 'default' mode's einsum softmax).
(c) The streaming steps of the `demo` model, batch 1, against a cache of
    `--session_capacity` slots filled to `--session_offset`: the decoder
    stack plus text head on one slot (a decode step) and on one input block
    (an append), default vs invariant. These are what a live session pays
    every micro-turn, so a win in (a) must not cost them much.

Prints a table, then one JSON line: `*_ms` medians and `*_ratio` values
(invariant / default; above 1 is overhead).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments.bench import common
from pallas_kernels import numerics as nm

_TURNS = flags.DEFINE_list("turns", ["50", "10"],
                           "(a) micro-turns per forward; the first is the headline.")
_BATCH = flags.DEFINE_integer("batch", 4, "(a) batch size.")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Interleaved timing rounds.")
_CACHE_LENGTHS = flags.DEFINE_list("cache_lengths", ["1024", "8192", "32768"],
                                   "(b) decode cache lengths.")
_CAPACITY = flags.DEFINE_integer("session_capacity", 768, "(c) cache slots.")
_OFFSET = flags.DEFINE_integer("session_offset", 600, "(c) slots filled.")
_SKIP_MODEL = flags.DEFINE_bool("skip_model", False, "Only (b).")


# name -> (kernels.mode, kernels.impl) of the forward variants in (a).
_FORWARD_VARIANTS = {"default": ("default", "xla"),
                     "invariant": ("invariant", "xla"),
                     "invariant_blocked": ("invariant", "xla_blocked")}


def _model_forward_fns(turns, batch_size):
  from experiments.configs import demo
  from interaction import model as model_lib
  from interaction import params as params_lib

  config = demo.get_config()
  spec = model_lib.validate_config(config)
  batch = common.random_batch(spec, batch_size, turns, np.random.default_rng(0))
  fns, state = {}, None
  for name, (mode, impl) in _FORWARD_VARIANTS.items():
    config.model.kernels.mode = mode
    config.model.kernels.impl = impl
    bind = params_lib.ModelBinder(config)
    state = params_lib.init_params(config, 0) if state is None else state  # one set
    fwd = jax.jit(lambda st, bt, bind=bind: bind(st).forward(bt)["text_logits"])
    fns[name] = (lambda f=fwd: f(state, batch))
  return fns, config


def _session_step_fns(capacity, offset):
  """(c): name -> zero-arg callable for the decode step and the append."""
  from experiments.configs import demo
  from interaction import model as model_lib
  from interaction import params as params_lib

  config = demo.get_config()
  spec = model_lib.validate_config(config)
  block = spec.input_slots  # one append = one micro-turn's input block
  state, fns = None, {}
  for variant, (mode, impl) in _FORWARD_VARIANTS.items():
    config.model.kernels.mode = mode
    config.model.kernels.impl = impl
    bind = params_lib.ModelBinder(config)
    state = params_lib.init_params(config, 0) if state is None else state
    cache = bind(state).init_cache(1, capacity)

    def step(st, x, cache, off, bind=bind):
      m = bind(st)
      pos = off[:, None] + jnp.arange(x.shape[1], dtype=jnp.int32)[None]
      h, new_cache, _ = m.backbone(x, pos, cache, off)
      return m.text_logits(h), new_cache

    jstep = jax.jit(step)
    off = jnp.array([offset], jnp.int32)
    rng = np.random.default_rng(1)
    for name, slots in (("decode", 1), ("append", block)):
      x = jnp.asarray(rng.standard_normal((1, slots, config.model.d_model)),
                      jnp.float32)
      fns.setdefault(name, {})[variant] = (
          lambda f=jstep, x=x, c=cache: f(state, x, c, off))
  return fns, block


def _decode_fns(cache_len, hq, hkv, d, split, block_q):
  rng = np.random.default_rng(cache_len)
  q = jnp.asarray(rng.standard_normal((1, 1, hq, d)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((1, cache_len, hkv, d)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((1, cache_len, hkv, d)), jnp.float32)
  pos = jnp.array([cache_len - 1], jnp.int32)
  fns = {}
  for mode in ("default", "invariant"):
    numerics = nm.Numerics(mode=mode, split_size=split, block_q=block_q)
    f = jax.jit(lambda q, k, v, p, n=numerics: nm.attention(
        q, k, v, q_offset=p, kv_len=p + 1, numerics=n))
    fns[mode] = (lambda f=f: f(q, k, v, pos))
  return fns


def main(argv):
  del argv
  batch, rounds, skip_model = _BATCH.value, _ROUNDS.value, _SKIP_MODEL.value
  turns_list = [int(x) for x in _TURNS.value]
  figures = {"machine": common.machine()}

  if not skip_model:
    for i, turns in enumerate(turns_list):
      fns, config = _model_forward_fns(turns, batch)
      med = common.interleaved_medians(fns, rounds=rounds,
                                       inner=1 if turns >= 30 else 3)
      print(f"(a) demo forward, batch {batch} x {turns} turns")
      # The first turn count is the headline (the demo's training shape).
      prefix = "demo_forward" if i == 0 else f"demo_forward_{turns}t"
      for name, ms in med.items():
        print(f"  {name:22s} {ms:9.1f} ms  ratio {ms / med['default']:.3f}")
        figures[f"{prefix}_{name}_ms"] = round(ms, 2)
        if name != "default":
          figures[f"{prefix}_{name}_ratio"] = round(ms / med["default"], 4)
  else:
    from experiments.configs import demo
    config = demo.get_config()

  m = config.model
  print(f"(b) decode attention, Hq {m.num_heads} Hkv {m.num_kv_heads} D {m.head_dim}"
        f" split {m.kernels.split_size} block_q {m.kernels.block_q}")
  for length in [int(x) for x in _CACHE_LENGTHS.value]:
    fns = _decode_fns(length, m.num_heads, m.num_kv_heads, m.head_dim,
                      m.kernels.split_size, m.kernels.block_q)
    med = common.interleaved_medians(fns, rounds=max(rounds, 5), inner=5)
    ratio = med["invariant"] / med["default"]
    print(f"  cache {length:6d}: split-KV {med['invariant']:8.3f} ms  plain "
          f"{med['default']:8.3f} ms  ratio {ratio:.3f}")
    figures[f"decode_{length}_splitkv_ms"] = round(med["invariant"], 4)
    figures[f"decode_{length}_plain_ms"] = round(med["default"], 4)
    figures[f"decode_{length}_ratio"] = round(ratio, 4)
  if not skip_model:
    step_fns, block = _session_step_fns(_CAPACITY.value, _OFFSET.value)
    print(f"(c) demo streaming steps, batch 1, cache {_CAPACITY.value} "
          f"slots filled to {_OFFSET.value}")
    for name, fns in step_fns.items():
      med = common.interleaved_medians(fns, rounds=max(rounds, 5), inner=5)
      what = "1 slot" if name == "decode" else f"{block} slots"
      print(f"  {name} ({what}):")
      for variant, ms in med.items():
        print(f"    {variant:20s} {ms:8.3f} ms  ratio {ms / med['default']:.3f}")
        figures[f"session_{name}_{variant}_ms"] = round(ms, 4)
        if variant != "default":
          key = ("session_" + name if variant == "invariant"
                 else f"session_{name}_{variant}")
          figures[f"{key}_ratio"] = round(ms / med["default"], 4)
  common.emit(figures)
  return 0
