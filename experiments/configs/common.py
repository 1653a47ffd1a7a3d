"""Shared pieces of every experiment config.

`base_config()` holds every field the code reads, with the documented defaults (README.md, WORKSPACE.md).
Experiment files start from it and change what they need. Because the configs
are locked by `config_flags`, a typo in `--config.a.b=...` is an error rather
than a silently ignored field.
"""

from __future__ import annotations

import ml_collections

from interaction.tokenizer import TOKENIZER


def layout_config() -> ml_collections.ConfigDict:
  """The micro-turn layout (interaction/layout.py); every number is a field."""
  c = ml_collections.ConfigDict()
  c.turn_ms = 200.0             # one micro-turn
  c.sample_rate = 16000         # audio is resampled to this on load
  c.mel_hop_ms = 12.5           # 16 mel frames per micro-turn
  c.mel_win_ms = 50.0
  c.n_fft = 1024
  c.n_mels = 80
  c.fmin = 80.0
  c.fmax = 7600.0
  c.dmel_bins = 16              # log10 magnitude, linear bins over [min, max]
  c.dmel_min = -7.0
  c.dmel_max = 2.0
  c.frames_per_position = 4     # mel frames stacked into one audio slot
  c.user_text_slots = 2
  c.background_text_slots = 2
  c.model_text_slots = 2
  c.video = ml_collections.ConfigDict()
  c.video.enabled = False
  c.video.height = 160
  c.video.width = 160
  c.video.patch = 40
  return c


def kernels_config() -> ml_collections.ConfigDict:
  """Routes attention, norms and projections (pallas_kernels.numerics)."""
  c = ml_collections.ConfigDict()
  # 'default': plain XLA ops (fast, not batch/chunk invariant).
  # 'invariant': fixed-shape batch- and chunk-invariant kernels.
  c.mode = "default"
  # 'xla' (CPU) | 'xla_blocked' (fixed row blocks, slower) | 'pallas' (GPU;
  # on CPU only with interpret=True). See pallas_kernels/numerics.py.
  c.impl = "xla"
  # Run the Pallas kernels (impl 'pallas', moe.gemv_kernel 'pallas') in
  # interpret mode. False: compiled, for an accelerator; a Pallas kernel on
  # the CPU backend with False raises, naming this field.
  c.interpret = False
  c.split_size = 64             # split-KV size in slots; fixed, never a count
  c.block_q = 8                 # query rows per attention block (xla_blocked, pallas)
  c.block_rows = 8              # rows per norm block; per matmul block too on
                                # xla_blocked and pallas
  return c


def moe_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.num_experts = 8
  c.top_k = 2
  c.d_ff = 128                  # per routed expert
  c.num_shared_experts = 0      # each shared expert has d_ff hidden units
  c.gating = "softmax"          # 'softmax' | 'sigmoid'
  c.impl = "auto"               # 'auto' | 'loop' | 'dense' | 'ragged_dot' | 'gather_gemv'
  c.auto_threshold = 16         # tokens per call at or below which auto uses gather_gemv
  c.load_balance_weight = 1e-2
  c.z_loss_weight = 1e-3
  c.router_dtype = "float32"
  # Kernel of impl gather_gemv: 'xla' (lax loop; CPU) | 'pallas' (TPU
  # scalar-prefetch kernel; interpret mode on CPU) | 'triton' (jax-triton,
  # GPU) | 'auto': follow kernels.impl ('pallas' -> 'pallas', else 'xla').
  c.gemv_kernel = "auto"
  return c


def model_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.vocab_size = TOKENIZER.vocab_size
  c.d_model = 64
  c.num_layers = 2
  c.num_heads = 4
  c.num_kv_heads = 2
  c.head_dim = 16
  c.d_ff = 128                  # dense SwiGLU hidden size
  c.ffn = "swiglu"              # 'swiglu' | 'moe'
  c.first_dense_layers = 0      # with ffn='moe', this many leading layers stay dense
  c.moe = moe_config()
  c.rope_theta = 10000.0
  c.norm_eps = 1e-6
  c.dtype = "float32"           # activations
  c.param_dtype = "float32"
  c.time_embed_dim = 32         # sinusoidal features of elapsed seconds
  c.hmlp_factors = (4, 2, 5)    # 40 = 4*2*5 pixels per patch side, split in 3 stages
  c.flow = ml_collections.ConfigDict()
  c.flow.width = 128
  c.flow.depth = 2
  c.flow.num_steps = 4          # Euler steps at sampling time
  c.flow.batch_mul = 2          # noise draws per target in training (MAR-style)
  c.kernels = kernels_config()
  return c


def data_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.source = "synthetic"        # 'synthetic' (in-memory random episodes) | 'episodes'
  c.path = ""                   # episode directory for source='episodes'; '' = <workdir>/data,
                                # generated on the first run (generate_per_family per family)
  c.generate_per_family = 12
  c.turns = 16                  # micro-turns per training example (crop or pad)
  c.batch_size = 4
  c.seed = 0
  c.num_workers = 0
  c.families = ""               # comma list of generator families ('' = all)
  c.crop = "random"             # window of `turns` turns: 'random' start or 'start' (turn 0)
  # Place an episode this far into a session (data_pipeline/pipeline.py
  # SessionOffset): with probability session_offset_prob, after U{0..max}
  # turns of earlier conversation, so trained times/positions cover long sessions.
  c.session_offset_prob = 0.0
  c.session_offset_max_turns = 1200  # 4 minutes: twice session.capacity_turns
  c.num_threads = 2             # grain read threads per process (order stays deterministic)
  c.prefetch = 16               # examples read ahead per process
  return c


def train_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.steps = 100
  c.lr = 3e-3
  c.warmup_steps = 10
  c.end_lr_ratio = 0.1
  c.weight_decay = 0.01
  c.b1 = 0.9
  c.b2 = 0.95
  c.grad_clip = 1.0
  c.seed = 0
  c.text_loss_weight = 1.0
  c.flow_loss_weight = 1.0
  # Text targets that are <pad> (the model is silent) weigh this much against
  # 1 for a spoken byte or control token (interaction/objectives.py).
  c.pad_weight = 1.0
  # Std of Gaussian noise (log10 mel) added to the model's own audio before it
  # is quantized into the model_audio input stream, drawn per example from
  # U[0, audio_input_noise]: training sees fed-back audio as imperfect as the
  # flow head's samples are in a live session. 0 = the clean ground truth.
  c.audio_input_noise = 0.0
  # Fraction of examples (drawn per example and step) whose model_audio input
  # is the flow head's own samples from a teacher-forced pass of the current
  # parameters, quantized as a live session feeds them back: scheduled
  # sampling of the audio stream. Costs one more forward (no gradient) when > 0.
  c.self_feed = 0.0
  c.log_every = 10
  c.ckpt_every = 50
  c.keep_checkpoints = 2
  c.max_minutes = 0.0           # >0: stop (and checkpoint) after this wall time
  # Start of a run without a checkpoint in its workdir: '' = from scratch, or
  # another training workdir whose latest parameters start this run (fresh
  # optimizer state, step 0, data from its first batch; the parameter names
  # and shapes must match). A checkpoint in the workdir always wins (resume).
  c.init_from = ""
  c.plot_curves = True          # write <workdir>/curves.png at every checkpoint and at the end
  return c


def session_config() -> ml_collections.ConfigDict:
  """Streaming sessions (interaction/streaming.py)."""
  c = ml_collections.ConfigDict()
  c.capacity_turns = 600        # KV cache size in micro-turns (2 minutes)
  c.prefix_turns = 10           # never evicted: the session's first 2 seconds
  c.temperature = 0.0           # text sampling; 0 = greedy
  c.top_p = 1.0
  c.flow_temperature = 1.0      # scale of the flow head's initial noise
  c.vocoder_iters = 16          # Griffin-Lim iterations per 200 ms chunk
  c.vocoder_context_frames = 8  # earlier mel frames re-synthesised for continuity
  c.output_ceiling = 0.98       # peak limiter on the audio out (interaction/audio_stream.py)
  c.output_release_s = 0.05     # its gain recovers over this long after a loud burst
  return c


def eval_config() -> ml_collections.ConfigDict:
  """The held-out evaluation of `python -m experiments.main --mode=eval|train_and_eval`
  (experiments/main_job.py): a suite generated with data_pipeline.generate
  (split 'heldout') replayed into `agents` by experiments.evaluate with the
  eval_heldout config, the model agent reading the workdir's latest checkpoint.
  Writes <workdir>/eval/ (report.md, report.json, report.png, metrics.json)."""
  c = ml_collections.ConfigDict()
  c.suite = ""                  # '' = <workdir>/eval_suite, generated on first use from
                                # families/num_per_family/seed; or an existing suite dir
  c.families = "all"            # generator families of the generated suite ('all' or a comma list)
  c.num_per_family = 4          # episodes per family of the generated suite
  c.seed = 1                    # its generator seed (split 'heldout': held-out voices)
  c.agents = "oracle,vad_cascade,model"  # eval_heldout's run_agents (sections of its `agents`)
  c.benchmarks = ""             # comma list; '' = every benchmark found in the suite
  c.late_session = False        # passed to the eval config's `late_session` field
  # Extra eval_heldout fields, 'a.b=value,...' (e.g. 'score.timing=events,replay.timeline=False').
  c.overrides = ""
  return c


def mesh_config() -> ml_collections.ConfigDict:
  """Where training runs (experiments/mesh.py, interaction/sharding.py)."""
  c = ml_collections.ConfigDict()
  # '' = one device, as without a mesh (in a multi-process run each process
  # then trains on its own). Else a mesh over every device of every process,
  # e.g. 'data=2,fsdp=4' or 'fsdp=-1,expert=8' (axes data, fsdp, expert,
  # sequence, tensor; one may be -1). data.batch_size is then the global batch.
  c.shape = ""
  return c


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "base"
  c.layout = layout_config()
  c.model = model_config()
  c.data = data_config()
  c.train = train_config()
  c.session = session_config()
  c.eval = eval_config()
  c.mesh = mesh_config()
  return c
