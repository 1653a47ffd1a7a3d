"""The browser page of the session server, served on the WebSocket's own port.

    https://HOST:PORT/            the page (index.html, app.js, worklet.js, style.css)
    https://HOST:PORT/info        what the page needs before it opens a session (JSON)
    wss://HOST:PORT/              the session protocol (interaction.protocol)

The files beside this module are plain HTML, CSS and JavaScript modules: no
build step. `http_response` is the server's `process_request` hook
(websockets): a request that asks for a WebSocket upgrade goes on to the
handshake; any other GET is answered here with a file of this folder (by
exact name, nothing else on disk is reachable), `/info`, or 404.

Browsers give the microphone and AudioWorklet only to secure pages (https://
or localhost), so the page is useful from another machine only over TLS (the
server's default) or an SSH tunnel to localhost; the page itself says so when
it finds itself on an insecure origin.
"""

from __future__ import annotations

import email.utils
import http
import json
import os

from websockets.datastructures import Headers
from websockets.http11 import Response

DIR = os.path.dirname(os.path.abspath(__file__))
TYPES = {".html": "text/html; charset=utf-8",
         ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml",
         ".png": "image/png"}
# The page talks only to its own origin (HTTP for /info, WebSocket for sessions).
CSP = ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; "
       "media-src 'self' blob: mediastream:; style-src 'self'; script-src 'self'; "
       "worker-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def files() -> dict[str, str]:
  """Request path -> file of this folder, for every servable file."""
  out = {}
  for name in sorted(os.listdir(DIR)):
    if os.path.splitext(name)[1] in TYPES and os.path.isfile(os.path.join(DIR, name)):
      out["/" + name] = os.path.join(DIR, name)
  out["/"] = out.get("/index.html")
  return out


def response(status: int, body: bytes, content_type: str) -> Response:
  status = http.HTTPStatus(status)
  headers = Headers([
      ("Date", email.utils.formatdate(usegmt=True)),
      ("Connection", "close"),
      ("Content-Length", str(len(body))),
      ("Content-Type", content_type),
      ("Cache-Control", "no-cache"),
      ("X-Content-Type-Options", "nosniff"),
      ("Referrer-Policy", "no-referrer"),
      ("Content-Security-Policy", CSP),
  ])
  return Response(status.value, status.phrase, headers, body)


def is_websocket(request) -> bool:
  upgrade = request.headers.get("Upgrade", "") or ""
  return "websocket" in upgrade.lower()


def http_response(request, info) -> Response | None:
  """The reply to a plain HTTP GET, or None for a WebSocket handshake.

  info: a function returning the JSON-able dict served at /info.
  """
  if is_websocket(request):
    return None
  path = request.path.split("?", 1)[0].split("#", 1)[0]
  if path == "/info":
    body = json.dumps(info(), separators=(",", ":")).encode()
    return response(200, body, "application/json")
  if path == "/favicon.ico":
    return response(204, b"", "text/plain")
  target = files().get(path)
  if target is None:
    return response(404, f"not found: {path[:200]}\nthe page is at /\n".encode(),
                    "text/plain; charset=utf-8")
  with open(target, "rb") as f:
    body = f.read()
  return response(200, body, TYPES[os.path.splitext(target)[1]])
