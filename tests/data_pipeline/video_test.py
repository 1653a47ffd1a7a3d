"""Video frames: 40x40 patches in row-major order, unreadable files raise VideoError."""

import numpy as np
import pytest

from data_pipeline import video as video_lib


def test_video_to_patches_round_trip(default_spec):
  frames = np.random.default_rng(0).integers(0, 255, (2, 3, 80, 120, 3), dtype=np.uint8)
  patches = video_lib.video_to_patches(frames, default_spec)
  assert patches.shape == (2, 3, 6, 40, 40, 3)
  np.testing.assert_array_equal(patches[1, 2, 4], frames[1, 2, 40:80, 40:80])
  with pytest.raises(video_lib.VideoError, match="multiple"):
    video_lib.video_to_patches(frames[..., :50, :, :], default_spec)


def test_unreadable_video_raises_video_error(tmp_path):
  (tmp_path / "v.npz").write_bytes(b"nope")
  with pytest.raises(video_lib.VideoError):
    video_lib.load_video(tmp_path / "v.npz")
  np.savez(tmp_path / "w.npz", frames=np.zeros((2, 4, 4), np.uint8), fps=5.0)
  with pytest.raises(video_lib.VideoError, match="uint8"):
    video_lib.load_video(tmp_path / "w.npz")
