"""Minimal reader of the vendored ICL-NUIM "living room" micro sequence (Redwood layout).

The project's dataset readers live in ``sim.datasets``; this reader exists so the
relocalization evaluation and tests depend only on files, not on another package's progress:
``image/NNNNN.jpg``, ``depth/NNNNN.png`` (uint16 millimetres), ``test_scene/trajectory.log``
(camera-to-world, OpenCV optical frame), fx = fy = 525, cx = 319.5, cy = 239.5 at 640x480.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from spatial_memory.errors import DatasetFormatError, ImageDecodeError
from spatial_memory.types import CameraIntrinsics, Frame

ICL_INTRINSICS = CameraIntrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)


def read_redwood_log(path: str | Path) -> np.ndarray:
    """Poses ``[N, 4, 4]`` of a Redwood ``.log`` file (a header line then 4 matrix rows per pose)."""
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if len(lines) % 5:
        raise DatasetFormatError(f"{path}: {len(lines)} non-empty lines is not a multiple of 5")
    try:
        mats = np.array([[float(v) for v in row] for i, row in enumerate(lines) if i % 5], np.float64)
    except ValueError as e:
        raise DatasetFormatError(f"{path}: non-numeric pose entry ({e})") from None
    return mats.reshape(-1, 4, 4)


def load_icl_frames(
    root: str | Path, indices: list[int] | np.ndarray, size: tuple[int, int] | None = None
) -> list[Frame]:
    """Frames ``indices`` of the sequence at ``root``, optionally resized to ``size = (w, h)``."""
    root = Path(root)
    poses = read_redwood_log(root / "test_scene" / "trajectory.log")
    intr = ICL_INTRINSICS if size is None else ICL_INTRINSICS.scaled(*size)
    out = []
    for i in indices:
        i = int(i)
        if not 0 <= i < len(poses):
            raise DatasetFormatError(f"{root}: frame {i} is outside the trajectory (0..{len(poses) - 1})")
        bgr = cv2.imread(str(root / "image" / f"{i:05d}.jpg"), cv2.IMREAD_COLOR)
        dep = cv2.imread(str(root / "depth" / f"{i:05d}.png"), cv2.IMREAD_UNCHANGED)
        if bgr is None or dep is None:
            raise ImageDecodeError(f"{root}: cannot read image/depth of frame {i}")
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        depth = dep.astype(np.float32) / 1000.0
        if size is not None:
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
        out.append(Frame(stamp_ns=int(i * 33_333_333), rgb=rgb, depth=depth, intrinsics=intr,
                         T_world_camera=poses[i].copy(), index=i).validate())
    return out
