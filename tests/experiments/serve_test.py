"""`python -m experiments.serve` and `python -m experiments.client` as a user runs
them: the server prints its wss:// URL and certificate, the client streams a
WAV, saves audio and events and prints round-trip percentiles; a killed server
ends the client with a clear error, not a hang."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Server:
  """`python -m experiments.serve ...` in the background; reads its URL."""

  def __init__(self, *args):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    self.proc = subprocess.Popen([sys.executable, "-m", "experiments.serve", *args],
                                 cwd=REPO, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    self.lines = queue.Queue()
    threading.Thread(target=self._pump, daemon=True).start()
    self.out = []
    self.url = self.cert = None
    deadline = time.monotonic() + 300
    while self.url is None:
      line = self.lines.get(timeout=max(1, deadline - time.monotonic()))
      if line is None:
        raise AssertionError("serve exited:\n" + "".join(self.out))
      if line.startswith("url: "):
        self.url = line.split()[1]
    while self.cert is None and self.url.startswith("wss"):
      line = self.lines.get(timeout=30)
      if line and line.startswith("cert: "):
        self.cert = line.split()[1]

  def _pump(self):
    for line in self.proc.stdout:
      self.out.append(line)
      self.lines.put(line)
    self.lines.put(None)

  def stop(self, sig=signal.SIGTERM):
    if self.proc.poll() is None:
      self.proc.send_signal(sig)
      self.proc.wait(30)
    return "".join(self.out)


def _wav(path, sr, seconds):
  t = np.arange(int(sr * seconds)) / sr
  soundfile.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), sr, subtype="PCM_16")
  return str(path)


@pytest.mark.integration
def test_serve_prints_its_url_and_the_client_streams_a_wav(workdir, tmp_path, run_module):
  server = Server(f"--checkpoint={workdir}", "--port=0", "--max_sessions=2",
                  f"--cert_dir={tmp_path / 'tls'}")
  try:
    assert server.url.startswith("wss://127.0.0.1:") and os.path.exists(server.cert)
    wav = _wav(tmp_path / "in.wav", 22050, 2.1)     # 11 chunks, resampled by the client
    out = tmp_path / "client"
    r = run_module("experiments.client", f"--url={server.url}", f"--cafile={server.cert}",
                   f"--input={wav}", f"--out={out}", "--pace=fast", "--text=hi",
                   "--prompt=be brief", timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["chunks"] == 11 and summary["errors"] == 0 and summary["filled"] == 0
    assert summary["rtt_p50_ms"] > 0 and summary["rtt_p99_ms"] >= summary["rtt_p50_ms"]
    assert "round trip p50" in r.stdout
    wave, sr = soundfile.read(out / "output.wav")
    assert sr == 16000 and len(wave) == 11 * 3200
    assert (out / "events.jsonl").exists() and (out / "summary.json").exists()
    # Without the certificate, TLS verification refuses the self-signed server.
    r = run_module("experiments.client", f"--url={server.url}", f"--input={wav}",
                   f"--out={tmp_path / 'x'}", timeout=120)
    assert r.returncode == 2 and "CERTIFICATE_VERIFY_FAILED" in r.stderr
  finally:
    log = server.stop()
  assert "stopped:" in log


@pytest.mark.integration
def test_a_killed_server_ends_the_client_with_a_clear_error(tmp_path):
  server = Server("--config=experiments/configs/tiny.py", "--port=0", "--notls",
                  "--max_sessions=1", "--novocoder")
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  wav = _wav(tmp_path / "long.wav", 16000, 30.0)
  client = subprocess.Popen(
      [sys.executable, "-m", "experiments.client", f"--url={server.url}",
       f"--input={wav}", f"--out={tmp_path / 'c'}", "--pace=realtime", "--timeout=20"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  time.sleep(8)                      # client start-up, then a few seconds of stream
  server.stop(signal.SIGKILL)
  t0 = time.monotonic()
  out, err = client.communicate(timeout=60)
  assert client.returncode == 2, out + err
  assert f"error: connection to {server.url} closed" in err, err
  assert time.monotonic() - t0 < 30
  # And with no server at all: a clear error at once.
  r = subprocess.run([sys.executable, "-m", "experiments.client", f"--url={server.url}",
                      f"--input={wav}", f"--out={tmp_path / 'd'}"],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert r.returncode == 2 and f"error: cannot connect to {server.url}" in r.stderr


@pytest.mark.integration
def test_serve_benchmark_runs_and_prints_json(run_module):
  r = run_module("experiments.bench", "serve", "--config=tiny", "--seconds=1.2",
                 "--max_sessions=1", "--novocoder", "--capacity_turns=16", "--tick_sizes=1,2",
                 "--ticks=2", timeout=600)
  assert r.returncode == 0, r.stderr
  figures = json.loads(r.stdout.strip().splitlines()[-1])
  assert figures["capacity_turns"] == 16 and "batched_over_per_session_ratio" in figures
  assert {"batched_max_sessions", "per_session_max_sessions", "tick_n2_ratio",
          "tick_batched_n2_ms"} <= set(figures)
