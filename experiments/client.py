r"""Stream a WAV (and optional video) to a session server; save what comes back.

  python -m experiments.client --url=wss://127.0.0.1:8765 --cafile=CERT.pem \
      --input=FILE.wav --out=DIR [--pace=realtime|fast] [--video=FILE.npz] \
      [--text="typed at t=0"] [--prompt="You are ..."]

--pace=realtime sends one 200 ms chunk per 200 ms, aligned to the server's
ticks; --pace=fast sends as fast as the server answers (at most --window
chunks in flight). The file is read at --sample_rate (resampled if needed) and
sent at that rate; frames of the .npz video (frames, fps) go with the chunk
they fall in, as JPEG. Writes DIR/output.wav (the model's audio, one chunk per
chunk sent), DIR/events.jsonl (one line per event, with its seq) and
DIR/summary.json; prints the per-chunk round trip p50 / p99 and, last, one
JSON object. A server that cannot be reached or goes away ends the run with
`error: ...` (exit status 2), never a hang.
"""

import asyncio
import json
import os

import numpy as np
from absl import flags

from experiments import cli

_URL = flags.DEFINE_string("url", "ws://127.0.0.1:8765", "Server URL (ws:// or wss://).")
_INPUT = flags.DEFINE_string("input", None, "Audio file to stream (mono; any rate).")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_VIDEO = flags.DEFINE_string("video", None, "Optional .npz video (frames, fps).")
_TEXT = flags.DEFINE_string("text", None, "Text typed with the first chunk.")
_PROMPT = flags.DEFINE_string("prompt", None, "Text prompt fed to the model at the start.")
_PACE = flags.DEFINE_enum("pace", "realtime", ["realtime", "fast"], "Sending pace.")
_WINDOW = flags.DEFINE_integer("window", 8, "Fast pace: most chunks in flight.")
_RATE = flags.DEFINE_integer("sample_rate", 16000, "Rate the audio is sent at.")
_SEED = flags.DEFINE_integer("seed", 0, "Session seed (sampling and flow noise).")
_CAPACITY = flags.DEFINE_integer("capacity_turns", None, "Session KV capacity (one "
                                 "the server offers).")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "Text sampling temperature.")
_CAFILE = flags.DEFINE_string("cafile", None, "CA / self-signed certificate to trust.")
_INSECURE = flags.DEFINE_bool("insecure", False, "wss:// without checking the "
                              "certificate (local testing only).")
_TIMEOUT = flags.DEFINE_float("timeout", 30.0, "Seconds to wait for any reply.")
flags.mark_flags_as_required(["input", "out"])


def load_inputs(path, rate, video_path, turn_s=0.2):
  from interaction import audio_io
  try:
    wave = audio_io.load_audio(path, target_rate=rate)
  except audio_io.AudioError as e:
    raise ValueError(f"--input: {e}") from None
  n = int(round(rate * turn_s))
  count = -(-len(wave) // n)
  padded = np.zeros(count * n, np.float32)
  padded[:len(wave)] = wave
  frames = None
  if video_path:
    from data_pipeline.video import VideoError, load_video
    try:
      video, fps = load_video(video_path)
    except VideoError as e:
      raise ValueError(f"--video: {e}") from None
    # The latest frame shown by the end of each chunk.
    idx = [min(len(video) - 1, int(((i + 1) * turn_s - 1e-6) * fps)) for i in range(count)]
    frames = [video[j] for j in idx]
  return padded.reshape(count, n), frames


async def run(chunks, frames):
  from interaction import client
  options = {"seed": _SEED.value, "sample_rate": _RATE.value}
  for key, flag in (("prompt", _PROMPT), ("capacity_turns", _CAPACITY),
                    ("temperature", _TEMPERATURE)):
    if flag.value is not None:
      options[key] = flag.value
  conn = await client.Connection.connect(_URL.value, cafile=_CAFILE.value,
                                         insecure=_INSECURE.value, timeout=_TIMEOUT.value)
  try:
    session = await conn.open(**options)
    texts = [None] * len(chunks)
    if _TEXT.value:
      texts[0] = _TEXT.value
    result = await client.stream(session, chunks, sample_rate=_RATE.value,
                                 frames=frames, texts=texts, pace=_PACE.value,
                                 window=_WINDOW.value)
    closed = await session.close()
  finally:
    await conn.close()
  return session, result, closed


def main(argv):
  del argv
  from interaction import audio_io
  from interaction.client import ClientError
  chunks, frames = load_inputs(_INPUT.value, _RATE.value, _VIDEO.value)
  try:
    session, result, closed = asyncio.run(run(chunks, frames))
  except ClientError as e:
    raise ValueError(str(e)) from None
  os.makedirs(_OUT.value, exist_ok=True)
  audio_io.write_wav(os.path.join(_OUT.value, "output.wav"), result.audio(),
                     session.capabilities["output_sample_rate"])
  with open(os.path.join(_OUT.value, "events.jsonl"), "w") as f:
    for e in result.events():
      f.write(json.dumps(e) + "\n")
  summary = {**result.summary(), "session": session.id, "url": _URL.value,
             "pace": _PACE.value, "server_stats": closed.get("stats"),
             "error_codes": sorted({e["code"] for e in result.errors}), "out": _OUT.value}
  with open(os.path.join(_OUT.value, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  rtt = ("no outputs" if summary["rtt_p50_ms"] is None else
         f"round trip p50 {summary['rtt_p50_ms']:.1f} ms, p99 {summary['rtt_p99_ms']:.1f} ms")
  print(f"{summary['chunks']} chunks ({summary['filled']} filled with silence by the "
        f"server, {summary['errors']} errors) in {summary['seconds']:.1f} s; {rtt}")
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  cli.run(main)
