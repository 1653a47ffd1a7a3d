"""Test helpers: a session server on loopback in a thread of its own.

The server's event loop runs in a background thread, so a test drives clients
with `asyncio.run(...)` in the main thread exactly as a separate process would,
and can still reach into the server (its loop, its runner) through `call`.
"""

from __future__ import annotations

import asyncio
import functools
import threading

import numpy as np

from experiments.configs import tiny
from interaction import params as params_lib
from interaction.server import ServerSettings, SessionServer


def config(capacity=16, prefix=2, mode="invariant"):
  c = tiny.get_config()
  c.model.kernels.mode = mode
  c.session.capacity_turns = capacity
  c.session.prefix_turns = prefix
  return c


@functools.lru_cache(maxsize=None)
def params():
  """One parameter tree for every test (pools share compiled steps per params)."""
  return params_lib.init_params(config(), 0)


@functools.lru_cache(maxsize=None)
def _reference_sessions():
  from interaction.session import Sessions
  return Sessions(config(), params(), batch_size=1)


def reference_session(seed):
  """A Sessions(batch_size=1) of config(), reset to `seed` (compiled once)."""
  ref = _reference_sessions()
  ref.reset(seeds=[seed])
  return ref


class ServerThread:

  def __init__(self, settings: ServerSettings, background=None, cfg=None):
    self.cfg = cfg or config()
    self.server = SessionServer(self.cfg, params(), settings, background=background)
    self.loop = asyncio.new_event_loop()
    self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

  def __enter__(self):
    self.thread.start()
    self.url = self.call(self.server.start(), timeout=600)
    return self

  def call(self, coro, timeout=60):
    """Runs a coroutine on the server's loop and returns its result."""
    return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

  def stop(self):
    if self.loop.is_running():
      self.call(self.server.stop())
      self.loop.call_soon_threadsafe(self.loop.stop)
      self.thread.join(30)

  def __exit__(self, *exc):
    self.stop()


def chunks(n, seed, samples=3200):
  """n chunks of a distinct test signal: tone bursts plus noise."""
  rng = np.random.default_rng(seed)
  t = np.arange(n * samples) / 16000.0
  f = 120.0 + 40.0 * seed
  wave = (0.3 * np.sin(2 * np.pi * f * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)
          + 0.02 * rng.standard_normal(t.shape))
  return wave.astype(np.float32).reshape(n, samples)


def pcm16_round(x):
  """What the wire does to a float chunk (PCM16 and back)."""
  from interaction import protocol
  x = np.asarray(x)
  return protocol.pcm16_to_float(protocol.encode_pcm16(x)).reshape(x.shape)
