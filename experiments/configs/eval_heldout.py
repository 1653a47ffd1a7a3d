r"""eval_heldout: replay a held-out suite into several agents, score, report.

Run:
  python -m experiments.generate --family=all --num=4 --split=heldout --seed=1 \
      --out=workdirs/eval_suite
  python -m experiments.evaluate --config=experiments/configs/eval_heldout.py \
      --config.suite=workdirs/eval_suite --config.out=workdirs/eval_report
  # add the trained model:
  #   --config.run_agents=oracle,vad_cascade,model --config.agents.model.checkpoint=workdirs/demo
  # or an untrained one (noise): --config.run_agents=model --config.agents.model.config=tiny

Expect: about a second per agent and sample for oracle and vad_cascade on 2
cores (replay, then scoring twice: from the audio, Silero VAD + PocketSphinx
on output.wav, and from the agent's events; about 25 s for the 32 samples of
`--num=4`). Writes OUT/report.{md,json,png} and each agent's replay under
OUT/<agent>/<benchmark>/<key>/ (rerunning skips finished samples). The oracle
scores perfectly on every benchmark from its events (TimeSpeak/CueSpeak
accuracy 1, Charades mIoU 100, RepCount OBO 1, FD-bench turn-taking TOR 1 at
0 s latency) and, from the audio, the same FD-bench take-over rates with
latencies within 0.1 s (the recogniser's word errors lower its interruption
rating and RepCount/Charades); the cascade cannot speak at a set time, react
to cues or see, so it scores 0 on CueSpeak and Charades.

`--config.late_session=True` adds the late-session column: every FD-bench
turn-taking and pause sample replayed again after two minutes
(`late_session_s`) of earlier conversation in the same session, scored on
its own part (`fdb_v1@late` in the report, replays under
OUT/<agent>/fdb_v1@late_120s/); about 120 s of extra audio per such sample
and agent.

Each `agents.<name>` section holds the agent's settings (its constructor
arguments; `model` takes a training workdir as `checkpoint`); `run_agents`
says which sections run, in report order. A section may set `type` to run an
agent kind under another name (e.g. two cascades with different
end_silence_s, in a copy of this file).
"""

import ml_collections
from ml_collections import config_dict


def get_config():
  c = ml_collections.ConfigDict()
  c.name = "eval_heldout"
  c.suite = ""                   # benchmark folders (experiments.generate --split=heldout)
  c.out = ""                     # report and replays go here
  c.run_agents = "oracle,vad_cascade"  # comma list of sections of `agents`
  c.benchmarks = ""              # comma list; empty = every benchmark found in the suite
  c.rank_by = ""                 # rank the agents in the report by an objective (e.g. turn_taking)
  # The late-session column (eval/late.py): FD-bench v1 turn-taking and pause
  # samples replayed again after >= late_session_s of earlier conversation in
  # the same session, reported as fdb_v1@late beside the plain figures.
  c.late_session = False
  c.late_session_s = 120.0

  c.agents = ml_collections.ConfigDict()
  c.agents.silent = ml_collections.ConfigDict()
  c.agents.oracle = ml_collections.ConfigDict()
  c.agents.vad_cascade = ml_collections.ConfigDict()
  # Tuned on train data (eval_tune_cascade.py; eval.agents.vad_cascade.DEFAULTS).
  c.agents.vad_cascade.vad = "webrtc"           # webrtc | silero
  c.agents.vad_cascade.end_silence_s = 0.45     # silence that ends the user's turn
  c.agents.vad_cascade.response_delay_s = 0.0
  c.agents.vad_cascade.aggressiveness = 1       # webrtcvad 0..3
  c.agents.vad_cascade.threshold = 0.5          # Silero speech probability (vad=silero)
  c.agents.vad_cascade.barge_in = True
  c.agents.recorded = ml_collections.ConfigDict()
  c.agents.recorded.recorded_dir = ""           # a previous replay's folder for one benchmark
  c.agents.model = ml_collections.ConfigDict()
  c.agents.model.checkpoint = ""                # training workdir (config.json + checkpoints/)
  c.agents.model.config = ""                    # or a model config (e.g. tiny): random params
  c.agents.model.temperature = config_dict.placeholder(float)  # text sampling; unset = config's
  # Scale of the flow head's initial noise (audio sampling); unset = the config's.
  c.agents.model.flow_temperature = config_dict.placeholder(float)

  c.replay = ml_collections.ConfigDict()
  c.replay.pace = "simulated"    # 'simulated' (as fast as the agent runs) | 'wall' (live)
  c.replay.lag_chunks = 1        # output windows trail the input by this many 200 ms chunks
  c.replay.tts = "auto"          # speech of oracle and cascade: auto | espeak | placeholder
  c.replay.resume = True         # skip samples whose meta.json says done
  c.replay.timeline = True       # timeline.png per sample
  c.replay.progress = True       # progress bar on stderr

  c.score = ml_collections.ConfigDict()
  c.score.judge = "rule"         # offline rule-based judge
  c.score.timing = "both"        # both (each benchmark's default + the other, side by side)
                                 # | audio (VAD + recogniser on output.wav) | events (agent's word times)
  c.score.vad = "silero"         # VAD of the audio timing source: silero | webrtc
  c.score.omega = config_dict.placeholder(float)  # extra PAUC omega (ProactiveVideoQA)
  c.score.strict = False         # Charades: IoU > m instead of >= m
  return c
