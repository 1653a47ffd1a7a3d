"""grain pipelines: episodes -> fixed-shape micro-turn training batches.

`make_train_iter(config)` returns a `TrainIterator`: an endless iterator of
dicts of numpy arrays in the layout.py batch contract, with
  get_state() -> JSON-serialisable dict   (grain's iterator state + counters)
  set_state(state)                        (restores exactly: the next batch is
                                           the one an uninterrupted run yields)
  stats() -> dict                         (examples, skipped, errors by kind)
Save the state next to the model with `orbax_save_args(it)` /
`orbax_restore_args()` (orbax's JSON handler).

Determinism: element i of the (sharded, shuffled, repeated) stream is a pure
function of (config.data.seed, i), grain's per-index random seeds included, so
the stream is the same on every run, with any number of threads or worker
processes. Process p of n reads the episodes p, p+n, p+2n, ... of the sorted
list (or the synthetic indices p, p+n, ...): shards are disjoint.

Bad input (corrupt, truncated, empty or multi-channel audio, unreadable
video or JSON) is caught per episode: it is skipped, counted in `stats()` and
logged once per file; the batch is filled from the following episodes.
"""

from __future__ import annotations

import logging

import grain
import numpy as np

from data_pipeline import episode as episode_lib
from data_pipeline import example as example_lib
from interaction import mel as mel_lib
from data_pipeline import synthetic
from interaction.layout import LayoutSpec, Stream

_SKIP = "__skip__"
# A run that meets this many bad episodes in a row has no usable data left.
_MAX_CONSECUTIVE_SKIPS = 1000
_SYNTHETIC_LENGTH = 1 << 40


def _crop_start(n_total: int, turns: int, crop: str, rng: np.random.Generator) -> int:
  if crop == "start" or n_total <= turns:
    return 0
  return int(rng.integers(0, n_total - turns + 1))


class SessionOffset:
  """Where in a session a training window sits (data.session_offset_*).

  With probability `prob` an episode is placed after `U{0..max_turns}` turns
  of earlier conversation, so elapsed times and RoPE positions in training
  cover what a long session reaches (its KV capacity and beyond) instead of
  only an episode's first seconds. prob 0 draws nothing: the crop stream is
  the same as without offsets.
  """

  def __init__(self, prob: float, max_turns: int):
    if not 0.0 <= prob <= 1.0:
      raise ValueError(f"data.session_offset_prob: {prob} is not in [0, 1]")
    if max_turns < 0:
      raise ValueError(f"data.session_offset_max_turns: {max_turns} must be >= 0")
    self.prob, self.max_turns = float(prob), int(max_turns)

  @classmethod
  def from_config(cls, data) -> "SessionOffset":
    get = data.get if hasattr(data, "get") else (lambda k, d: d)
    return cls(float(get("session_offset_prob", 0.0)),
               int(get("session_offset_max_turns", 0)))

  def __call__(self, rng: np.random.Generator) -> int:
    if self.prob == 0.0 or self.max_turns == 0:
      return 0
    if rng.random() >= self.prob:
      return 0
    return int(rng.integers(0, self.max_turns + 1))


class _EpisodeLoader:
  """Reads and crops one episode; errors become a skip marker, never an exception."""

  def __init__(self, spec, params, turns, crop, offset: SessionOffset):
    self.spec, self.params, self.turns, self.crop = spec, params, turns, crop
    self.offset = offset

  def __call__(self, path, rng: np.random.Generator):
    try:
      ep = episode_lib.read_episode(path, with_video=self.spec.video_enabled,
                                    target_rate=self.spec.sample_rate)
      start = _crop_start(example_lib.num_turns(ep, self.spec), self.turns,
                          self.crop, rng)
      return example_lib.episode_example(ep, self.spec, start_turn=start,
                                         turns=self.turns, params=self.params,
                                         session_offset=self.offset(rng))
    except (ValueError, OSError, KeyError, TypeError) as e:
      return {_SKIP: str(path), "kind": type(e).__name__, "error": str(e)}


class _SyntheticMaker:

  def __init__(self, spec, params, turns, seed, crop, offset: SessionOffset):
    self.spec, self.params, self.turns, self.seed, self.crop = (
        spec, params, turns, seed, crop)
    self.offset = offset

  def __call__(self, index):
    spec = self.spec
    ep = synthetic.random_episode(
        self.seed, int(index), turns=self.turns, turn_seconds=spec.turn_seconds,
        sample_rate=spec.sample_rate,
        video_hw=(spec.video_height, spec.video_width) if spec.video_enabled else None)
    rng = np.random.default_rng([self.seed, int(index), 1])
    start = _crop_start(example_lib.num_turns(ep, spec), self.turns, self.crop, rng)
    return example_lib.episode_example(ep, spec, start_turn=start,
                                       turns=self.turns, params=self.params,
                                       session_offset=self.offset(rng))


def _families(data) -> list[str] | None:
  names = [f.strip() for f in str(data.families).split(",") if f.strip()]
  return names or None


def _int_field(data, name: str, default: int) -> int:
  return int(data.get(name, default)) if hasattr(data, "get") else default


def build_dataset(config, *, process_index: int = 0, process_count: int = 1):
  """The per-example grain IterDataset (before skipping and batching)."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must lie in "
                     f"[0, process_count={process_count})")
  data = config.data
  spec = LayoutSpec.from_config(config.layout)
  params = mel_lib.MelParams.from_layout(config.layout)
  turns, seed = int(data.turns), int(data.seed)
  if turns < 1:
    raise ValueError(f"data.turns: {turns} must be >= 1")
  crop = str(data.get("crop", "random"))
  if crop not in ("random", "start"):
    raise ValueError(f"data.crop: {crop!r} is not 'random' or 'start'")
  offset = SessionOffset.from_config(data)
  if data.source == "synthetic":
    ds = grain.MapDataset.range(_SYNTHETIC_LENGTH)[process_index::process_count]
    ds = ds.map(_SyntheticMaker(spec, params, turns, seed, crop, offset))
  elif data.source == "episodes":
    if not data.path:
      raise ValueError("data.path: required when data.source='episodes'")
    paths = episode_lib.list_episodes(data.path, _families(data))
    if len(paths) < process_count:
      raise ValueError(f"data.path: {len(paths)} episodes under {data.path!r} "
                       f"(families={data.families!r}) for {process_count} processes")
    ds = grain.MapDataset.source([str(p) for p in paths])[process_index::process_count]
    ds = ds.shuffle(seed=seed).repeat(None)
    ds = ds.random_map(_EpisodeLoader(spec, params, turns, crop, offset), seed=seed)
  else:
    raise ValueError(f"data.source: {data.source!r} is not 'synthetic' or 'episodes'")
  threads = _int_field(data, "num_threads", 2)
  read = grain.ReadOptions(num_threads=max(1, threads),
                           prefetch_buffer_size=max(1, _int_field(data, "prefetch", 16)))
  ids = ds.to_iter_dataset(read)
  workers = int(data.num_workers)
  if workers > 0:
    from absl import flags  # grain's worker code reads its absl flags
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()  # outside an absl app: use the flag defaults
    ids = ids.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return ids


class TrainIterator:
  """Batches of `batch_size` good examples; checkpointable; counts bad input."""

  def __init__(self, dataset, batch_size: int):
    if batch_size < 1:
      raise ValueError(f"data.batch_size: {batch_size} must be >= 1")
    self._it = iter(dataset)
    self._batch_size = batch_size
    self._stats = {"examples": 0, "batches": 0, "skipped": 0, "skipped_by_kind": {}}
    self._logged: set[str] = set()

  def __iter__(self):
    return self

  def _next_example(self):
    for _ in range(_MAX_CONSECUTIVE_SKIPS):
      ex = next(self._it)
      if _SKIP not in ex:
        return ex
      self._stats["skipped"] += 1
      by_kind = self._stats["skipped_by_kind"]
      by_kind[ex["kind"]] = by_kind.get(ex["kind"], 0) + 1
      if ex[_SKIP] not in self._logged:
        self._logged.add(ex[_SKIP])
        logging.warning("data: skipping bad episode %s (%s: %s)", ex[_SKIP],
                        ex["kind"], ex["error"])
    raise RuntimeError(f"data: {_MAX_CONSECUTIVE_SKIPS} bad episodes in a row; "
                       f"stats={self._stats}")

  def __next__(self) -> dict[str, np.ndarray]:
    exs = [self._next_example() for _ in range(self._batch_size)]
    self._stats["examples"] += len(exs)
    self._stats["batches"] += 1
    return {k: np.stack([e[k] for e in exs]) for k in exs[0]}

  def get_state(self) -> dict:
    return {"grain": self._it.get_state(),
            "stats": {**self._stats,
                      "skipped_by_kind": dict(self._stats["skipped_by_kind"])}}

  def set_state(self, state: dict) -> None:
    if not isinstance(state, dict) or "grain" not in state:
      raise ValueError("set_state: expected a dict from TrainIterator.get_state()")
    self._it.set_state(state["grain"])
    stats = state.get("stats", {})
    self._stats = {"examples": int(stats.get("examples", 0)),
                   "batches": int(stats.get("batches", 0)),
                   "skipped": int(stats.get("skipped", 0)),
                   "skipped_by_kind": dict(stats.get("skipped_by_kind", {}))}

  def stats(self) -> dict:
    return {**self._stats, "skipped_by_kind": dict(self._stats["skipped_by_kind"])}


def make_train_iter(config, *, process_index: int = 0, process_count: int = 1,
                    batch_size: int | None = None) -> TrainIterator:
  """Endless training batches for this process (see the module docstring).

  batch_size: rows per batch (default data.batch_size); a mesh run gives each
  process its share of the global batch."""
  ds = build_dataset(config, process_index=process_index,
                     process_count=process_count)
  return TrainIterator(ds, int(config.data.batch_size if batch_size is None
                               else batch_size))


def orbax_save_args(iterator: TrainIterator):
  """orbax args that store the iterator state as JSON next to the model state."""
  import orbax.checkpoint as ocp  # orbax is heavy; only checkpointing code needs it
  return ocp.args.JsonSave(iterator.get_state())


def orbax_restore_args():
  import orbax.checkpoint as ocp
  return ocp.args.JsonRestore()


def batch_spec(config) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{key: (shape, dtype)} of one batch, for building shapes without data."""
  spec = LayoutSpec.from_config(config.layout)
  b, t = int(config.data.batch_size), int(config.data.turns)
  f, m = spec.frames_per_turn, spec.n_mels
  out = {
      "user_audio": ((b, t, f, m), np.dtype(np.int32)),
      "model_audio": ((b, t, f, m), np.dtype(np.int32)),
      "model_mel": ((b, t, f, m), np.dtype(np.float32)),
      "user_text": ((b, t, spec.count(Stream.USER_TEXT)), np.dtype(np.int32)),
      "background_text": ((b, t, spec.count(Stream.BACKGROUND_TEXT)), np.dtype(np.int32)),
      "model_text": ((b, t, spec.count(Stream.MODEL_TEXT)), np.dtype(np.int32)),
      "turn_mask": ((b, t), np.dtype(bool)),
      "first_turn": ((b,), np.dtype(np.int32)),
  }
  if spec.video_enabled:
    out["video"] = ((b, t, spec.video_height, spec.video_width, 3), np.dtype(np.uint8))
    out["video_present"] = ((b, t), np.dtype(bool))
  return out

