"""The episode: time-stamped streams of one synthetic (or recorded) session.

On disk an episode is a directory (the layout and every field are documented in
WORKSPACE.md, section "Data"):

  <root>/<family>/<id>/episode.json   streams of events, task ground truth
  <root>/<family>/<id>/user.wav       user audio, mono 16-bit PCM
  <root>/<family>/<id>/model.wav      model audio, same length (silence when quiet)
  <root>/<family>/<id>/video.npz      optional: frames uint8 [N, H, W, 3], fps

Wav + npz + JSON rather than ArrayRecord: episodes are a few seconds long and
read whole, each file is inspectable with ordinary tools, and grain reads them
through a random-access list of directories with no index to rebuild.

Times are seconds from the start of the episode. Event lists:
  user_speech / model_text: phrases {"t_start", "t_end", "text",
      "words": [{"t_start", "t_end", "text"}]}; a control token such as
      "<delegate>" is a one-word phrase whose text is the token name.
  user_text / background_text: {"t", "text"} (typed text, tool results).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np

from interaction import audio_io

from data_pipeline import video as video_lib

FORMAT_VERSION = 1
EPISODE_JSON = "episode.json"


class EpisodeError(ValueError):
  """An episode directory that cannot be read."""


@dataclasses.dataclass
class Episode:
  id: str
  family: str
  sample_rate: int
  user_audio: np.ndarray                       # f32 [n]
  model_audio: np.ndarray                      # f32 [n]
  user_speech: list = dataclasses.field(default_factory=list)
  model_text: list = dataclasses.field(default_factory=list)
  user_text: list = dataclasses.field(default_factory=list)
  background_text: list = dataclasses.field(default_factory=list)
  video: np.ndarray | None = None              # uint8 [N, H, W, 3]
  video_fps: float = 0.0
  task: dict = dataclasses.field(default_factory=dict)   # exact ground truth
  meta: dict = dataclasses.field(default_factory=dict)   # split, seed, voices

  @property
  def duration(self) -> float:
    return len(self.user_audio) / float(self.sample_rate)

  def __post_init__(self):
    self.user_audio = np.asarray(self.user_audio, np.float32)
    self.model_audio = np.asarray(self.model_audio, np.float32)
    n = max(len(self.user_audio), len(self.model_audio))
    # Both streams share one clock: pad the shorter with silence.
    self.user_audio = np.pad(self.user_audio, (0, n - len(self.user_audio)))
    self.model_audio = np.pad(self.model_audio, (0, n - len(self.model_audio)))


def write_episode(directory, ep: Episode) -> pathlib.Path:
  """Writes `ep` into `directory` (created); returns the directory."""
  d = pathlib.Path(directory)
  d.mkdir(parents=True, exist_ok=True)
  audio_io.write_wav(d / "user.wav", ep.user_audio, ep.sample_rate)
  audio_io.write_wav(d / "model.wav", ep.model_audio, ep.sample_rate)
  video = None
  if ep.video is not None:
    np.savez_compressed(d / "video.npz", frames=np.asarray(ep.video, np.uint8),
             fps=np.float64(ep.video_fps))
    video = {"file": "video.npz", "fps": float(ep.video_fps),
             "num_frames": int(ep.video.shape[0]),
             "height": int(ep.video.shape[1]), "width": int(ep.video.shape[2])}
  doc = {
      "format": FORMAT_VERSION, "id": ep.id, "family": ep.family,
      "sample_rate": int(ep.sample_rate), "num_samples": int(len(ep.user_audio)),
      "duration": ep.duration, "user_speech": ep.user_speech,
      "model_text": ep.model_text, "user_text": ep.user_text,
      "background_text": ep.background_text, "video": video,
      "task": ep.task, "meta": ep.meta,
  }
  tmp = d / (EPISODE_JSON + ".tmp")
  tmp.write_text(json.dumps(doc, indent=1))
  # episode.json appears last and atomically: its presence marks a complete episode.
  os.replace(tmp, d / EPISODE_JSON)
  return d


def read_episode(directory, *, with_video: bool = True,
                 target_rate: int = 16000) -> Episode:
  """Reads an episode; raises EpisodeError / AudioError / VideoError (all ValueError)."""
  d = pathlib.Path(directory)
  try:
    doc = json.loads((d / EPISODE_JSON).read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise EpisodeError(f"{d}: unreadable {EPISODE_JSON} ({e})") from None
  if not isinstance(doc, dict) or doc.get("format") != FORMAT_VERSION:
    raise EpisodeError(f"{d}: not an episode of format {FORMAT_VERSION}")
  user = audio_io.load_audio(d / "user.wav", target_rate=target_rate)
  model = audio_io.load_audio(d / "model.wav", target_rate=target_rate)
  video, fps = None, 0.0
  if with_video and doc.get("video"):
    video, fps = video_lib.load_video(d / doc["video"]["file"])
  try:
    return Episode(
        id=str(doc["id"]), family=str(doc["family"]), sample_rate=target_rate,
        user_audio=user, model_audio=model, user_speech=doc["user_speech"],
        model_text=doc["model_text"], user_text=doc["user_text"],
        background_text=doc["background_text"], video=video, video_fps=fps,
        task=doc.get("task", {}), meta=doc.get("meta", {}))
  except KeyError as e:
    raise EpisodeError(f"{d}: {EPISODE_JSON} lacks field {e}") from None


def list_episodes(root, families=None) -> list[pathlib.Path]:
  """Sorted episode directories under `root` (those holding an episode.json).

  families: optional iterable of family names; an episode's family is the name
  of its parent directory (`<root>/<family>/<id>/`).
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise ValueError(f"data.path: {str(root)!r} is not a directory")
  dirs = sorted(p.parent for p in root.rglob(EPISODE_JSON))
  if families:
    wanted = set(families)
    dirs = [p for p in dirs if p.parent.name in wanted]
  return dirs
