"""Evaluation: replay streaming benchmarks into agents, score them, report.

Layout of the package (one job per module):
  agents/       the agent protocol (`agents.base`) and the baseline agents
  audio.py      wav reading/writing at the 16 kHz evaluation rate
  events.py     text events (`events.jsonl`), words and utterances
  samples.py    the `Sample` every loader produces
  loaders.py    the benchmarks' published formats and our synthetic suites
  replay.py     the replay harness
  late.py       the late-session column: samples replayed after earlier conversation
  predictions.py  reading replay folders and the benchmarks' prediction files
  scoring/      one scorer per benchmark, following the published code (and what
                each metric needs an agent to be able to do: REQUIRES)
  judges.py     offline rule-based judge and the LLM adapter slot
  asr.py        speech recognition with word times (PocketSphinx; transcribe, word_error_rate)
  vad.py        voice activity segments (Silero VAD via ONNX, or webrtcvad)
  score.py      scoring one benchmark's predictions, from the audio or the agent's events
  report.py, run.py  a suite into several agents, side-by-side reports

The command lines live in experiments/ (evaluate, replay, score); this package
takes plain arguments.
"""
