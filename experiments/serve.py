r"""Serve streaming sessions over WebSockets (interaction.server).

  python -m experiments.serve --checkpoint=WORKDIR [--port=8765] [--host=127.0.0.1]
  python -m experiments.serve --config=experiments/configs/tiny.py   # random model

Prints the URL (`url: wss://HOST:PORT`) once the default session pool is
compiled, and the browser page's (`page: https://HOST:PORT/`: microphone,
camera, live transcript and timeline; --noweb turns it off), then serves until
interrupted (Ctrl-C / SIGTERM). TLS is on by default with a self-signed
certificate made in --cert_dir (browsers need a secure page for the
microphone); clients trust it with `--cafile` (the printed cert path).
`--notls` serves plain ws:// and http:// (fine on localhost or behind a TLS
proxy / SSH tunnel; from another machine the page cannot have the microphone).

Sessions: at most --max_sessions at once (a refused open says why), reaped
after --idle_timeout_s without a message, stepped as one batch per tick
(--batched; --nobatched steps each session on its own). --clock=realtime keeps
a 200 ms tick and fills late chunks with silence; --clock=fast ticks as soon as
every session's next chunk is in (tests, benchmarks). --background=tools runs
the local tool agent on `<delegate>` (search over --corpus, a folder of .txt
files), --background=lm a greedy text LM from --background_checkpoint (default:
the served checkpoint).
"""

import asyncio
import os
import signal
import tempfile

from absl import flags
from ml_collections import config_flags

from experiments import agents as agents_lib
from experiments import cli

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Training workdir to serve.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file: a randomly initialised model (only without "
    "--checkpoint).", lock_config=True)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to listen on (0.0.0.0: all).")
_PORT = flags.DEFINE_integer("port", 8765, "Port (0: any free port).")
_MAX_SESSIONS = flags.DEFINE_integer("max_sessions", 16, "Most sessions at once.")
_PER_CONN = flags.DEFINE_integer("max_sessions_per_connection", 0,
                                 "Most sessions per connection (0: --max_sessions).")
_SLOTS = flags.DEFINE_list("slot_counts", [], "Batch sizes compiled (default 1, 2, 4, "
                           "... up to --max_sessions).")
_IDLE = flags.DEFINE_float("idle_timeout_s", 60.0, "Close a session after this long "
                           "without a message.")
_CLOCK = flags.DEFINE_enum("clock", "realtime", ["realtime", "fast"], "Server clock.")
_GRACE = flags.DEFINE_float("grace_s", 1.0, "Fast clock: longest wait for a chunk.")
_MAX_AHEAD = flags.DEFINE_integer("max_ahead", 64, "Chunks a session may have waiting.")
_CAPACITIES = flags.DEFINE_list("capacities", [], "capacity_turns values sessions may "
                                "ask for (first = default; default: the config's).")
_BATCHED = flags.DEFINE_bool("batched", True, "One batched step per tick (else one "
                             "step per session).")
_VOCODER = flags.DEFINE_bool("vocoder", True, "Synthesise audio (else silent audio; "
                             "text and mel still).")
_VOCODER_PATH = flags.DEFINE_string("vocoder_path", None, "A learned vocoder checkpoint "
                                    "(experiments.train_vocoder); default: Griffin-Lim.")
_TLS = flags.DEFINE_bool("tls", True, "Serve wss:// (self-signed unless --certfile).")
_CERT_DIR = flags.DEFINE_string("cert_dir", None, "Where the self-signed certificate "
                                "is kept (default: <checkpoint>/serve_tls, or the temp dir).")
_CERTFILE = flags.DEFINE_string("certfile", None, "Your own certificate (PEM).")
_KEYFILE = flags.DEFINE_string("keyfile", None, "Its private key (PEM).")
_BACKGROUND = flags.DEFINE_enum("background", "tools", ["none", "tools", "lm"],
                                "Background model run on <delegate>.")
_CORPUS = flags.DEFINE_string("corpus", None, "Folder of .txt files the search tool reads.")
_TOOL_DELAY = flags.DEFINE_float("tool_delay_s", 0.0, "Delay before each tool answer.")
_WEB = flags.DEFINE_bool("web", True, "Serve the browser page (interaction/web) on the "
                         "same port: https://HOST:PORT/.")
_BG_CHECKPOINT = flags.DEFINE_string("background_checkpoint", None,
                                     "Workdir of the background text LM.")


def ssl_context():
  from interaction import certs
  if not _TLS.value:
    return None, None
  if _CERTFILE.value:
    if not _KEYFILE.value:
      raise ValueError("--certfile needs --keyfile")
    return certs.server_context(_CERTFILE.value, _KEYFILE.value), _CERTFILE.value
  cert_dir = _CERT_DIR.value or (
      os.path.join(_CHECKPOINT.value, "serve_tls") if _CHECKPOINT.value
      else os.path.join(tempfile.gettempdir(), "interaction_serve_tls"))
  certfile, keyfile = certs.self_signed(cert_dir, _HOST.value)
  return certs.server_context(certfile, keyfile), certfile


def background_model(config, params):
  from interaction import background
  kind = _BACKGROUND.value
  if kind == "none":
    return None
  if kind == "tools":
    if _CORPUS.value and not os.path.isdir(_CORPUS.value):
      raise ValueError(f"--corpus: not a folder: {_CORPUS.value}")
    corpus = background.Corpus.from_dir(_CORPUS.value) if _CORPUS.value else None
    return background.ToolAgent(corpus, delay_s=_TOOL_DELAY.value)
  from interaction.text_lm import TextLM
  if _BG_CHECKPOINT.value:
    config, params = agents_lib.load_model(_BG_CHECKPOINT.value)
  return TextLM(config, params)


def settings(ctx):
  from interaction.server import ServerSettings
  return ServerSettings(
      host=_HOST.value, port=_PORT.value, max_sessions=_MAX_SESSIONS.value,
      max_sessions_per_connection=_PER_CONN.value or None,
      slot_counts=tuple(int(x) for x in _SLOTS.value) or None,
      idle_timeout_s=_IDLE.value, clock=_CLOCK.value, grace_s=_GRACE.value,
      max_ahead=_MAX_AHEAD.value,
      capacities=tuple(int(x) for x in _CAPACITIES.value) or None,
      batched=_BATCHED.value,
      vocoder=(_VOCODER_PATH.value or True) if _VOCODER.value else False,
      ssl_context=ctx, web=_WEB.value)


async def serve(config, params, server_settings, background, certfile):
  from interaction.server import SessionServer
  server = SessionServer(config, params, server_settings, background=background)
  url = await server.start()
  print(f"url: {url}", flush=True)
  if certfile:
    print(f"cert: {certfile} (self-signed unless yours: clients pass --cafile={certfile})",
          flush=True)
  if server.page_url:
    note = ("self-signed: the browser asks once to accept it" if certfile and not
            _CERTFILE.value else "open it in a browser")
    print(f"page: {server.page_url} ({note})", flush=True)
  if _HOST.value in ("0.0.0.0", "::"):
    print("listening on every interface: use this machine's address in the URL",
          flush=True)
  stop = asyncio.Event()
  loop = asyncio.get_running_loop()
  for sig in (signal.SIGINT, signal.SIGTERM):
    loop.add_signal_handler(sig, stop.set)
  await stop.wait()
  await server.stop()
  print(f"stopped: {server.stats()}", flush=True)


def main(argv):
  del argv
  config, params = agents_lib.load_model(_CHECKPOINT.value, _CONFIG.value)
  ctx, certfile = ssl_context()
  server_settings = settings(ctx)        # a bad setting fails before compiling
  server_settings.resolved_slot_counts()
  bg = background_model(config, params)
  asyncio.run(serve(config, params, server_settings, bg, certfile))
  return 0


if __name__ == "__main__":
  cli.run(main)
