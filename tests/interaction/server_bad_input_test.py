"""Bad input, property-based: every malformed message gets a clear error reply,
the server stays up, and another session's outputs do not change.

A witness session streams on its own connection, one chunk after every case;
at the end its text and mel must equal, bit for bit, a clean batch-1 run of the
same chunks. The cases (hypothesis, a fixed derandomized budget) come from a
fuzzing connection: malformed JSON, binary garbage, non-objects, unknown
types, wrong field types, oversize and undersize chunks, wrong sample rates,
negative / duplicate / out-of-order sequence numbers, bad base64, bad images,
over-long text, bad open options, and floods of opens past the session cap.
"""

import base64
import json

import numpy as np
from hypothesis import strategies as st
from websockets.sync.client import connect

from interaction import protocol
from interaction.server import ServerSettings
from tests.interaction.server_test import _alone, _mel
from tests.interaction.serving import ServerThread, chunks, config, pcm16_round
from tests.property_budget import check_property

MAX_SESSIONS = 6
GOOD = protocol.encode_pcm16(np.zeros(3200, np.float32))


def _recv_reply(ws, timeout=10):
  """The next message that is not an output (outputs of the fuzz session's
  valid chunks arrive on the same connection)."""
  while True:
    msg = json.loads(ws.recv(timeout=timeout))
    if msg["type"] != "output":
      return msg


class Fuzz:
  """The fuzzing connection and its own valid session."""

  def __init__(self, url):
    self.ws = connect(url, max_size=None)
    self.ws.send(json.dumps({"type": "open"}))
    opened = _recv_reply(self.ws)
    self.sid, self.token = opened["session"], opened["token"]
    self.seq = 0
    self.append(self.seq, GOOD)          # seq 0 accepted: duplicates are testable

  def auth(self):
    return {"session": self.sid, "token": self.token}

  def append(self, seq, audio, **extra):
    self.ws.send(json.dumps({"type": "append", **self.auth(), "seq": seq,
                             "audio": audio, **extra}))
    if seq == self.seq:
      self.seq += 1


_json_garbage = st.one_of(
    st.text(max_size=40).filter(lambda t: not _is_json(t)),
    st.sampled_from(['{"type": "open"', "{'type': 'open'}", "[1, 2", "nul", "{}}"]))


def _is_json(t):
  try:
    json.loads(t)
    return True
  except ValueError:
    return False


_not_int = st.one_of(st.text(max_size=5), st.floats(allow_nan=False), st.booleans(),
                     st.lists(st.integers(), max_size=2), st.none(),
                     st.integers(max_value=-1))

CASES = st.one_of(
    st.tuples(st.just("json"), _json_garbage),
    st.tuples(st.just("binary"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("not_object"), st.one_of(
        st.integers(), st.text(max_size=8), st.lists(st.integers(), max_size=3))),
    st.tuples(st.just("type"), st.one_of(
        st.text(max_size=8).filter(lambda t: t not in ("open", "append", "attach", "close")),
        st.integers(), st.none())),
    st.tuples(st.just("seq"), _not_int),
    st.tuples(st.just("audio_type"), st.one_of(st.integers(), st.lists(st.integers()),
                                               st.none(), st.booleans())),
    st.tuples(st.just("base64"), st.text(min_size=1, max_size=12).map(lambda t: t + "!")),
    st.tuples(st.just("samples"), st.integers(0, 9000).filter(lambda n: n != 3200)),
    st.tuples(st.just("odd_bytes"), st.integers(0, 100).map(lambda n: 2 * n + 1)),
    st.tuples(st.just("rate"), st.one_of(
        st.integers(-100, 200_000).filter(lambda r: r != 16000),
        st.floats(allow_nan=True), st.text(max_size=5))),
    st.tuples(st.just("duplicate"), st.integers(0, 50)),
    st.tuples(st.just("out_of_order"), st.integers(2, 10_000)),
    st.tuples(st.just("frame"), st.one_of(
        st.binary(max_size=64),
        st.binary(max_size=64).map(lambda b: protocol.JPEG_MAGIC + b),
        st.binary(max_size=64).map(lambda b: protocol.PNG_MAGIC + b))),
    st.tuples(st.just("text"), st.integers(4097, 9000)),
    st.tuples(st.just("auth_type"), st.sampled_from(["session", "token"])),
    st.tuples(st.just("open_options"), st.one_of(
        st.dictionaries(st.sampled_from(["temperature", "top_p", "seed",
                                         "capacity_turns", "sample_rate", "voice",
                                         "bogus", "return_mel"]),
                        st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True),
                                  st.text(max_size=4), st.none()),
                        min_size=1, max_size=2),
        st.integers(), st.text(max_size=4))),
    st.tuples(st.just("open_flood"), st.integers(1, 10)),
)

# What each case may be answered with (any other code, or no error, fails).
EXPECTED = {
    "json": {"bad_json"}, "binary": {"bad_json"}, "not_object": {"bad_json"},
    "type": {"bad_message"}, "seq": {"bad_message"}, "audio_type": {"bad_message"},
    "base64": {"bad_audio"}, "samples": {"bad_audio"}, "odd_bytes": {"bad_audio"},
    "rate": {"bad_sample_rate"}, "duplicate": {"duplicate"},
    "out_of_order": {"out_of_order"}, "frame": {"bad_frame"}, "text": {"too_large"},
    "auth_type": {"bad_message"},
}


def _open_options_ok(opts):
  """Whether an options object is valid (then the open must succeed)."""
  if not isinstance(opts, dict):
    return False
  try:
    protocol.parse_open({"options": opts}, protocol.Limits(), 200.0, 16000)
  except protocol.ProtocolError:
    return False
  # One pool only (max_pools=1): other sampling settings are refused (capacity).
  return (opts.get("capacity_turns") in (None, 16)
          and opts.get("voice") in (None, "default")
          and opts.get("temperature") in (None, 0, 0.0)
          and opts.get("top_p") in (None, 1, 1.0))


def test_bad_input_gets_clear_errors_server_stays_up_others_unchanged(capsys):
  cfg = config()
  n_witness = 400
  waves = chunks(n_witness, seed=9)
  settings = ServerSettings(max_sessions=MAX_SESSIONS, clock="fast", grace_s=0.02,
                            vocoder=False, max_pools=1)
  with ServerThread(settings) as server:
    witness = connect(server.url, max_size=None)
    witness.send(json.dumps({"type": "open", "options": {"seed": 3, "return_mel": True}}))
    w = json.loads(witness.recv(timeout=30))
    w_outputs = []

    def witness_turn():
      i = len(w_outputs)
      witness.send(json.dumps({"type": "append", "session": w["session"],
                               "token": w["token"], "seq": i,
                               "audio": protocol.encode_pcm16(waves[i])}))
      msg = json.loads(witness.recv(timeout=30))
      assert msg["type"] == "output" and msg["seq"] == i, msg
      w_outputs.append(msg)

    fuzz = Fuzz(server.url)
    codes = {}

    def body(case):
      kind, value = case
      ws = fuzz.ws
      if kind == "json":
        ws.send(value)
      elif kind == "binary":
        ws.send(value)
      elif kind == "not_object":
        ws.send(json.dumps(value))
      elif kind == "type":
        ws.send(json.dumps({"type": value}))
      elif kind == "seq":
        ws.send(json.dumps({"type": "append", **fuzz.auth(), "seq": value, "audio": GOOD}))
      elif kind == "audio_type":
        ws.send(json.dumps({"type": "append", **fuzz.auth(), "seq": fuzz.seq,
                            "audio": value}))
      elif kind == "base64":
        ws.send(json.dumps({"type": "append", **fuzz.auth(), "seq": fuzz.seq,
                            "audio": value}))
      elif kind == "samples":
        ws.send(json.dumps({"type": "append", **fuzz.auth(), "seq": fuzz.seq,
                            "audio": protocol.encode_pcm16(np.zeros(value, np.float32))}))
      elif kind == "odd_bytes":
        ws.send(json.dumps({"type": "append", **fuzz.auth(), "seq": fuzz.seq,
                            "audio": base64.b64encode(b"\0" * value).decode()}))
      elif kind == "rate":
        ws.send(json.dumps({"type": "append", **fuzz.auth(), "seq": fuzz.seq,
                            "audio": GOOD, "sample_rate": value}))
      elif kind == "duplicate":
        fuzz.append(fuzz.seq, GOOD)        # accepted (its output is skipped)
        ws.send(json.dumps({"type": "append", **fuzz.auth(),
                            "seq": max(0, fuzz.seq - 1 - value), "audio": GOOD}))
      elif kind == "out_of_order":
        ws.send(json.dumps({"type": "append", **fuzz.auth(), "seq": fuzz.seq + value,
                            "audio": GOOD}))
      elif kind == "frame":
        ws.send(json.dumps({"type": "append", **fuzz.auth(), "seq": fuzz.seq,
                            "audio": GOOD, "frame": base64.b64encode(value).decode()}))
      elif kind == "text":
        ws.send(json.dumps({"type": "append", **fuzz.auth(), "seq": fuzz.seq,
                            "audio": GOOD, "text": "x" * value}))
      elif kind == "auth_type":
        msg = {"type": "append", **fuzz.auth(), "seq": fuzz.seq, "audio": GOOD}
        msg[value] = 12345
        ws.send(json.dumps(msg))
      elif kind == "open_options":
        ws.send(json.dumps({"type": "open", "options": value}))
        reply = _recv_reply(ws)
        if _open_options_ok(value):
          assert reply["type"] == "opened", (value, reply)
          ws.send(json.dumps({"type": "close", "session": reply["session"],
                              "token": reply["token"]}))
          assert _recv_reply(ws)["type"] == "closed"
        else:
          assert reply["type"] == "error" and reply["error"], (value, reply)
          assert reply["code"] in {"bad_option", "bad_message", "bad_sample_rate",
                                   "too_large", "capacity"}, (value, reply)
          codes[reply["code"]] = codes.get(reply["code"], 0) + 1
        witness_turn()
        return
      elif kind == "open_flood":
        for _ in range(value):
          ws.send(json.dumps({"type": "open"}))
        replies = [_recv_reply(ws) for _ in range(value)]
        free = MAX_SESSIONS - 2                # the witness and the fuzz session
        opened = [r for r in replies if r["type"] == "opened"]
        refused = [r for r in replies if r["type"] == "error"]
        assert len(opened) == min(value, free), replies
        assert all(r["code"] == "capacity" and "server full" in r["error"]
                   for r in refused), refused
        codes["capacity"] = codes.get("capacity", 0) + len(refused)
        for r in opened:
          ws.send(json.dumps({"type": "close", "session": r["session"],
                              "token": r["token"]}))
          assert _recv_reply(ws)["type"] == "closed"
        witness_turn()
        return
      reply = _recv_reply(ws)
      assert reply["type"] == "error", (case, reply)
      assert reply["code"] in EXPECTED[kind], (case, reply)
      assert isinstance(reply["error"], str) and len(reply["error"]) > 10, reply
      codes[reply["code"]] = codes.get(reply["code"], 0) + 1
      witness_turn()

    check_property(capsys, "server bad input", CASES, body, max_examples=300)
    with capsys.disabled():
      print(f"[property] server bad input: error codes seen {dict(sorted(codes.items()))}")
    # Still up: a new client opens a session and gets an output.
    late = connect(server.url)
    late.send(json.dumps({"type": "open"}))
    assert json.loads(late.recv(timeout=30))["type"] == "opened"
    stats = server.server.stats()
    witness.close()
    fuzz.ws.close()
    late.close()
  assert stats["errors"] > 0
  # The witness heard nothing of it: its outputs equal a clean run alone.
  tokens, mels = _alone(cfg, 3, pcm16_round(waves[:len(w_outputs)]))
  for i, o in enumerate(w_outputs):
    np.testing.assert_array_equal(_mel(o), mels[i], err_msg=f"witness seq {i}")
    from interaction.tokenizer import TOKENIZER
    assert o["text"] == TOKENIZER.decode(tokens[i])
