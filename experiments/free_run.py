r"""Where free running departs from teacher forcing (issue 15, item 2).

  python -m experiments.free_run --workdir=workdirs/demo --episodes=DIR/episodes \
      [--families=turn_taking,pause_handling] [--num=4]

Replays held-out episodes through a streaming session four ways: both output
streams forced to the episode's ground truth (teacher forcing, what training
sees), the model's audio forced and its text free, its text forced and its
audio free, and both free (a live session). Per mode it reports how the text
and the audio depart from the ground truth:

  text_acc        argmax of each model_text slot == the ground-truth token
  false_speak     turns the model should be silent in (all <pad>) where it emits a non-pad token
  missed_speak    turns with ground-truth text where it emits only <pad>
  mel_mae         |generated log10 mel - ground truth|, over frames of real turns
  silent_mel      mean generated log10 mel over frames that are silent in the truth
                  (the floor is layout.dmel_min); near the floor = silence out
  loud_when_silent  fraction of those frames whose loudest band is above -4

Prints a table and, as its last line, one JSON object {mode: {metric: value}}.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from data_pipeline import episode as episode_lib
from data_pipeline import example as example_lib
from experiments import cli
from experiments import trainer
from interaction import mel as mel_lib
from interaction.layout import LayoutSpec
from interaction.streaming import Forced, SessionRunner, TurnInputs
from interaction.tokenizer import TOKENIZER

MODES = ("teacher", "text_free", "audio_free", "free")


def episode_batch(paths, config) -> dict[str, np.ndarray]:
  """Whole episodes as one batch [N, T_max, ...], padded past each end."""
  spec = LayoutSpec.from_config(config.layout)
  params = mel_lib.MelParams.from_layout(config.layout)
  eps = [episode_lib.read_episode(p, with_video=spec.video_enabled,
                                  target_rate=spec.sample_rate) for p in paths]
  t_max = max(example_lib.num_turns(ep, spec) for ep in eps)
  rows = [example_lib.episode_example(ep, spec, start_turn=0, turns=t_max, params=params)
          for ep in eps]
  return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def replay(runner: SessionRunner, batch: dict, mode: str, seed: int = 0):
  """Runs every turn of the batch's episodes in one scan; returns TurnOutputs [T, N, ...]."""
  spec = runner.spec
  n, t = batch["model_text"].shape[:2]
  tm = lambda x: jnp.asarray(np.swapaxes(x, 0, 1))  # [N, T, ...] -> [T, N, ...]
  video = present = None
  if spec.video_enabled:
    video, present = tm(batch["video"]), tm(batch["video_present"])
  inputs = TurnInputs(tm(batch["user_audio"]), tm(batch["user_text"]),
                      tm(batch["background_text"]), video, present)
  text = tm(batch["model_text"]) if mode in ("teacher", "audio_free") else None
  audio = tm(batch["model_audio"]) if mode in ("teacher", "text_free") else None
  forced = None if mode == "free" else Forced(text, audio)
  state = runner.init(n, seeds=np.arange(n) + seed)
  _, out = runner.run(state, inputs, forced)
  return jax.tree_util.tree_map(np.asarray, out)


def departure_metrics(batch: dict, out, spec: LayoutSpec) -> dict[str, float]:
  mask = np.swapaxes(batch["turn_mask"], 0, 1)                    # [T, N]
  truth = np.swapaxes(batch["model_text"], 0, 1)                  # [T, N, n]
  pred = np.argmax(out.text_logits, axis=-1)
  pad = TOKENIZER.pad_id
  silent_turn = np.all(truth == pad, axis=-1) & mask
  speak_turn = ~np.all(truth == pad, axis=-1) & mask
  emits = ~np.all(pred == pad, axis=-1)
  mel_true = np.swapaxes(batch["model_mel"], 0, 1)                # [T, N, F, M]
  frame_mask = np.broadcast_to(mask[..., None], mel_true.shape[:3])
  silent_frame = (mel_true.max(-1) <= spec.dmel_min + 0.5) & frame_mask
  gen = out.mel
  m = {
      "text_acc": float(np.mean((pred == truth)[mask])),
      "false_speak": float(np.mean(emits[silent_turn])) if silent_turn.any() else 0.0,
      "missed_speak": float(np.mean(~emits[speak_turn])) if speak_turn.any() else 0.0,
      "mel_mae": float(np.mean(np.abs(gen - mel_true)[frame_mask])),
      "silent_mel": float(np.mean(gen[silent_frame])) if silent_frame.any() else 0.0,
      "loud_when_silent": (float(np.mean(gen.max(-1)[silent_frame] > -4.0))
                           if silent_frame.any() else 0.0),
  }
  return m


def run(workdir: str, episodes: str, families: list[str] | None, num: int,
        temperature: float = 0.0, flow_temperature: float | None = None) -> dict:
  config, params = trainer.load_trained(workdir)
  config.session.temperature = temperature
  if flow_temperature is not None:
    config.session.flow_temperature = flow_temperature
  paths = episode_lib.list_episodes(episodes, families)
  by_family: dict[str, list] = {}
  for p in paths:
    by_family.setdefault(p.parent.name, []).append(p)  # <root>/<family>/<id>/
  chosen = [p for f in sorted(by_family) for p in sorted(by_family[f])[:num]]
  if not chosen:
    raise ValueError(f"episodes: none under {episodes!r} (families={families})")
  batch = episode_batch(chosen, config)
  t = batch["model_text"].shape[1]
  # Room for the whole batch and no more: the cache's size is what each of a
  # turn's seven attention calls reads, and nothing here is evicted.
  config.session.capacity_turns = max(t + 1, int(config.session.prefix_turns) + 2)
  runner = SessionRunner(config, params)
  return {mode: departure_metrics(batch, replay(runner, batch, mode), runner.spec)
          for mode in MODES}


_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (config.json + checkpoints).")
_EPISODES = flags.DEFINE_string("episodes", None, "Episode folder (held-out split).")
_FAMILIES = flags.DEFINE_string("families", "", "Comma list of families ('' = all).")
_NUM = flags.DEFINE_integer("num", 4, "Episodes per family.")
_TEMP = flags.DEFINE_float("temperature", 0.0, "Text sampling temperature in the free modes.")
_FLOW_TEMP = flags.DEFINE_float("flow_temperature", None, "Flow noise scale (default: config's).")
flags.mark_flags_as_required(["workdir", "episodes"])


def main(argv):
  del argv
  res = run(_WORKDIR.value, _EPISODES.value, cli.comma_list(_FAMILIES.value) or None,
            _NUM.value, _TEMP.value, _FLOW_TEMP.value)
  keys = list(next(iter(res.values())))
  print(f"{'mode':12s}" + "".join(f"{k:>18s}" for k in keys))
  for mode, m in res.items():
    print(f"{mode:12s}" + "".join(f"{m[k]:>18.4f}" for k in keys))
  print(json.dumps(res))


if __name__ == "__main__":
  cli.run(main)
