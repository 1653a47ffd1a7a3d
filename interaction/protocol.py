"""The session server's wire protocol: JSON text messages over one WebSocket.

Client -> server (every message is a JSON object with a "type"):

  {"type": "open", "options": {...}}                 -> "opened" or "error"
      options (all optional): capacity_turns, voice, temperature, top_p, seed,
      prompt (text fed to the model from its first micro-turn), sample_rate
      (of the audio the client will send), return_mel (also send the mel frames)
  {"type": "append", "session", "token", "seq", "audio", "sample_rate"?,
   "frame"?, "text"?}                                -> later one "output" per seq
      seq: 0, 1, 2, ... one per 200 ms chunk; audio: base64 little-endian PCM16
      mono, exactly one chunk period at sample_rate; frame: base64 JPEG or PNG;
      text: typed text
  {"type": "attach", "session", "token"}             -> "attached": outputs go here
  {"type": "close", "session", "token"}              -> "closed"

Server -> client: "opened" (session id, secret token, capabilities: the chunk
period, sample rates, frame size, limits), "output" (seq, base64 PCM16 audio,
text, events, filled, timing), "closed" (reason, counters), "error" (code,
error: a sentence naming what is wrong; seq and session when known).

Everything here is pure (no I/O): parsing and validating requests, and the
audio and image codecs of the wire format. A bad request raises
ProtocolError(code, message) before anything else happens.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import json
import math

import numpy as np

VERSION = 1

# Error codes (the "code" field of an error reply).
BAD_JSON = "bad_json"            # not JSON, not an object, binary frame
BAD_MESSAGE = "bad_message"      # unknown type, missing or mistyped field
TOO_LARGE = "too_large"          # message, text, prompt or frame over its limit
FORBIDDEN = "forbidden"          # unknown session or wrong token (never says which)
CAPACITY = "capacity"            # a refused open: the server is full
BAD_OPTION = "bad_option"        # an open option out of range
BAD_AUDIO = "bad_audio"          # wrong chunk length, odd byte count
BAD_SAMPLE_RATE = "bad_sample_rate"
BAD_FRAME = "bad_frame"          # undecodable image, wrong format, too many pixels
DUPLICATE = "duplicate"          # a seq received before
LATE = "late"                    # a seq whose deadline passed: filled with silence
OUT_OF_ORDER = "out_of_order"    # a seq past the next expected one
AHEAD = "ahead"                  # more chunks buffered than the server holds
CLOSED = "closed"                # the session was closed or reaped
INTERNAL = "internal"

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ProtocolError(Exception):
  """A request the server refuses; `reply()` is the error message to send."""

  def __init__(self, code: str, message: str, **extra):
    super().__init__(message)
    self.code = code
    self.message = message
    self.extra = extra

  def reply(self) -> dict:
    return error_message(self.code, self.message, **self.extra)


def error_message(code: str, message: str, **extra) -> dict:
  return {"type": "error", "code": code, "error": message,
          **{k: v for k, v in extra.items() if v is not None}}


@dataclasses.dataclass(frozen=True)
class Limits:
  max_message_bytes: int = 4 << 20
  max_text_bytes: int = 4096
  max_prompt_bytes: int = 16384
  max_frame_bytes: int = 2 << 20
  max_frame_pixels: int = 4096 * 4096
  min_sample_rate: int = 8000
  max_sample_rate: int = 48000


def chunk_samples(sample_rate: int, turn_ms: float) -> int:
  return int(round(sample_rate * turn_ms / 1000.0))


def check_sample_rate(rate, turn_ms: float, limits: Limits, where: str) -> int:
  """A rate the server takes: an int in range whose chunk is a whole number of samples."""
  if isinstance(rate, bool) or not isinstance(rate, int):
    raise ProtocolError(BAD_SAMPLE_RATE, f"{where}: sample_rate must be an integer "
                        f"number of Hz, got {rate!r}")
  n = rate * turn_ms / 1000.0
  if not limits.min_sample_rate <= rate <= limits.max_sample_rate or n != int(n):
    raise ProtocolError(BAD_SAMPLE_RATE, f"{where}: sample_rate {rate} Hz is not "
                        f"supported; use {limits.min_sample_rate}-{limits.max_sample_rate} "
                        f"Hz with a whole number of samples per {turn_ms:g} ms chunk "
                        "(e.g. 16000, 24000, 44100, 48000)")
  return rate


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------
def parse(raw, limits: Limits) -> dict:
  """One WebSocket message -> a dict with a known "type" (ProtocolError if not)."""
  if isinstance(raw, (bytes, bytearray, memoryview)):
    raise ProtocolError(BAD_JSON, "binary WebSocket frames are not part of the "
                        "protocol; send JSON text messages (audio as base64)")
  if len(raw) > limits.max_message_bytes:
    raise ProtocolError(TOO_LARGE, f"message of {len(raw)} bytes is over the "
                        f"{limits.max_message_bytes}-byte limit")
  try:
    msg = json.loads(raw)
  except (ValueError, RecursionError) as e:
    raise ProtocolError(BAD_JSON, f"message is not valid JSON ({e})") from None
  if not isinstance(msg, dict):
    raise ProtocolError(BAD_JSON, f"message must be a JSON object, got "
                        f"{type(msg).__name__}")
  kind = msg.get("type")
  if kind not in ("open", "append", "attach", "close"):
    raise ProtocolError(BAD_MESSAGE, f"unknown message type {kind!r}; expected "
                        "open, append, attach or close")
  return msg


def field(msg: dict, key: str, kind, where: str, *, required: bool = True,
          default=None):
  """msg[key] checked against `kind` ('int>=0', 'str', 'bool', 'number' or a type)."""
  if key not in msg or msg[key] is None:
    if required:
      raise ProtocolError(BAD_MESSAGE, f"{where}: missing field {key!r}")
    return default
  v = msg[key]
  ok = {
      "int>=0": lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= 0,
      "int": lambda x: isinstance(x, int) and not isinstance(x, bool),
      "str": lambda x: isinstance(x, str),
      "bool": lambda x: isinstance(x, bool),
      "number": lambda x: (isinstance(x, (int, float)) and not isinstance(x, bool)
                           and math.isfinite(x)),
      "object": lambda x: isinstance(x, dict),
  }[kind](v)
  if not ok:
    want = {"int>=0": "a non-negative integer", "int": "an integer", "str": "a string",
            "bool": "true or false", "number": "a finite number",
            "object": "a JSON object"}[kind]
    shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:40] + "..."
    raise ProtocolError(BAD_MESSAGE, f"{where}: {key} must be {want}, got {shown}")
  return v


def _text(msg, key, where, max_bytes):
  t = field(msg, key, "str", where, required=False, default=None)
  if t is not None and len(t.encode("utf-8", errors="replace")) > max_bytes:
    raise ProtocolError(TOO_LARGE, f"{where}: {key} is over the {max_bytes}-byte limit")
  return t or None


@dataclasses.dataclass(frozen=True)
class OpenOptions:
  capacity_turns: int | None = None
  voice: str = "default"
  temperature: float | None = None
  top_p: float | None = None
  seed: int = 0
  prompt: str | None = None
  sample_rate: int = 16000
  return_mel: bool = False


def parse_open(msg: dict, limits: Limits, turn_ms: float,
               default_rate: int) -> OpenOptions:
  opts = field(msg, "options", "object", "open", required=False, default={})
  known = {f.name for f in dataclasses.fields(OpenOptions)}
  unknown = sorted(set(opts) - known)
  if unknown:
    raise ProtocolError(BAD_OPTION, f"open: unknown options {unknown}; known: "
                        f"{sorted(known)}")
  w = "open.options"
  rate = opts.get("sample_rate", default_rate)
  o = OpenOptions(
      capacity_turns=field(opts, "capacity_turns", "int>=0", w, required=False),
      voice=field(opts, "voice", "str", w, required=False, default="default"),
      temperature=field(opts, "temperature", "number", w, required=False),
      top_p=field(opts, "top_p", "number", w, required=False),
      seed=field(opts, "seed", "int>=0", w, required=False, default=0),
      prompt=_text(opts, "prompt", w, limits.max_prompt_bytes),
      sample_rate=check_sample_rate(rate, turn_ms, limits, w),
      return_mel=field(opts, "return_mel", "bool", w, required=False, default=False))
  if o.seed >= 2**32:
    raise ProtocolError(BAD_OPTION, f"{w}: seed must be below 2**32, got {o.seed}")
  if o.temperature is not None and not 0 <= o.temperature <= 5:
    raise ProtocolError(BAD_OPTION, f"{w}: temperature must be in [0, 5], got "
                        f"{o.temperature}")
  if o.top_p is not None and not 0 < o.top_p <= 1:
    raise ProtocolError(BAD_OPTION, f"{w}: top_p must be in (0, 1], got {o.top_p}")
  return o


def parse_auth(msg: dict) -> tuple[str, str]:
  where = msg["type"]
  return field(msg, "session", "str", where), field(msg, "token", "str", where)


@dataclasses.dataclass
class Chunk:
  """One validated append: the chunk's samples at the client's rate."""
  seq: int
  audio: np.ndarray          # f32 [n] in [-1, 1) at sample_rate
  sample_rate: int
  frame: bytes | None = None
  text: str | None = None


def decode_pcm16(data: str, where: str) -> np.ndarray:
  try:
    raw = base64.b64decode(data, validate=True)
  except (binascii.Error, ValueError):
    raise ProtocolError(BAD_AUDIO, f"{where}: audio is not valid base64") from None
  if len(raw) % 2:
    raise ProtocolError(BAD_AUDIO, f"{where}: audio has an odd number of bytes "
                        f"({len(raw)}); PCM16 is 2 bytes per sample")
  return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0


def encode_pcm16(wave: np.ndarray) -> str:
  """f32 [-1, 1] -> base64 little-endian PCM16 (clipped, rounded)."""
  pcm = np.clip(np.round(np.asarray(wave, np.float64) * 32767.0), -32768, 32767)
  return base64.b64encode(pcm.astype("<i2").tobytes()).decode("ascii")


def pcm16_to_float(data: str) -> np.ndarray:
  """base64 PCM16 (as the server sends it) -> f32; for clients."""
  return np.frombuffer(base64.b64decode(data), "<i2").astype(np.float32) / 32768.0


def parse_append(msg: dict, limits: Limits, turn_ms: float, session_rate: int) -> Chunk:
  seq = field(msg, "seq", "int>=0", "append")
  where = f"append seq {seq}"
  rate = msg.get("sample_rate", session_rate)
  rate = check_sample_rate(rate, turn_ms, limits, where)
  if rate != session_rate:
    raise ProtocolError(BAD_SAMPLE_RATE, f"{where}: sample_rate {rate} Hz differs "
                        f"from the {session_rate} Hz this session was opened with",
                        seq=seq)
  audio = decode_pcm16(field(msg, "audio", "str", where), where)
  want = chunk_samples(rate, turn_ms)
  if audio.shape[0] != want:
    raise ProtocolError(BAD_AUDIO, f"{where}: audio has {audio.shape[0]} samples; a "
                        f"{turn_ms:g} ms chunk at {rate} Hz has {want}", seq=seq)
  frame = field(msg, "frame", "str", where, required=False)
  frame_bytes = None
  if frame is not None:
    if len(frame) > limits.max_frame_bytes * 4 // 3 + 4:
      raise ProtocolError(TOO_LARGE, f"{where}: frame is over the "
                          f"{limits.max_frame_bytes}-byte limit", seq=seq)
    try:
      frame_bytes = base64.b64decode(frame, validate=True)
    except (binascii.Error, ValueError):
      raise ProtocolError(BAD_FRAME, f"{where}: frame is not valid base64",
                          seq=seq) from None
    if not (frame_bytes.startswith(JPEG_MAGIC) or frame_bytes.startswith(PNG_MAGIC)):
      raise ProtocolError(BAD_FRAME, f"{where}: frame is neither JPEG nor PNG "
                          "(checked by its first bytes)", seq=seq)
  try:
    text = _text(msg, "text", where, limits.max_text_bytes)
  except ProtocolError as e:
    e.extra["seq"] = seq
    raise
  return Chunk(seq=seq, audio=audio, sample_rate=rate, frame=frame_bytes, text=text)


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------
def encode_frame(frame: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> str:
  """uint8 [H, W, 3] -> base64 JPEG or PNG (for clients)."""
  from PIL import Image
  buf = io.BytesIO()
  img = Image.fromarray(np.asarray(frame, np.uint8), "RGB")
  if fmt == "png":
    img.save(buf, format="PNG")
  else:
    img.save(buf, format="JPEG", quality=quality)
  return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_frame(data: bytes, height: int, width: int, limits: Limits,
                 where: str = "frame") -> np.ndarray:
  """JPEG/PNG bytes -> uint8 [height, width, 3], nearest-neighbour resized as
  the eval model agent does (data_pipeline.video.resize_frames)."""
  from PIL import Image
  try:
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    if w * h > limits.max_frame_pixels:
      raise ProtocolError(BAD_FRAME, f"{where}: {w}x{h} image is over the "
                          f"{limits.max_frame_pixels}-pixel limit")
    if img.format not in ("JPEG", "PNG"):
      raise ProtocolError(BAD_FRAME, f"{where}: image format {img.format} is not "
                          "JPEG or PNG")
    arr = np.asarray(img.convert("RGB"), np.uint8)
  except ProtocolError:
    raise
  except Exception as e:  # PIL raises many kinds for truncated or corrupt data
    raise ProtocolError(BAD_FRAME, f"{where}: undecodable image "
                        f"({type(e).__name__}: {e})") from None
  if arr.shape[:2] != (height, width):
    rows = (np.arange(height) * arr.shape[0] // height).astype(np.int64)
    cols = (np.arange(width) * arr.shape[1] // width).astype(np.int64)
    arr = arr[rows][:, cols]
  return np.ascontiguousarray(arr)


# ---------------------------------------------------------------------------
# Audio at the client's rate -> the layout's rate
# ---------------------------------------------------------------------------
class ChunkResampler:
  """Streaming soxr resampling that hands out exactly one chunk per chunk.

  soxr's stream returns a varying number of samples per call (its filter
  delay and block size), so a FIFO primed with the largest shortfall seen over
  a few warm-up chunks of silence always holds a whole output chunk. That adds
  a fixed delay of `delay_samples` (a few ms at 24-48 kHz). The same rate in
  and out is passed through untouched.
  """

  def __init__(self, rate_in: int, rate_out: int, turn_ms: float):
    self.rate_in, self.rate_out = int(rate_in), int(rate_out)
    self.n_in = chunk_samples(rate_in, turn_ms)
    self.n_out = chunk_samples(rate_out, turn_ms)
    self.delay_samples = 0
    if self.rate_in == self.rate_out:
      return
    import soxr
    probe = soxr.ResampleStream(self.rate_in, self.rate_out, 1, dtype="float32",
                                quality="HQ")
    got, short = 0, 0
    for i in range(1, 12):
      got += len(probe.resample_chunk(np.zeros(self.n_in, np.float32)))
      short = max(short, i * self.n_out - got)
    self.delay_samples = int(short) + 16
    self.stream = soxr.ResampleStream(self.rate_in, self.rate_out, 1,
                                      dtype="float32", quality="HQ")
    self.fifo = np.zeros(self.delay_samples, np.float32)

  def __call__(self, chunk: np.ndarray) -> np.ndarray:
    if self.rate_in == self.rate_out:
      return np.asarray(chunk, np.float32)
    out = self.stream.resample_chunk(np.asarray(chunk, np.float32))
    self.fifo = np.concatenate([self.fifo, out])
    if len(self.fifo) < self.n_out:   # not seen in the warm-up; pad, never stall
      self.fifo = np.concatenate([np.zeros(self.n_out - len(self.fifo), np.float32),
                                  self.fifo])
    head, self.fifo = self.fifo[:self.n_out], self.fifo[self.n_out:]
    return head
