"""The background model: local tools, the job runner, the text LM, and the whole
loop through the server with a synthetic delegation episode (a slow tool: the
session answers every micro-turn while it works; its result reaches the
model's background_text stream; `<cancel>` stops it)."""

import asyncio
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interaction.background import (BackgroundRunner, CallableAgent, Corpus,
                                    ToolAgent, calculate)
from interaction.client import Connection, stream
from interaction.server import ServerSettings
from interaction.tokenizer import TOKENIZER
from tests.interaction.serving import ServerThread, config, params


# ---- tools ---------------------------------------------------------------------
def test_calculator_does_arithmetic_and_nothing_else():
  assert calculate("12*34") == 408 and calculate("(2+3)**2 - 7 // 2") == 22
  for bad in ["__import__('os')", "a + 1", "2 ** 1000", "[1, 2]", "f(3)"]:
    with pytest.raises((ValueError, SyntaxError)):
      calculate(bad)


def test_tool_agent_routes_queries_to_tools_deterministically():
  corpus = Corpus(["The next train to denver leaves at 7:45.\n\n"
                   "Oslo is cloudy at 3 degrees.", "Tokyo is sunny."])
  agent = ToolAgent(corpus, now=lambda: 3600 * 13 + 60 * 5)
  assert agent.answer("what is 47 times 23")[0] == "calc: 47*23 = 1081"
  assert agent.answer("calc: 6 divided by 4")[0] == "calc: 6/4 = 1.5"
  assert agent.answer("what time is it")[0] == "clock: 13:05:00 UTC"
  assert agent.answer("set a timer for 3 seconds") == ("timer: set for 3 s", 3.0)
  assert agent.answer("when does the train to denver leave")[0] == (
      "search: The next train to denver leaves at 7:45.")
  assert agent.answer("weather in oslo")[0] == "search: Oslo is cloudy at 3 degrees."
  assert agent.answer("qwerty")[0] == "search: nothing found for 'qwerty'"
  # The query is the latest typed user text unless the task names one.
  ctx = {"conversation": [{"t": 1.0, "speaker": "user", "text": "what is 2 plus 2"},
                          {"t": 2.0, "speaker": "model", "text": "let me check"}]}
  assert ToolAgent.query(ctx) == "what is 2 plus 2"
  assert ToolAgent.query({**ctx, "task": {"query": "9*9"}}) == "9*9"


def test_timer_reports_when_set_and_when_it_rings():
  agent = ToolAgent(timer_scale=0.01)

  async def run():
    t0 = time.monotonic()
    out = [u async for u in agent.submit({"task": {"query": "timer for 5 s"}})]
    return out, time.monotonic() - t0

  out, took = asyncio.run(run())
  assert out == ["timer: set for 5 s", "timer: 5 s done"] and took >= 0.05


def test_external_api_adapter_wraps_a_plain_function():
  seen = []

  def fake_api(prompt):          # stands in for an HTTP client; nothing leaves
    seen.append(prompt)
    return "answer from the api"

  agent = CallableAgent(fake_api)
  ctx = {"conversation": [{"t": 0.4, "speaker": "user", "text": "hi"}], "task": {}}

  async def run():
    return [u async for u in agent.submit(ctx)]

  assert asyncio.run(run()) == ["answer from the api"]
  assert "[0.4 s] user: hi" in seen[0] and "Task: hi" in seen[0]


# ---- the runner ----------------------------------------------------------------
def test_runner_delegates_feeds_updates_and_cancels():
  async def run():
    runner = BackgroundRunner(ToolAgent(delay_s=0.3))
    conv = [{"t": 0.0, "speaker": "user", "text": "what is 3 times 4"}]
    runner.on_output("a", [TOKENIZER.delegate_id, TOKENIZER.pad_id], 1.0, conv)
    runner.on_output("b", [TOKENIZER.delegate_id, TOKENIZER.pad_id], 1.0, conv)
    assert runner.running("a") == 1 and runner.take("a") == (None, [])
    await asyncio.sleep(0.05)
    runner.on_output("b", [TOKENIZER.cancel_id, TOKENIZER.pad_id], 1.2, conv)
    await asyncio.sleep(0.5)
    return runner.take("a"), runner.take_events("a"), runner.take("b"), \
        runner.take_events("b")

  text_a, events_a, text_b, events_b = asyncio.run(run())
  assert text_a[0] == "calc: 3*4 = 12"
  assert [e["status"] for e in events_a] == ["started", "done"]
  assert text_b == (None, [])
  assert [e["status"] for e in events_b] == ["started", "cancelled"]


def test_a_failing_background_model_becomes_an_event_not_a_crash():
  class Broken:
    async def submit(self, context):
      raise RuntimeError("tool exploded")
      yield  # noqa: unreachable (makes this an async generator)

  async def run():
    runner = BackgroundRunner(Broken())
    runner.delegate("s", 0.0, [])
    await asyncio.sleep(0.05)
    return runner.take_events("s")

  events = asyncio.run(run())
  assert events[-1]["status"] == "error: RuntimeError: tool exploded"


# ---- the text LM ---------------------------------------------------------------
def test_text_lm_greedy_decoding_equals_recomputing_the_whole_sequence():
  """KV-cached greedy decoding (invariant kernels) gives the tokens a full
  forward of the growing sequence picks, and the same text every call."""
  from interaction.layout import Stream
  from interaction.params import load_model
  from interaction.text_lm import TextLM
  cfg = config()
  lm = TextLM(cfg, params(), context_tokens=32, max_new_tokens=6, update_tokens=4)
  prompt = "user: what is 2 plus 2"
  got = list(lm.generate(prompt))
  assert len(got) == 6 and lm.complete(prompt) == lm.complete(prompt)
  model = load_model(cfg, params())
  ids = TOKENIZER.encode(prompt)

  width = len(ids) + len(got)

  @jax.jit
  def logits_at(seq, last):
    """Greedy token after position `last` of the padded sequence [1, width]
    (causal: what follows `last` cannot change it). One compile."""
    streams = jnp.where(jnp.arange(width) < len(ids), int(Stream.USER_TEXT),
                        int(Stream.MODEL_TEXT))
    x = model.embed_slots(model.text(seq).astype(model.dtype), streams,
                          jnp.zeros(seq.shape, jnp.float32))
    cache = model.init_cache(1, lm.capacity)
    h, _, _ = model.backbone(x, jnp.arange(width)[None], cache,
                             jnp.zeros((1,), jnp.int32))
    return jnp.argmax(model.text_logits(h[0, last]), -1)

  seq = np.full((1, width), TOKENIZER.empty_id, np.int32)
  seq[0, :len(ids)] = ids
  for i, tok in enumerate(got):
    assert int(logits_at(jnp.asarray(seq), len(ids) + i - 1)) == tok, f"token {i}"
    seq[0, len(ids) + i] = tok

  async def updates():
    return [u async for u in lm.submit({"conversation": [], "task": {"query": "x"}})]

  ups = asyncio.run(updates())
  assert "".join(ups) == lm.complete(lm.prompt({"conversation": [], "task": {"query": "x"}}))


# ---- the whole loop ------------------------------------------------------------
def _delegation_episode():
  """A synthetic delegation episode whose question the calculator answers."""
  from data_pipeline import generate
  for i in range(20):
    ep, _ = generate.make_sample("delegation", "train", 0, i)
    if "times" in ep.task["question"]:
      return ep
  raise AssertionError("no calculator question in 20 delegation episodes")


def _force_tokens(server, script):
  """Makes the model say script[(seed, turn)] (tokens) at those turns: a random
  `tiny` never says <delegate> on its own. Everything after the model's
  sampling (events, the runner, the background stream) runs as usual."""
  for pool in server.scheduler.pools.values():
    original = pool.step

    def step(inputs, original=original):
      results = original(inputs)
      for member, out in results.items():
        tokens = script.get((member.seed, out.turn))
        if tokens is not None:
          out.text_tokens = np.asarray(tokens, np.int32)
      return results

    pool.step = step


@pytest.mark.integration
def test_delegation_episode_slow_tool_session_keeps_answering_and_cancel_works():
  ep = _delegation_episode()
  spt = 3200
  n = int(np.ceil(len(ep.user_audio) / spt)) + 15
  audio = np.zeros(n * spt, np.float32)
  audio[:len(ep.user_audio)] = ep.user_audio
  waves = audio.reshape(n, spt)
  q_end = max(w["t_end"] for p in ep.user_speech for w in p["words"])
  texts = [None] * n
  texts[int(q_end / 0.2)] = ep.task["question"]        # the user also types it
  d_turn = int(round(ep.task["delegate_time"] / 0.2))
  delay = 1.0
  pad = TOKENIZER.pad_id
  script = {(1, d_turn): [TOKENIZER.delegate_id, pad],          # session 1: answered
            (2, d_turn): [TOKENIZER.delegate_id, pad],          # session 2: cancelled
            (2, d_turn + 2): [TOKENIZER.cancel_id, pad]}

  async def run(url):
    async with await Connection.connect(url) as conn:
      s1, s2 = await conn.open(seed=1), await conn.open(seed=2)
      return await asyncio.gather(*[
          stream(s, waves, texts=texts, pace="realtime", lead_ms=60) for s in (s1, s2)])

  settings = ServerSettings(max_sessions=2, slot_counts=(2,), clock="realtime",
                            vocoder=False)
  with ServerThread(settings, background=ToolAgent(delay_s=delay)) as st:
    _force_tokens(st.server, script)
    r1, r2 = asyncio.run(run(st.url))

  for r in (r1, r2):
    assert [o["seq"] for o in r.outputs] == list(range(n)) and not r.errors
    # One output per micro-turn, from consecutive ticks: no tick was skipped.
    ticks = [o["timing"]["tick"] for o in r.outputs]
    assert ticks == list(range(ticks[0], ticks[0] + n))
  heard1 = "".join(o["heard"]["background_text"] for o in r1.outputs)
  a, b = ep.task["question"].split(" times ")[0].split()[-1], \
      ep.task["question"].split(" times ")[1].split()[0]
  assert heard1 == f"calc: {a}*{b} = {int(a) * int(b)}"
  jobs1 = [(o["seq"], e["text"]) for o in r1.outputs for e in o["events"]
           if e["stream"] == "job"]
  assert [t for _, t in jobs1] == ["started", "done"]
  fed = [o["seq"] for o in r1.outputs if o["heard"]["background_text"]]
  # The result arrives about `delay` after the delegation, then drains 2 bytes
  # per micro-turn; in the meantime every micro-turn was answered on time.
  assert fed[0] - d_turn >= int(delay / 0.2) - 1
  during = r1.outputs[d_turn:fed[0] + 1]
  assert all(o["timing"]["compute_ms"] < 200 for o in during)
  bg_events = [e for o in r1.outputs for e in o["events"] if e["stream"] == "background"]
  assert bg_events and bg_events[0]["text"] == heard1
  # Session 2 cancelled its job: nothing reached its background stream.
  assert "".join(o["heard"]["background_text"] for o in r2.outputs) == ""
  jobs2 = [e["text"] for o in r2.outputs for e in o["events"] if e["stream"] == "job"]
  assert jobs2 == ["started", "cancelled"]
  # Client-side arrival gaps while the tool worked: no stall longer than a chunk.
  gaps = np.diff(r1.arrival_s[d_turn:fed[0] + 1])
  print(f"\n[background] delegated at turn {d_turn}, result fed from turn {fed[0]}; "
        f"output gaps during the delay: max {gaps.max() * 1e3:.0f} ms, "
        f"median {np.median(gaps) * 1e3:.0f} ms")
  assert gaps.max() < 0.4
