"""Splatting test fixtures; also sets passive OpenMP waiting (see splatting/__init__.py) before torch loads."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from spatial_memory.types import CameraIntrinsics, Frame  # noqa: E402


def load_open3d_samples(root, n: int = 2) -> list[Frame]:
    """The first ``n`` Open3D sample RGB-D frames with their ground-truth poses (Redwood .log)."""
    import cv2

    colors = sorted((root / "color").glob("*.jpg"))[:n]
    depths = sorted((root / "depth").glob("*.png"))[:n]
    rows = [ln.split() for ln in (root / "trajectory.log").read_text().splitlines() if ln.strip()]
    poses = [np.array(rows[5 * i + 1 : 5 * i + 5], dtype=np.float64) for i in range(len(rows) // 5)]
    intr = CameraIntrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)
    frames = []
    for i, (c, d) in enumerate(zip(colors, depths)):
        rgb = cv2.cvtColor(cv2.imread(str(c)), cv2.COLOR_BGR2RGB)
        dep = cv2.imread(str(d), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0
        frames.append(Frame(i, rgb, dep, intr, poses[i], index=i).validate())
    return frames


@pytest.fixture(scope="session")
def open3d_sample_frames(shared_data) -> list[Frame]:
    """The first three frames of ``open3d_rgbd_samples`` (640x480, ground-truth poses)."""
    return load_open3d_samples(shared_data / "open3d_rgbd_samples", 3)
