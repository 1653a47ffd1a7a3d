"""espeak-ng in a process that runs JAX: no fork there, and the same speech."""

import hashlib
import json
import subprocess
import sys
import warnings

import jax.numpy as jnp
import pytest

from data_pipeline import tts

TEXT = "one hundred fifty six, don't stop"
_FINGERPRINT = (
    "import hashlib, json; from data_pipeline import tts; "
    f"s = tts.synthesize({TEXT!r}); "
    "print(json.dumps([hashlib.sha256(s.wave.tobytes()).hexdigest(), s.words]))")


def test_speech_is_the_same_with_jax_running_and_nothing_forks_it():
  try:
    tts.check_available()
  except tts.EspeakNotFound as e:
    pytest.skip(str(e))
  jnp.ones(2).block_until_ready()  # JAX's backend (and its threads) started
  assert tts._runtime_threads_started()  # pylint: disable=protected-access
  with warnings.catch_warnings():
    warnings.simplefilter("error", RuntimeWarning)  # JAX warns on os.fork()
    speech = tts.synthesize(TEXT)
  # The same phrase from a fresh process that never starts JAX (the fork path).
  fresh = subprocess.run([sys.executable, "-c", _FINGERPRINT], capture_output=True,
                         text=True, check=True, timeout=120)
  digest, words = json.loads(fresh.stdout)
  assert hashlib.sha256(speech.wave.tobytes()).hexdigest() == digest
  assert speech.words == words
