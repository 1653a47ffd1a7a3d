"""The browser page (interaction/web) driven end to end in headless Chromium.

`python -m experiments.serve --config=tiny` runs as a user runs it (TLS with its
self-signed certificate, realtime clock) and prints the page's URL; Chromium
(Debian's chromium + chromium-driver, driven by Selenium) opens it with a fake
microphone and camera fed from a WAV file and:

- streams over 10 s of microphone audio in real time and gets the model's audio
  back, played without gaps; the transcript and the timeline fill in; after Stop
  the server's own counters say it received every chunk, in order, and the page
  saw one output per turn in order. A screenshot is saved (the test's tmp dir,
  and $WEB_SCREENSHOT when set: docs/web_page.png comes from here);
- a session the server closes (reaped as idle while the page's audio was
  suspended; closed from elsewhere with its token) is reported and a new one
  starts from the notice;
- a denied microphone permission, an insecure (plain http, not localhost) page
  and a server that goes away (stops answering, then back; killed mid-session,
  then not there on Reconnect) each get a plain message and a button to try
  again, and leave no microphone, audio context or socket open.

Skips, naming what is missing, when Chromium, ChromeDriver or Selenium are not
installed (experiments/setup_env.sh installs all three).
"""

import asyncio
import functools
import http.server
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEB = os.path.join(REPO, "interaction", "web")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _missing():
  missing = []
  if CHROMIUM is None:
    missing.append("chromium (Debian package chromium)")
  if CHROMEDRIVER is None:
    missing.append("chromedriver (Debian package chromium-driver)")
  try:
    import selenium  # noqa: F401
  except ImportError:
    missing.append("selenium (PyPI)")
  return missing


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(_missing()), reason="browser test needs "
                       + ", ".join(_missing()) + "; experiments/setup_env.sh installs them"),
]


class Server:
  """`python -m experiments.serve ...` in the background; reads its URL and page."""

  def __init__(self, *args):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    self.args = args
    self.proc = subprocess.Popen([sys.executable, "-m", "experiments.serve", *args],
                                 cwd=REPO, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    self.lines = queue.Queue()
    self.out = []
    threading.Thread(target=self._pump, daemon=True).start()
    self.url = self.page = None
    deadline = time.monotonic() + 300
    while self.page is None:
      line = self.lines.get(timeout=max(1, deadline - time.monotonic()))
      if line is None:
        raise AssertionError("serve exited:\n" + "".join(self.out))
      if line.startswith("url: "):
        self.url = line.split()[1]
      if line.startswith("page: "):
        self.page = line.split()[1]

  def _pump(self):
    for line in self.proc.stdout:
      self.out.append(line)
      self.lines.put(line)
    self.lines.put(None)

  @property
  def port(self):
    return int(self.url.rsplit(":", 1)[1])

  def alive(self):
    return self.proc.poll() is None

  def stop(self, sig=signal.SIGTERM):
    if self.proc.poll() is None:
      self.proc.send_signal(sig)
      self.proc.wait(30)
    return "".join(self.out)


def _speech_wav(path):
  """About 6 s of speech and pauses (espeak-ng, else tone bursts), looped by Chromium."""
  espeak = shutil.which("espeak-ng")
  if espeak:
    raw = str(path) + ".raw.wav"
    subprocess.run([espeak, "-s", "150", "-w", raw, "Hello there. Can you hear me? "
                    "Tell me something about the weather today."], check=True,
                   capture_output=True, timeout=60)
    wave, sr = soundfile.read(raw, dtype="float32")
  else:
    sr = 16000
    t = np.arange(4 * sr) / sr
    wave = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 0.7 * t) > 0))
  wave = np.concatenate([wave, np.zeros(sr, np.float32)]).astype(np.float32)
  soundfile.write(path, 0.9 * wave / max(1e-6, float(np.abs(wave).max())), sr,
                  subtype="PCM_16")
  return str(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  tls = tmp_path_factory.mktemp("tls")
  holder = {}

  def get():
    # A test that kills the server leaves the next one a fresh server.
    if "s" not in holder or not holder["s"].alive():
      holder["s"] = Server("--config=experiments/configs/tiny.py", "--port=0",
                           f"--cert_dir={tls}", "--max_sessions=1",
                           "--idle_timeout_s=3", "--background=none")
    return holder["s"]

  yield get
  if "s" in holder:
    holder["s"].stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  d = tmp_path_factory.mktemp("browser")
  wav = _speech_wav(d / "mic.wav")
  opts = webdriver.ChromeOptions()
  opts.binary_location = CHROMIUM
  for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--ignore-certificate-errors",
            "--autoplay-policy=no-user-gesture-required", "--mute-audio",
            "--host-resolver-rules=MAP insecure.test 127.0.0.1",
            "--window-size=1280,1020", f"--user-data-dir={d / 'profile'}"]:
    opts.add_argument(a)
  opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
  driver.set_page_load_timeout(30)
  driver.set_script_timeout(30)
  yield driver
  driver.quit()


def js(driver, expr):
  return driver.execute_script(f"return ({expr});")


def wait_for(driver, expr, timeout=20, what=None):
  """Polls a JS expression until truthy; fails with the page's state if it never is."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    v = js(driver, expr)
    if v:
      return v
    time.sleep(0.1)
  state = js(driver, "JSON.stringify({phase: app.phase, notice: app.notice, "
             "stats: app.stats && {sent: app.stats.sent, outputs: app.stats.outputs, "
             "late: app.stats.late, errors: app.stats.errors, "
             "lastError: app.stats.lastError}})")
  logs = [e["message"] for e in driver.get_log("browser")][-10:]
  raise AssertionError(f"timed out after {timeout} s waiting for {what or expr}; page: "
                       f"{state}; console: {logs}")


def click(driver, element_id):
  driver.find_element("id", element_id).click()


def notice(driver):
  return js(driver, "app.notice")


def assert_reported(driver, t0, within_s, expr, what, text_start):
  """The page reached `expr` within `within_s` of t0, its notice starts with
  `text_start` and offers Reconnect, and it released everything."""
  wait_for(driver, expr, 15, what)
  assert time.monotonic() - t0 < within_s
  n = notice(driver)
  assert n["text"].startswith(text_start), n
  assert n["action"] == "Reconnect"
  assert_released(driver)


def assert_released(driver):
  """After a failure: no microphone, no audio context, no socket left open."""
  r = js(driver, "{ended: app.run.ended, media: app.run.media, "
         "ctx: app.run.ctx && app.run.ctx.state, ws: app.run.ws && app.run.ws.readyState}")
  assert r["ended"] and r["media"] is None, r
  assert r["ctx"] in (None, "closed"), r
  assert r["ws"] in (None, 2, 3), r        # CLOSING or CLOSED


def set_media_permission(driver, origin, setting):
  """What a user's answer to the browser's prompt (or its site settings) does."""
  for name in ("microphone", "camera"):
    driver.execute_cdp_cmd("Browser.setPermission", {
        "permission": {"name": name}, "setting": setting, "origin": origin})


def open_page(driver, server):
  set_media_permission(driver, server.page.rstrip("/"), "granted")
  driver.get(server.page)
  wait_for(driver, "window.app && app.phase === 'idle'", 20, "the page to load /info")


def start_and_wait_live(driver, outputs=3, timeout=60):
  click(driver, "start")
  wait_for(driver, "app.phase === 'live'", timeout, "the session to open")
  wait_for(driver, f"app.stats.outputs >= {outputs}", 20, f"{outputs} outputs")


def test_the_page_streams_the_microphone_and_plays_the_model_back(server, browser,
                                                                   tmp_path):
  srv = server()
  assert srv.page == srv.url.replace("wss://", "https://") + "/"
  assert any("page: https://127.0.0.1:" in line for line in srv.out)
  open_page(browser, srv)
  info = js(browser, "app.info")
  assert info["chunk_ms"] == 200 and info["samples_per_chunk"] == 3200
  assert info["video"] == {"width": 40, "height": 40, "formats": ["jpeg", "png"]}
  browser.find_element("id", "opt-prompt").send_keys("Be brief.")
  browser.find_element("id", "camera").click()
  t0 = time.monotonic()
  start_and_wait_live(browser)
  browser.find_element("id", "say").send_keys("hello model")
  click(browser, "say-send")
  # 11 s of real-time streaming: 55 chunks of 200 ms.
  wait_for(browser, "app.stats.outputs >= 55", 30, "55 outputs")
  streamed = time.monotonic() - t0
  stats = js(browser, "app.stats")
  shot = tmp_path / "web_page.png"
  browser.save_screenshot(str(shot))
  if os.environ.get("WEB_SCREENSHOT"):
    shutil.copyfile(shot, os.environ["WEB_SCREENSHOT"])
  transcript = js(browser, "document.getElementById('transcript').innerText")
  columns = int(browser.find_element("id", "timeline").get_attribute("data-columns"))
  click(browser, "stop")
  wait_for(browser, "app.phase === 'idle' && app.lastClosed", 10, "the close reply")
  closed = js(browser, "app.lastClosed")
  final = js(browser, "app.stats")

  # Real time: the stream took about as long as its audio, no faster.
  assert streamed >= 10.0, streamed
  assert stats["micRate"] > 0 and stats["frames"] >= 50, (stats["micRate"], stats["frames"])
  # The server received every chunk the page sent, in order (a chunk that missed
  # its tick on a loaded machine is refused as late and its turn filled, counted).
  server_stats = closed["stats"]
  assert server_stats["received"] + server_stats["late"] == final["sent"], (server_stats,
                                                                            final["sent"])
  assert server_stats["out_of_order"] == 0 and server_stats["duplicate"] == 0
  assert server_stats["bad"] == 0 and server_stats["ahead"] == 0
  assert final["sentSeqs"] == list(range(final["sent"]))
  assert server_stats["late"] <= 3 and final["filled"] <= 5, (server_stats, final["filled"])
  # One output per turn, in order, with audio that played without gaps.
  assert final["outputSeqs"] == list(range(final["outputs"])) and final["outputs"] >= 55
  pb = stats["playback"]
  assert pb["chunks"] >= 50 and pb["played"] / pb["sampleRate"] >= 8.0, pb
  assert pb["energy"] > 0, "the model's audio was silent"
  # Gapless, up to an output later than the jitter buffer on a loaded machine (the
  # page counts each gap and buffers 50 ms more after it).
  assert pb["gaps"] <= 2, (pb, np.diff(final["arrivals"]).max())
  assert final["errors"] == final["late"], final["lastError"]
  # Round trips were measured for every chunk; the transcript shows what the model
  # heard (the prompt and the typed text) and the microphone speech; the timeline
  # drew a column per output.
  assert len(stats["rtt"]) >= 50 and 0 < float(np.median(stats["rtt"])) < 1000
  assert "Be brief." in stats["heardText"] and "hello model" in stats["heardText"]
  assert "you (text)\nBe brief." in transcript and "hello model" in transcript, transcript
  assert "speaking (" in transcript
  assert columns >= 55
  assert shot.stat().st_size > 10_000


def _close_from_elsewhere(url, session, token):
  async def run():
    from interaction.client import Connection
    async with await Connection.connect(url, insecure=True) as conn:
      return await conn.request({"type": "close", "session": session, "token": token})
  return asyncio.run(run())


def test_a_session_the_server_closes_is_reported_and_a_new_one_starts(server, browser):
  srv = server()
  open_page(browser, srv)
  start_and_wait_live(browser)
  # Audio suspended (as an OS interruption does): the page sends nothing, the
  # server reaps the session after its idle timeout (3 s here) and says so.
  js(browser, "app.run.ctx.suspend().then(() => true)")
  wait_for(browser, "app.phase === 'error'", 10, "the page to notice the closed session")
  n = notice(browser)
  assert n["action"] == "Start a new session", n
  assert n["text"].startswith("The server closed the session: idle: no message for"), n
  assert_released(browser)
  # The notice's button starts a new session.
  click(browser, "notice-action")
  wait_for(browser, "app.phase === 'live' && app.stats.outputs >= 3", 30, "a new session")
  # Closed from elsewhere (its id and token): the page's next chunk is refused.
  run = js(browser, "{session: app.run.session, token: app.run.token}")
  reply = _close_from_elsewhere(srv.url, run["session"], run["token"])
  assert reply["type"] == "closed"
  wait_for(browser, "app.phase === 'error'", 10, "the page to notice")
  n = notice(browser)
  assert "no longer has this session" in n["text"] and n["action"] == "Start a new session"
  assert_released(browser)


def test_a_denied_microphone_is_reported_with_what_to_do(server, browser):
  srv = server()
  open_page(browser, srv)
  origin = srv.page.rstrip("/")
  set_media_permission(browser, origin, "denied")
  try:
    click(browser, "start")
    wait_for(browser, "app.phase === 'error'", 10, "the permission error")
    n = notice(browser)
    assert n["text"].startswith("Microphone permission was denied"), n
    assert "Try again" == n["action"]
    assert_released(browser)
    assert js(browser, "app.run.session") is None       # no session was opened
  finally:
    set_media_permission(browser, origin, "granted")
  # Allowed again: Try again goes live.
  click(browser, "notice-action")
  wait_for(browser, "app.phase === 'live' && app.stats.outputs >= 2", 30, "live again")
  # The abandoned session was closed on the new connection before the open.
  assert js(browser, "app.abandoned.length") == 0
  click(browser, "stop")
  wait_for(browser, "app.phase === 'idle'", 10, "stopped")


class _Quiet(http.server.SimpleHTTPRequestHandler):
  def log_message(self, *args):
    pass


def test_an_insecure_page_says_how_to_get_a_secure_one(browser):
  # The page over plain http from a name that is not localhost (the browser maps
  # insecure.test to loopback): no secure context, so no microphone.
  httpd = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(_Quiet, directory=WEB))
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  try:
    port = httpd.server_address[1]
    browser.get(f"http://insecure.test:{port}/")
    wait_for(browser, "window.app && app.notice", 10, "the insecure-page notice")
    assert js(browser, "window.isSecureContext") is False
    n = notice(browser)
    assert n["text"].startswith("This page is not secure"), n
    assert "without --notls" in n["text"] and f"ssh -L {port}:localhost:{port}" in n["text"]
    assert n["action"] == "Try again"
    click(browser, "start")       # still says so, and asks for nothing
    assert notice(browser)["text"].startswith("This page is not secure")
    assert js(browser, "app.phase") == "error"
  finally:
    httpd.shutdown()
    httpd.server_close()


def test_a_server_that_goes_away_is_reported_and_reconnect_works(server, browser):
  srv = server()
  open_page(browser, srv)
  start_and_wait_live(browser, outputs=10)      # past the first turns' longer allowance
  # A server that stops answering (here: stopped with SIGSTOP): the page's
  # watchdog gives up on it after 8 s of silence, says so, and releases everything.
  os.kill(srv.proc.pid, signal.SIGSTOP)
  try:
    assert_reported(browser, time.monotonic(), 12, "app.phase === 'error'",
                    "the page to notice the silence", "No reply from the server for 8 s")
  finally:
    os.kill(srv.proc.pid, signal.SIGCONT)
  # Back: Reconnect opens a new session.
  click(browser, "notice-action")
  wait_for(browser, "app.phase === 'live' && app.stats.outputs >= 2", 30, "live again")
  # The abandoned session was closed on the new connection before the open.
  assert js(browser, "app.abandoned.length") == 0
  # Killed mid-session: the connection drops, the page says so at once.
  srv.stop(signal.SIGKILL)
  assert_reported(browser, time.monotonic(), 5, "app.phase === 'error'",
                  "the page to notice the server is gone",
                  "Lost the connection to the server (code 1006")
  # Reconnect with no server: a plain answer at once, and the button again.
  t0 = time.monotonic()
  click(browser, "notice-action")
  assert_reported(browser, t0, 5, "app.phase === 'error' && app.notice && "
                  "app.notice.text.startsWith('Cannot reach the server')", "cannot reach",
                  "Cannot reach the server")
