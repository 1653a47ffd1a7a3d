"""A self-signed TLS certificate the session server makes for itself.

Browsers give microphones (getUserMedia, AudioWorklet) only to secure pages:
https:// or localhost. A server reached from another machine therefore needs
TLS; without a certificate from a CA, it makes its own here (an EC P-256 key,
valid for `days`, with the host names and IP addresses it serves as subject
alternative names). Clients trust it by passing the certificate file as their
CA (`interaction.client.connect(url, cafile=...)`), or a browser after the user
accepts it once; an SSH tunnel to localhost is the other way out.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl


def _names(host: str) -> list[str]:
  names = {"localhost", "127.0.0.1", "::1", socket.gethostname()}
  if host and host not in ("0.0.0.0", "::"):
    names.add(host)
  return sorted(names)


def self_signed(cert_dir: str, host: str = "localhost", days: int = 365) -> tuple[str, str]:
  """(certfile, keyfile) in cert_dir, made if missing or not covering `host`."""
  from cryptography import x509
  from cryptography.hazmat.primitives import hashes, serialization
  from cryptography.hazmat.primitives.asymmetric import ec
  from cryptography.x509.oid import NameOID

  os.makedirs(cert_dir, exist_ok=True)
  certfile = os.path.join(cert_dir, "cert.pem")
  keyfile = os.path.join(cert_dir, "key.pem")
  names = _names(host)
  if os.path.exists(certfile) and os.path.exists(keyfile):
    with open(certfile, "rb") as f:
      cert = x509.load_pem_x509_certificate(f.read())
    try:
      san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
      have = set(san.get_values_for_type(x509.DNSName)) | {
          str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
      have = set()
    now = datetime.datetime.now(datetime.timezone.utc)
    if set(names) <= have and cert.not_valid_after_utc > now + datetime.timedelta(days=1):
      return certfile, keyfile
  key = ec.generate_private_key(ec.SECP256R1())
  alt = []
  for n in names:
    try:
      alt.append(x509.IPAddress(ipaddress.ip_address(n)))
    except ValueError:
      alt.append(x509.DNSName(n))
  subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                       x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                          "interaction session server (self-signed)")])
  now = datetime.datetime.now(datetime.timezone.utc)
  cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
          .public_key(key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.SubjectAlternativeName(alt), critical=False)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
  # The key first, readable by the owner only.
  fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
  with os.fdopen(fd, "wb") as f:
    f.write(key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
  with open(certfile, "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
  return certfile, keyfile


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
  ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  ctx.load_cert_chain(certfile, keyfile)
  return ctx


def client_context(cafile: str | None = None, insecure: bool = False) -> ssl.SSLContext:
  """Trusts `cafile` (e.g. the server's self-signed cert.pem), or, with
  insecure=True, any certificate (local development only)."""
  ctx = ssl.create_default_context(cafile=cafile)
  if insecure:
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
  return ctx
