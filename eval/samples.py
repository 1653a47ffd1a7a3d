"""The unit every loader produces and every agent and scorer consumes."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from data_pipeline import video as video_lib
from interaction import audio_io

BENCHMARKS = ("fdb_v1", "fdb_v1_5", "proactive_videoqa", "repcount", "charades",
              "timespeak", "cuespeak", "delegation")


@dataclasses.dataclass
class Video:
  frames: np.ndarray  # uint8 [N, H, W, 3]
  fps: float

  @property
  def duration(self) -> float:
    return len(self.frames) / self.fps


@dataclasses.dataclass
class Sample:
  """One benchmark item: what to feed the agent and what to score against.

  `reference` holds the benchmark's own ground truth, parsed but in its
  published shape (e.g. FD-bench `turn_taking.json`'s list). `media_error` is
  set when the reference is fine but the audio/video to replay is not (the
  sample can still be scored from recorded predictions).
  """
  id: str
  benchmark: str
  task: str
  path: str
  reference: dict
  audio_path: str | None = None
  video_path: str | None = None
  user_text: list = dataclasses.field(default_factory=list)  # [(t_seconds, text)]
  # Text fed to the agent's background stream (tool results): [(t_seconds, text)].
  background_text: list = dataclasses.field(default_factory=list)
  question: str = ""
  media_error: str | None = None
  duration_hint: float | None = None
  group: str | None = None  # the source's task folder name when it differs from `task`
  # Replay at least this long: a shorter input.wav is padded with silence (the
  # agent may answer after the user's audio ends, e.g. delegation).
  min_duration: float | None = None

  @property
  def key(self) -> str:
    """Relative folder of this sample's outputs: '<task folder>/<id>' or '<id>'."""
    group = self.group or self.task
    return f"{group}/{self.id}" if group else self.id

  @functools.cached_property
  def duration(self) -> float:
    if self.audio_path:
      return max(audio_io.wav_duration(self.audio_path), float(self.min_duration or 0.0))
    if self.video_path:
      return self.load_video().duration
    if self.duration_hint:
      return float(self.duration_hint)
    raise ValueError(f"sample {self.key}: no audio, video or duration")

  def load_audio(self) -> np.ndarray:
    """User audio at 16 kHz; silence of the video's length for video-only items."""
    if self.audio_path:
      x = audio_io.load_audio(self.audio_path, mix_down=True)
      n = int(round(float(self.min_duration or 0.0) * audio_io.SAMPLE_RATE))
      return np.pad(x, (0, n - len(x))) if n > len(x) else x
    return np.zeros(int(round(self.duration * audio_io.SAMPLE_RATE)), np.float32)

  def load_video(self) -> Video | None:
    if not self.video_path:
      return None
    if not hasattr(self, "_video"):
      self._video = Video(*video_lib.load_video(self.video_path))
    return self._video


@dataclasses.dataclass
class SampleError:
  """A sample that could not be loaded (or scored): reported, never dropped."""
  key: str
  benchmark: str
  message: str

  def to_json(self) -> dict:
    return {"key": self.key, "benchmark": self.benchmark, "error": self.message}


@dataclasses.dataclass
class LoadResult:
  samples: list
  errors: list
  manifest: dict | None = None
