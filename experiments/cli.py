"""absl start-up shared by every entry point in experiments/.

- Config errors become one clear line: ml_collections applies
  `--config.a.b=v` overrides while absl parses flags and raises a bare
  AttributeError/KeyError for a key the config lacks; we turn that into a
  usage error naming the flag, before any work starts.
- Quiet by default: orbax, grain and jax log every checkpoint step and
  compile at INFO (e.g. `Closing _NonBlockingMetadataStore(...)`), which
  buries the entry point's own progress and results. Only warnings show
  unless `--verbosity=N` (`-v N`; a bare `-v` means INFO) asks for more.
"""

import sys

from absl import app, flags, logging


def _bare_v(argv):
  """A bare `-v` (no level after it) means `--verbosity=0` (INFO)."""
  out = list(argv[:1])
  rest = list(argv[1:])
  for i, a in enumerate(rest):
    nxt = rest[i + 1] if i + 1 < len(rest) else ""
    if a == "-v" and not nxt.lstrip("-").isdigit():
      a = "--verbosity=0"
    out.append(a)
  return out


def parse_flags(argv):
  argv = _bare_v(argv)
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    # ml_collections' KeyError text is "'key'\nDid you mean ...?": the key is
    # its first line, the suggestion the rest.
    inner = e
    while inner.args and isinstance(inner.args[0], BaseException):
      inner = inner.args[0]  # an AttributeError may wrap the KeyError
    msg = str(inner.args[0]) if inner.args else str(inner)
    key, _, hint = msg.partition("\n")
    key = key.strip("\"'")
    named = [b for b in bad if b.endswith("." + key) or f".{key}." in b] or bad
    hint = f" {hint.strip()}" if hint.strip() else ""
    sys.stderr.write(f"error: unknown config key in {', '.join(named)} "
                     f"(no field {key!r}).{hint} See the config file for valid "
                     "fields.\n")
    sys.exit(2)
  except flags.Error as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)


def comma_list(value: str) -> list:
  """'a, b,,c' -> ['a', 'b', 'c'] (comma lists in flags and config fields)."""
  return [x.strip() for x in value.split(",") if x.strip()]


def quiet_unless_verbose():
  """WARNING and above only, unless --verbosity/-v was given."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def run(main, argv=None):
  """app.run(main) with the config-aware flag parser and quiet logging.

  A ValueError from the library (a bad setting, a missing folder) ends the
  run with its message and exit status 2; with -v it keeps its traceback.
  """
  def _main(argv):
    quiet_unless_verbose()
    try:
      return main(argv)
    except ValueError as e:
      if flags.FLAGS["verbosity"].present:
        raise
      sys.stderr.write(f"error: {e}\n")
      return 2

  app.run(_main, argv=argv, flags_parser=parse_flags)
