"""The session server end to end on loopback: protocol round trip, many sessions
batched (bit-equal to each alone, invariant kernels), past KV capacity, tokens,
idle reaping, the server's clock (late / duplicate / out-of-order chunks) and a
server that goes away."""

import asyncio
import base64
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interaction import mel as mel_lib
from interaction import protocol
from interaction.audio_stream import StreamingMelFrontend
from interaction.batcher import shared_runner
from interaction.client import Connection, ServerError, ServerGone, stream
from interaction.layout import LayoutSpec
from interaction.server import ServerSettings
from interaction.streaming import TurnInputs
from interaction.tokenizer import TOKENIZER
from tests.interaction.serving import (ServerThread, chunks, config, params, pcm16_round,
                                       reference_session)


def _mel(o):
  return np.frombuffer(base64.b64decode(o["mel"]), "<f4").reshape(o["mel_shape"])


def _alone(cfg, seed, waves):
  """One session alone (batch 1), the whole stream in one scan: text and mel."""
  spec = LayoutSpec.from_config(cfg.layout)
  runner = shared_runner(cfg, params(), None)
  fe = StreamingMelFrontend(spec, mel_lib.MelParams.from_layout(cfg.layout))
  bins = np.stack([mel_lib.dmel_quantize(fe(w), spec) for w in waves])[:, None]
  n = len(waves)
  empty = jnp.full((n, 1, 2), TOKENIZER.empty_id, jnp.int32)
  inputs = TurnInputs(jnp.asarray(bins), empty, empty,
                      jnp.zeros((n, 1, spec.video_height, spec.video_width, 3), jnp.uint8),
                      jnp.zeros((n, 1), bool))
  _, out = runner.run(runner.init(1, [seed]), inputs)
  out = jax.device_get(out)
  return out.text_tokens[:, 0], out.mel[:, 0]


def test_protocol_round_trip():
  """open -> capabilities; append (audio, PNG and JPEG frames, typed text) ->
  outputs equal to a Sessions(batch_size=1) session fed the same; close."""
  cfg = config()
  spec = LayoutSpec.from_config(cfg.layout)
  waves = chunks(8, seed=3)
  rng = np.random.default_rng(0)
  frames = {1: ("png", rng.integers(0, 255, (64, 48, 3), np.uint8)),
            4: ("jpeg", rng.integers(0, 255, (40, 40, 3), np.uint8))}
  texts = {0: "hello", 5: "and more"}

  async def client(url):
    async with await Connection.connect(url) as conn:
      s = await conn.open(seed=7, prompt="be brief", return_mel=True)
      sent_frames = {}
      for i, w in enumerate(waves):
        fr = None
        if i in frames:
          fmt, img = frames[i]
          fr = base64.b64decode(protocol.encode_frame(img, fmt))
          sent_frames[i] = fr
        await s.send(i, w, frame=fr, text=texts.get(i))
      outs = [await s.next_output() for _ in waves]
      closed = await s.close()
      with pytest.raises(ServerError, match="forbidden"):
        await conn.request({"type": "append", "session": s.id, "token": s.token,
                            "seq": 8, "audio": protocol.encode_pcm16(waves[0])})
      return s.capabilities, outs, closed, sent_frames

  with ServerThread(ServerSettings(max_sessions=2, clock="fast", grace_s=0.05)) as st:
    caps, outs, closed, sent_frames = asyncio.run(client(st.url))
  assert caps["chunk_ms"] == 200.0 and caps["samples_per_chunk"] == 3200
  assert caps["video"] == {"width": 40, "height": 40, "formats": ["jpeg", "png"]}
  assert caps["capacity_turns"] == 16 and caps["clock"] == "fast"
  assert [o["seq"] for o in outs] == list(range(8))
  assert closed["type"] == "closed" and closed["stats"]["received"] == 8
  assert closed["stats"]["filled"] == 0
  ref = reference_session(7)
  for i, o in enumerate(outs):
    video = (protocol.decode_frame(sent_frames[i], 40, 40, protocol.Limits())
             if i in sent_frames else None)
    text = ("be brief\n" if i == 0 else "") + texts.get(i, "")
    r = ref.step(pcm16_round(waves[i]), video=video, user_text=text or None)
    assert o["audio"] == protocol.encode_pcm16(r.audio[0]), f"seq {i} audio"
    np.testing.assert_array_equal(_mel(o), r.mel[0], err_msg=f"seq {i} mel")
    assert o["text"] == TOKENIZER.decode(r.text_tokens[0])
    assert o["events"] == r.events[0]
    assert len(base64.b64decode(o["audio"])) == 2 * spec.samples_per_turn
    assert o["filled"] is False and o["timing"]["compute_ms"] > 0


@pytest.mark.slow
def test_sixteen_sessions_sixty_seconds_each_batched_equal_each_alone():
  """16 clients on loopback stream 60 s (300 chunks) each as fast as possible:
  no chunk lost or reordered, and every session's text and mel equal, bit for
  bit, a batch-1 run of that session alone. Capacity 16 turns, so every
  session runs past its KV capacity for 284 of its 300 turns."""
  cfg = config()
  n_sessions, n_chunks = 16, 300
  waves = {k: chunks(n_chunks, seed=k) for k in range(n_sessions)}

  async def one(conn, k):
    s = await conn.open(seed=100 + k, return_mel=True)
    r = await stream(s, waves[k], pace="fast", window=16, output_timeout=60)
    await s.close()
    return r

  async def clients(url):
    conns = [await Connection.connect(url, timeout=60) for _ in range(n_sessions)]
    try:
      return await asyncio.gather(*[one(c, k) for k, c in enumerate(conns)])
    finally:
      for c in conns:
        await c.close()

  settings = ServerSettings(max_sessions=n_sessions, slot_counts=(n_sessions,),
                            clock="fast", grace_s=2.0, vocoder=False)
  with ServerThread(settings) as st:
    t0 = time.perf_counter()
    results = asyncio.run(clients(st.url))
    wall = time.perf_counter() - t0
    ticks = st.server.scheduler.tick
  print(f"\n[serve] {n_sessions} sessions x {n_chunks} chunks in {wall:.1f} s, "
        f"{ticks} ticks")
  for k, r in enumerate(results):
    assert not r.errors, r.errors[:3]
    assert [o["seq"] for o in r.outputs] == list(range(n_chunks))
    assert not any(o["filled"] for o in r.outputs)
    tokens, mels = _alone(cfg, 100 + k, pcm16_round(waves[k]))
    for i, o in enumerate(r.outputs):
      assert o["text"] == TOKENIZER.decode(tokens[i]), f"session {k} seq {i}"
      np.testing.assert_array_equal(_mel(o), mels[i], err_msg=f"session {k} seq {i}")
  # Batched: most ticks stepped many sessions at once.
  batches = [o["timing"]["batch"] for r in results for o in r.outputs]
  assert np.median(batches) >= 8, np.median(batches)


def test_a_session_past_its_kv_capacity_keeps_answering_the_same_as_alone():
  cfg = config()
  waves = chunks(60, seed=5)          # 60 turns against a 16-turn cache

  async def client(url):
    async with await Connection.connect(url) as conn:
      s = await conn.open(seed=1, return_mel=True)
      return await stream(s, waves, pace="fast")

  with ServerThread(ServerSettings(max_sessions=2, clock="fast", grace_s=0.05,
                                   vocoder=False)) as st:
    r = asyncio.run(client(st.url))
  assert [o["seq"] for o in r.outputs] == list(range(60)) and not r.errors
  tokens, mels = _alone(cfg, 1, pcm16_round(waves))
  for i, o in enumerate(r.outputs):
    assert np.isfinite(_mel(o)).all()
    np.testing.assert_array_equal(_mel(o), mels[i], err_msg=f"seq {i}")


def test_without_its_token_no_client_can_append_to_or_read_a_session():
  waves = chunks(6, seed=1)

  async def run(url):
    async with await Connection.connect(url) as owner, \
        await Connection.connect(url) as other:
      s = await owner.open()
      errors = []
      for bad in [{"session": s.id, "token": "x" * len(s.token)},   # wrong token
                  {"session": s.id, "token": ""},
                  {"session": "0" * 16, "token": s.token}]:          # unknown id
        for kind in ("append", "attach", "close"):
          msg = {"type": kind, **bad}
          if kind == "append":
            msg.update(seq=0, audio=protocol.encode_pcm16(waves[0]))
          with pytest.raises(ServerError) as e:
            await other.request(msg)
          errors.append(e.value)
      with pytest.raises(ServerError, match="missing field 'token'"):
        await other.request({"type": "append", "session": s.id, "seq": 0})
      r = await stream(s, waves)
      # The other connection saw none of the session's outputs.
      with pytest.raises(Exception, match="no message"):
        await other.next_stray(timeout=0.3)
      return errors, r

  with ServerThread(ServerSettings(max_sessions=2, clock="fast", grace_s=0.05,
                                   vocoder=False)) as st:
    errors, r = asyncio.run(run(st.url))
  assert {e.code for e in errors} == {"forbidden"}
  # An unknown id and a wrong token read the same: ids cannot be probed.
  assert len({e.message for e in errors if "append" in e.message}) == 1
  assert [o["seq"] for o in r.outputs] == list(range(6)) and not r.errors


def test_idle_sessions_are_reaped_and_active_ones_are_not():
  waves = chunks(20, seed=2)

  async def run(url):
    async with await Connection.connect(url) as conn:
      idle = await conn.open()
      busy = await conn.open()
      await idle.send(0, waves[0])
      await idle.next_output()
      t0 = time.monotonic()
      # busy keeps talking for ~2 s: one chunk per 100 ms.
      for i in range(20):
        await busy.send(i, waves[i])
        await busy.next_output()
        await asyncio.sleep(0.1)
      closed = await idle.next_message(timeout=5)
      with pytest.raises(ServerError, match="forbidden"):
        await conn.request({"type": "attach", "session": idle.id, "token": idle.token})
      await busy.send(20, waves[0])
      alive = await busy.next_output()
      return closed, time.monotonic() - t0, alive

  with ServerThread(ServerSettings(max_sessions=2, clock="fast", grace_s=0.05,
                                   idle_timeout_s=0.8, vocoder=False)) as st:
    closed, elapsed, alive = asyncio.run(run(st.url))
    stats = st.server.stats()
  assert closed["type"] == "closed" and closed["reason"].startswith("idle")
  assert stats["reaped"] == 1 and stats["live"] == 1
  assert alive["seq"] == 20


def test_a_refused_open_says_why():
  async def run(url):
    async with await Connection.connect(url) as conn:
      await conn.open()
      await conn.open()
      with pytest.raises(ServerError) as e:
        await conn.open()
      with pytest.raises(ServerError, match="capacity_turns 99 is not offered"):
        await conn.open(capacity_turns=99)
      return e.value

  with ServerThread(ServerSettings(max_sessions=2, clock="fast", vocoder=False)) as st:
    e = asyncio.run(run(st.url))
  assert e.code == "capacity" and "server full: 2 of 2 sessions" in e.message


async def _until_error(s, timeout=5):
  """Reads a session's messages up to its next error: (error, outputs before it)."""
  outs = []
  while True:
    msg = await s.next_message(timeout=timeout)
    if msg["type"] == "error":
      return msg, outs
    outs.append(msg)


def test_realtime_clock_fills_late_chunks_and_names_bad_sequence_numbers():
  waves = chunks(6, seed=4)

  async def run(url):
    async with await Connection.connect(url) as conn:
      s = await conn.open()
      await s.send(0, waves[0])
      await s.send(1, waves[1])
      await s.send(1, waves[1])
      dup, outs = await _until_error(s)
      while len(outs) < 2:
        outs.append(await s.next_output(timeout=5))
      # No chunk for ~3 ticks: the server fills turns 2, 3, ... with silence.
      await asyncio.sleep(0.7)
      await s.send(2, waves[2])
      late, filled = await _until_error(s)
      await s.send(10_000, waves[3])
      order, more = await _until_error(s)
      closed = await s.close()
      return dup, outs, late, filled + more, order, closed

  with ServerThread(ServerSettings(max_sessions=2, clock="realtime",
                                   vocoder=False)) as st:
    dup, outs, late, filled, order, closed = asyncio.run(run(st.url))
  assert dup["code"] == "duplicate" and dup["seq"] == 1
  assert "chunk seq 1 was already received" in dup["error"]
  assert [o["seq"] for o in outs] == [0, 1] and not any(o["filled"] for o in outs)
  assert late["code"] == "late" and "arrived after its deadline" in late["error"]
  assert len(filled) >= 3 and [o["seq"] for o in filled] == list(range(2, 2 + len(filled)))
  assert all(o["filled"] for o in filled)
  assert filled[-1]["counters"]["filled"] == len(filled)
  assert closed["stats"]["late"] == 1 and closed["stats"]["filled"] == len(filled)
  assert closed["stats"]["out_of_order"] == 1 and closed["stats"]["duplicate"] == 1
  assert order["code"] == "out_of_order" and "expected seq" in order["error"]
  assert outs[0]["timing"]["next_tick_in_ms"] is not None


def test_when_the_server_goes_away_clients_get_a_clear_error_not_a_hang():
  waves = chunks(400, seed=6)

  async def run(st):
    conn = await Connection.connect(st.url, timeout=30)
    s = await conn.open()
    task = asyncio.get_running_loop().create_task(stream(s, waves, pace="fast"))
    await asyncio.sleep(1.0)
    t0 = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, st.stop)
    with pytest.raises(ServerGone) as e:
      await task
    waited = time.monotonic() - t0
    with pytest.raises(ServerGone):
      await s.send(999, waves[0])
    return str(e.value), waited

  st = ServerThread(ServerSettings(max_sessions=2, clock="fast", grace_s=0.05,
                                   vocoder=False))
  with st:
    url = st.url
    message, waited = asyncio.run(run(st))
  assert "closed (code 1001" in message and url in message
  assert waited < 30

  async def dead():
    await Connection.connect(url, timeout=5)

  with pytest.raises(ServerGone, match="cannot connect to"):
    asyncio.run(dead())
