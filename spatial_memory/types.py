"""Data types every module shares: camera intrinsics and posed RGB-D frames.

Shapes and units (docs/conventions.md): images are ``H x W``; rgb ``[H, W, 3] uint8``;
depth ``[H, W] float32`` metres along the optical axis with 0 or NaN meaning invalid;
poses ``T_world_camera: [4, 4] float64`` (OpenCV optical camera frame, z-up world).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from .errors import InvalidFrameError, InvalidIntrinsicsError, InvalidPoseError
from .geometry import validate_pose


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole camera (no distortion): focal lengths and principal point in pixels."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise InvalidIntrinsicsError(f"image size must be positive, got {self.width}x{self.height}")
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in vals):
            raise InvalidIntrinsicsError(f"intrinsics contain NaN/inf: {vals}")
        if self.fx <= 0 or self.fy <= 0:
            raise InvalidIntrinsicsError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @property
    def K(self) -> np.ndarray:
        """3x3 calibration matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``, the numpy shape of an image from this camera."""
        return (self.height, self.width)

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int) -> "CameraIntrinsics":
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise InvalidIntrinsicsError(f"K must be 3x3, got {K.shape}")
        return cls(width, height, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float) -> "CameraIntrinsics":
        """Square pixels, principal point at the image centre, horizontal field of view in degrees."""
        f = 0.5 * width / np.tan(np.radians(hfov_deg) / 2.0)
        return cls(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0)

    def scaled(self, width: int, height: int) -> "CameraIntrinsics":
        """The same camera resampled to another resolution (pixel-centre convention)."""
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(
            width, height, self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5
        )

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy}

    @classmethod
    def from_dict(cls, d: Mapping) -> "CameraIntrinsics":
        try:
            return cls(int(d["width"]), int(d["height"]), float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]))
        except KeyError as e:
            raise InvalidIntrinsicsError(f"intrinsics dict lacks {e}") from None

    def check_image(self, shape: tuple[int, ...], what: str = "image") -> None:
        """Raise if an image of numpy ``shape`` does not match this camera's size."""
        if tuple(shape[:2]) != self.shape:
            raise InvalidFrameError(
                f"{what} is {shape[1]}x{shape[0]} but the camera intrinsics are {self.width}x{self.height}"
            )


@dataclass
class Frame:
    """One posed RGB-D observation; the unit every source yields and every memory ingests.

    Attributes:
        stamp_ns: acquisition time, nanoseconds (ROS time or dataset time).
        rgb: ``[H, W, 3] uint8``.
        depth: ``[H, W] float32`` metres, 0 or NaN = invalid; None when the source has no depth.
        intrinsics: pinhole camera of both images (depth is registered to rgb).
        T_world_camera: ``[4, 4]`` camera-to-world pose, OpenCV optical frame; None if unknown.
        instance_ids: optional ``[H, W] int32`` instance id per pixel (0 = background/unknown).
        id_to_label: semantic label of each instance id present in ``instance_ids``.
        frame_id: camera frame name (ROS ``header.frame_id``).
        index: position of the frame in its source's sequence (-1 when not applicable).
    """

    stamp_ns: int
    rgb: np.ndarray
    depth: np.ndarray | None
    intrinsics: CameraIntrinsics
    T_world_camera: np.ndarray | None = None
    instance_ids: np.ndarray | None = None
    id_to_label: dict[int, str] = field(default_factory=dict)
    frame_id: str = "camera_color_optical_frame"
    index: int = -1

    @property
    def stamp_s(self) -> float:
        return self.stamp_ns * 1e-9

    @property
    def has_pose(self) -> bool:
        return self.T_world_camera is not None

    @property
    def has_depth(self) -> bool:
        return self.depth is not None

    def resized(self, width: int, height: int) -> "Frame":
        """The same observation at another resolution (a memory's working resolution).

        Colour: area averaging when shrinking, bilinear when enlarging. Depth and instance ids:
        nearest neighbour with pixel-centre rounding, so no depth is invented across an edge and no
        id is mixed. Intrinsics follow :meth:`CameraIntrinsics.scaled`. Pose and labels are shared.
        """
        import cv2

        if int(width) <= 0 or int(height) <= 0:
            raise InvalidFrameError(f"resized: width and height must be positive, got {width}x{height}")
        width, height = int(width), int(height)
        if (width, height) == (self.intrinsics.width, self.intrinsics.height):
            return self
        shrink = width < self.intrinsics.width
        rgb = cv2.resize(self.rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        near = cv2.INTER_NEAREST_EXACT
        depth = None if self.depth is None else cv2.resize(self.depth, (width, height), interpolation=near)
        ids = None if self.instance_ids is None else cv2.resize(self.instance_ids, (width, height), interpolation=near)
        return replace(self, rgb=rgb, depth=depth, instance_ids=ids, intrinsics=self.intrinsics.scaled(width, height))

    def valid_depth_mask(self) -> np.ndarray:
        """``[H, W] bool``: finite, strictly positive depth."""
        if self.depth is None:
            return np.zeros(self.intrinsics.shape, dtype=bool)
        return np.isfinite(self.depth) & (self.depth > 0)

    def validate(self, allow_invalid_depth_values: bool = True) -> "Frame":
        """Check types, shapes and pose; return ``self`` for chaining.

        NaN/0 depth is the documented "invalid" marker and passes; negative or infinite depth
        is corruption and raises unless ``allow_invalid_depth_values`` (then it is set to 0).

        Raises:
            InvalidFrameError, InvalidPoseError
        """
        where = f"frame {self.index} @ {self.stamp_ns} ns"
        if not isinstance(self.rgb, np.ndarray) or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            got = getattr(self.rgb, "shape", type(self.rgb).__name__)
            raise InvalidFrameError(f"{where}: rgb must be HxWx3, got {got}")
        if self.rgb.dtype != np.uint8:
            raise InvalidFrameError(f"{where}: rgb must be uint8, got {self.rgb.dtype}")
        if self.rgb.size == 0:
            raise InvalidFrameError(f"{where}: rgb is empty")
        self.intrinsics.check_image(self.rgb.shape, f"{where}: rgb")
        if self.depth is not None:
            if not isinstance(self.depth, np.ndarray) or self.depth.ndim != 2:
                raise InvalidFrameError(f"{where}: depth must be HxW, got {getattr(self.depth, 'shape', None)}")
            if self.depth.shape != self.rgb.shape[:2]:
                raise InvalidFrameError(
                    f"{where}: rgb is {self.rgb.shape[1]}x{self.rgb.shape[0]} but depth is "
                    f"{self.depth.shape[1]}x{self.depth.shape[0]}"
                )
            if self.depth.dtype != np.float32:
                self.depth = self.depth.astype(np.float32)
            bad = np.isinf(self.depth) | (self.depth < 0)
            if bad.any():
                if not allow_invalid_depth_values:
                    raise InvalidFrameError(f"{where}: depth has {int(bad.sum())} negative or infinite values")
                self.depth = np.where(bad, np.float32(0.0), self.depth)
        if self.T_world_camera is not None:
            try:
                self.T_world_camera = validate_pose(self.T_world_camera, f"{where}: T_world_camera")
            except InvalidPoseError:
                raise
        if self.instance_ids is not None and self.instance_ids.shape != self.rgb.shape[:2]:
            raise InvalidFrameError(f"{where}: instance_ids shape {self.instance_ids.shape} != rgb {self.rgb.shape[:2]}")
        return self

    def with_pose(self, T_world_camera: np.ndarray | None) -> "Frame":
        return replace(self, T_world_camera=None if T_world_camera is None else np.array(T_world_camera))

    def labels_present(self) -> list[str]:
        """Sorted semantic labels visible in this frame (needs ``instance_ids``)."""
        if self.instance_ids is None:
            return []
        ids = np.unique(self.instance_ids)
        return sorted({self.id_to_label[i] for i in ids.tolist() if i in self.id_to_label})


def backproject_depth(
    depth: np.ndarray, intrinsics: CameraIntrinsics, T_world_camera: np.ndarray | None = None, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Lift valid depth pixels to 3D.

    Args:
        depth: ``[H, W]`` metres (0/NaN invalid).
        T_world_camera: if given, points are returned in the world frame, else in the camera frame.
        stride: keep every ``stride``-th pixel in both directions.

    Returns:
        points ``[N, 3] float64`` and their pixel indices ``[N, 2] int64`` as ``(v, u)`` rows.
    """
    d = depth[::stride, ::stride]
    vv, uu = np.nonzero(np.isfinite(d) & (d > 0))
    z = d[vv, uu].astype(np.float64)
    v, u = vv * stride, uu * stride
    x = (u - intrinsics.cx) / intrinsics.fx * z
    y = (v - intrinsics.cy) / intrinsics.fy * z
    pts = np.stack([x, y, z], axis=1)
    if T_world_camera is not None:
        pts = pts @ T_world_camera[:3, :3].T + T_world_camera[:3, 3]
    return pts, np.stack([v, u], axis=1)


def project_points(
    points_world: np.ndarray, intrinsics: CameraIntrinsics, T_world_camera: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Project world points ``[N, 3]`` to pixels ``[N, 2]`` (u, v) and return their depth ``[N]``."""
    R, t = T_world_camera[:3, :3], T_world_camera[:3, 3]
    pc = (points_world - t) @ R
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intrinsics.fx * pc[:, 0] / z + intrinsics.cx
        v = intrinsics.fy * pc[:, 1] / z + intrinsics.cy
    return np.stack([u, v], axis=1), z
