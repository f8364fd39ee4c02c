"""Shared pieces of both relocalizers: the result type, query validation and PnP-RANSAC."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import poselib

from spatial_memory.errors import InvalidFrameError, InvalidPoseError
from spatial_memory.geometry import invert_pose, make_pose, validate_pose
from spatial_memory.types import CameraIntrinsics

from .features import check_rgb


@dataclass
class LocalizationResult:
    """Outcome of one ``locate`` call.

    Attributes:
        success: True only when the pose is supported by enough PnP inliers.
        T_world_camera: ``[4, 4]`` estimated camera-to-world pose (None on failure).
        inliers: PnP inliers of the final iteration.
        confidence: in [0, 1]: inlier ratio times a saturating function of the inlier count.
        message: why it failed, or a short summary.
        iterations: render-match-PnP rounds run.
        timings: seconds per stage.
    """

    success: bool
    T_world_camera: np.ndarray | None
    inliers: int
    confidence: float
    message: str
    iterations: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "success": self.success,
            "T_world_camera": None if self.T_world_camera is None else np.asarray(self.T_world_camera).tolist(),
            "inliers": int(self.inliers),
            "confidence": float(self.confidence),
            "message": self.message,
            "iterations": int(self.iterations),
            "timings": {k: float(v) for k, v in self.timings.items()},
        }


def validate_query(
    rgb: np.ndarray, intrinsics: CameraIntrinsics, map_intrinsics: CameraIntrinsics,
    prior: np.ndarray | None, depth: np.ndarray | None,
) -> np.ndarray | None:
    """Check a query; return the validated prior (float64) or None.

    Raises:
        InvalidFrameError: wrong image dtype/channels/size, depth of another size, or intrinsics
            that differ from the map's camera (descriptor scale and landmark footprints depend on it).
        InvalidPoseError: a prior that is not a finite rigid transform.
    """
    check_rgb(rgb)
    if not isinstance(intrinsics, CameraIntrinsics):
        raise InvalidFrameError(f"intrinsics must be CameraIntrinsics, got {type(intrinsics).__name__}")
    intrinsics.check_image(rgb.shape, "query image")
    if (intrinsics.width, intrinsics.height) != (map_intrinsics.width, map_intrinsics.height) or not np.allclose(
        intrinsics.K, map_intrinsics.K, rtol=1e-3, atol=1e-3
    ):
        raise InvalidFrameError(
            f"query intrinsics {intrinsics.to_dict()} differ from the map's camera {map_intrinsics.to_dict()}; "
            "resize the image to the map's camera first"
        )
    if depth is not None:
        if not isinstance(depth, np.ndarray) or depth.shape != rgb.shape[:2]:
            raise InvalidFrameError(f"depth shape {getattr(depth, 'shape', None)} does not match the image {rgb.shape[:2]}")
    if prior is None:
        return None
    return validate_pose(np.asarray(prior, dtype=np.float64), "prior pose")


def _camera_pose(T_world_camera: np.ndarray) -> "poselib.CameraPose":
    """poselib's world-to-camera pose of a camera-to-world ``[4, 4]``."""
    T_cw = invert_pose(T_world_camera)
    pose = poselib.CameraPose()
    pose.R, pose.t = T_cw[:3, :3], T_cw[:3, 3]
    return pose


def solve_pnp(
    pts2d: np.ndarray, pts3d: np.ndarray, intrinsics: CameraIntrinsics, reproj_px: float = 5.0,
    initial: np.ndarray | None = None, seed: int = 0, min_iterations: int = 100,
) -> tuple[np.ndarray | None, np.ndarray]:
    """PnP-RANSAC (poselib P3P) followed by its LM refinement on the inliers.

    Args:
        pts2d: ``[N, 2]`` pixels; pts3d ``[N, 3]`` world points.
        initial: optional ``T_world_camera`` hypothesis also scored by RANSAC.
        min_iterations: RANSAC's floor; with a high inlier ratio its adaptive stop comes much earlier.

    Returns:
        ``T_world_camera [4, 4]`` (None with fewer than 4 correspondences) and the inlier mask ``[N] bool``.
    """
    n = len(pts2d)
    if n < 4:
        return None, np.zeros(n, bool)
    cam = {
        "model": "PINHOLE", "width": intrinsics.width, "height": intrinsics.height,
        "params": [intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy],
    }
    ransac = {"max_reproj_error": float(reproj_px), "min_iterations": int(min_iterations), "max_iterations": 10000, "seed": seed}
    kw = {} if initial is None else {"initial_pose": _camera_pose(initial)}
    pose, info = poselib.estimate_absolute_pose(
        np.ascontiguousarray(pts2d, np.float64), np.ascontiguousarray(pts3d, np.float64), cam, ransac, {}, **kw
    )
    mask = np.asarray(info.get("inliers", np.zeros(n, bool)), bool)
    if mask.sum() < 4 or not np.all(np.isfinite(pose.Rt)):
        return None, mask
    T = invert_pose(make_pose(pose.R, pose.t))
    try:
        T = validate_pose(T, "PnP pose", tol=1e-3)
    except InvalidPoseError:
        return None, mask
    return T, mask


def confidence(inliers: int, matches: int, min_inliers: int) -> float:
    """Inlier ratio scaled by ``min(1, inliers / (3 * min_inliers))``; 0 without matches."""
    if matches <= 0:
        return 0.0
    return float(inliers / matches * min(1.0, inliers / (3.0 * max(min_inliers, 1))))


def far_from_map(T_world_camera: np.ndarray, keyframe_poses: np.ndarray, max_dist_m: float) -> float | None:
    """Distance to the nearest keyframe if it exceeds ``max_dist_m`` (a pose outside the mapped
    region is almost surely a wrong PnP solution), else None."""
    d = float(np.min(np.linalg.norm(keyframe_poses[:, :3, 3] - T_world_camera[:3, 3], axis=1)))
    return d if d > max_dist_m else None
