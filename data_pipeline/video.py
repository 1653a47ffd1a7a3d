"""Video frames: the `.npz` container, nearest-neighbour resizing, 40x40 patches."""

from __future__ import annotations

import os

import numpy as np

from interaction.layout import LayoutSpec


class VideoError(ValueError):
  """A video input that cannot be used (missing, unreadable frames, bad shape)."""


def video_to_patches(frames, spec: LayoutSpec) -> np.ndarray:
  """uint8 [..., H, W, 3] -> [..., (H/p)*(W/p), p, p, 3], patches in row-major order."""
  frames = np.asarray(frames)
  p = spec.patch
  if frames.ndim < 3 or frames.shape[-1] != 3:
    raise VideoError(f"video_to_patches: frames must be [..., H, W, 3], got "
                     f"{frames.shape}")
  h, w = frames.shape[-3:-1]
  if h % p or w % p:
    raise VideoError(f"video_to_patches: frame size {h}x{w} is not a multiple "
                     f"of the patch size {p}")
  lead = frames.shape[:-3]
  x = frames.reshape(lead + (h // p, p, w // p, p, 3))
  n = len(lead)
  x = x.transpose(tuple(range(n)) + (n, n + 2, n + 1, n + 3, n + 4))
  return x.reshape(lead + ((h // p) * (w // p), p, p, 3))


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of uint8 [N, H, W, 3] (cheap; synthetic scenes are flat shapes)."""
  n, h, w, _ = frames.shape
  if (h, w) == (height, width):
    return frames
  rows = (np.arange(height) * h // height).astype(np.int64)
  cols = (np.arange(width) * w // width).astype(np.int64)
  return frames[:, rows][:, :, cols]


def load_video(path) -> tuple[np.ndarray, float]:
  """Reads a `.npz` video (`frames` uint8 [N, H, W, 3], `fps`); VideoError if unusable."""
  if not os.path.exists(path):
    raise VideoError(f"video file not found: {path}")
  try:
    with np.load(os.fspath(path), allow_pickle=False) as z:
      frames, fps = z["frames"], float(z["fps"])
  except Exception as e:  # zipfile/pickle/key errors all mean "unreadable"
    raise VideoError(f"{path}: unreadable video ({type(e).__name__}: {e})") from None
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise VideoError(f"{path}: frames must be uint8 [N, H, W, 3], got "
                     f"{frames.dtype} {frames.shape}")
  if frames.shape[0] == 0 or not fps > 0:
    raise VideoError(f"{path}: empty video or bad fps {fps}")
  return frames, fps
