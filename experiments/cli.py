"""absl start-up shared by the entry points: config errors become one clear line.

ml_collections applies `--config.a.b=v` overrides while absl parses flags and
raises a bare AttributeError/KeyError for a key the config lacks; we turn
that into a usage error naming the flag, before any work starts.
"""

import sys

from absl import app, flags


def parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    key = str(e).strip("\"'")
    named = [b for b in bad if b.endswith("." + key) or f".{key}." in b] or bad
    sys.stderr.write(f"error: unknown config key in {', '.join(named)} "
                     f"(no field {key!r}); see the config file for valid fields\n")
    sys.exit(2)
  except flags.Error as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(2)


def run(main):
  """app.run(main) with the config-aware flag parser."""
  app.run(main, flags_parser=parse_flags)
