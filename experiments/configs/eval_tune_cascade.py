r"""eval_tune_cascade: tune the VAD cascade's end-of-turn silence and VAD on TRAIN data.

The cascade stands for today's commercial stacks, so it must be a fair
opponent: this config replays a grid of cascade settings on a train-split
suite (never a held-out one) and ranks them by `turn_taking`
(eval.report.turn_taking_objective: turn-taking, pause, interruption and
backchannel rates, minus 0.25 per second of latency). The winner is stored as
the cascade's default (eval/agents/vad_cascade.py DEFAULTS, and
eval_heldout.py's agents.vad_cascade).

Run:
  python -m experiments.generate --split=train --eval_refs --seed=11 --num=8 \
      --family=turn_taking,pause_handling,user_interruption,backchannel \
      --out=workdirs/train_suite
  python -m experiments.evaluate --config=experiments/configs/eval_tune_cascade.py \
      --config.suite=workdirs/train_suite --config.out=workdirs/tune_cascade

Expect: ~20 s per grid point on 2 cores (replay with the espeak voice,
then scoring from the audio: Silero + PocketSphinx); prints the ranking
(`rank 1: ...`) and writes it to OUT/report.md.
"""

import ml_collections

from experiments.configs import eval_heldout

END_SILENCES = (0.3, 0.45, 0.6, 0.8, 1.0)
# (label, settings): webrtcvad aggressiveness 1..3, Silero thresholds 0.5 (its
# default) and 0.8 (Freeze-Omni's server VAD).
VADS = (("w1", {"vad": "webrtc", "aggressiveness": 1}),
        ("w2", {"vad": "webrtc", "aggressiveness": 2}),
        ("w3", {"vad": "webrtc", "aggressiveness": 3}),
        ("s50", {"vad": "silero", "threshold": 0.5}),
        ("s80", {"vad": "silero", "threshold": 0.8}))


def get_config():
  c = eval_heldout.get_config()
  c.name = "eval_tune_cascade"
  c.benchmarks = "fdb_v1,fdb_v1_5"
  c.rank_by = "turn_taking"
  labels = []
  for tag, vad in VADS:
    for end in END_SILENCES:
      label = f"cascade_{tag}_e{int(round(end * 100)):03d}"
      section = ml_collections.ConfigDict()
      section.type = "vad_cascade"
      section.end_silence_s = end
      for k, v in vad.items():
        section[k] = v
      c.agents[label] = section
      labels.append(label)
  c.run_agents = ",".join(labels)
  c.replay.tts = "espeak"        # scored from the audio: the placeholder buzz is no speech to Silero
  c.replay.timeline = False
  c.score.timing = "default"     # FD-bench's own source: audio
  return c
