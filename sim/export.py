"""Write a frame stream to a folder in the 7-Scenes layout (readable back by
``sim.datasets.SevenScenesSource``), plus instance-id PNGs and a label map.

Layout::

    camera-intrinsics.txt            3x3 K (7-Scenes style), plus intrinsics.json with the size
    frame-000000.color.png           rgb
    frame-000000.depth.png           uint16 millimetres, 0 = invalid
    frame-000000.pose.txt            4x4 T_world_camera
    frame-000000.instance.png        uint16 instance ids (when the source has them)
    labels.json                      {instance id: label}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from spatial_memory.types import Frame


def write_frames_folder(frames: Iterable[Frame], out_dir: str | Path) -> int:
    """Write frames; returns how many were written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[int, str] = {}
    n = 0
    for i, f in enumerate(frames):
        stem = out / f"frame-{f.index if f.index >= 0 else i:06d}"
        if n == 0:
            np.savetxt(out / "camera-intrinsics.txt", f.intrinsics.K, fmt="%.6f")
            (out / "intrinsics.json").write_text(json.dumps(f.intrinsics.to_dict(), indent=2))
        cv2.imwrite(f"{stem}.color.png", cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
        if f.depth is not None:
            d = np.nan_to_num(f.depth, nan=0.0, posinf=0.0, neginf=0.0)
            mm = np.clip(np.round(d * 1000.0), 0, 65535).astype(np.uint16)
            cv2.imwrite(f"{stem}.depth.png", mm)
        if f.T_world_camera is not None:
            np.savetxt(f"{stem}.pose.txt", f.T_world_camera, fmt="%.9f")
        if f.instance_ids is not None:
            cv2.imwrite(f"{stem}.instance.png", f.instance_ids.astype(np.uint16))
            labels.update(f.id_to_label)
        n += 1
    if labels:
        (out / "labels.json").write_text(json.dumps({str(k): v for k, v in sorted(labels.items())}, indent=2))
    return n
