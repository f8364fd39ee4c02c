"""A mobile robot with a head camera in a :class:`sim.scene.Scene`.

The agent is a disc of ``radius`` on the floor (collision against the inflated
:class:`sim.navigation.OccupancyGrid`) carrying a camera ``camera_height`` above the floor.
It offers Habitat-style discrete actions (``move_forward``, ``turn_left``, ``turn_right``,
``look_up``, ``look_down``) and a continuous :meth:`Agent.set_pose`.

Frames: the body frame is REP-103 (x forward, y left, z up) at floor level; the camera is the
OpenCV optical frame (x right, y down, z forward) at the camera height, tilted by ``pitch``
(positive looks up).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from spatial_memory.errors import ConfigError, InvalidPoseError
from spatial_memory.geometry import make_pose, yaw_pitch_to_rotation
from spatial_memory.types import CameraIntrinsics

from .navigation import GridConfig, OccupancyGrid
from .scene import Scene

ACTIONS: tuple[str, ...] = ("move_forward", "turn_left", "turn_right", "look_up", "look_down")


def _default_intrinsics() -> CameraIntrinsics:
    return CameraIntrinsics.from_fov(640, 480, 70.0)


@dataclass(frozen=True)
class AgentConfig:
    """Body, camera and action sizes (metres, degrees).

    ``camera_height`` is 1.0 m by default (a wheeled robot's head); a quadruped's camera is
    lower (~0.5 m). ``body_height`` is the top of the collision band (geometry above it, like a
    table top over a quadruped or a ceiling lamp, does not block); None means 0.1 m above the camera.
    """

    camera_height: float = 1.0
    radius: float = 0.18
    body_height: float | None = None
    forward_step: float = 0.25
    turn_deg: float = 10.0
    tilt_deg: float = 10.0
    max_tilt_deg: float = 30.0
    intrinsics: CameraIntrinsics = field(default_factory=_default_intrinsics)
    grid_resolution: float = 0.05

    def __post_init__(self) -> None:
        checks = {
            "camera_height": self.camera_height > 0,
            "radius": self.radius >= 0,
            "body_height": self.body_height is None or self.body_height >= self.camera_height,
            "forward_step": self.forward_step > 0,
            "turn_deg": 0 < self.turn_deg <= 180,
            "tilt_deg": 0 < self.tilt_deg <= 90,
            "max_tilt_deg": 0 <= self.max_tilt_deg < 90,
            "grid_resolution": 0 < self.grid_resolution <= 0.5,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"AgentConfig: out-of-range values for {bad}: {self}")

    @property
    def collision_height(self) -> float:
        return self.body_height if self.body_height is not None else self.camera_height + 0.1

    def grid_config(self) -> GridConfig:
        return GridConfig(resolution=self.grid_resolution, robot_radius=self.radius, max_height=self.collision_height)


@dataclass(frozen=True)
class StepResult:
    """Outcome of one action: whether a forward move was stopped by an obstacle, and the distance moved."""

    action: str
    collided: bool = False
    moved: float = 0.0


def camera_pose(
    xy: np.ndarray, yaw: float, pitch: float, camera_height: float, floor_z: float = 0.0
) -> np.ndarray:
    """``T_world_camera [4, 4]`` (optical frame) of a camera at ``xy``, ``camera_height`` above the floor."""
    t = np.array([float(xy[0]), float(xy[1]), floor_z + camera_height])
    return make_pose(yaw_pitch_to_rotation(yaw, pitch), t)


def yaw_pitch_from_camera(T_world_camera: np.ndarray) -> tuple[float, float]:
    """Heading and tilt (radians) of an optical-frame camera pose (inverse of ``yaw_pitch_to_rotation``
    for roll-free poses): yaw of the optical axis projected on the floor, pitch of the axis above it."""
    z = np.asarray(T_world_camera)[:3, 2]
    return float(np.arctan2(z[1], z[0])), float(np.arcsin(np.clip(z[2], -1.0, 1.0)))


def wrap_angle(a: float | np.ndarray) -> float | np.ndarray:
    """Wrap radians to ``[-pi, pi)``."""
    out = (np.asarray(a, dtype=np.float64) + np.pi) % (2.0 * np.pi) - np.pi
    return float(out) if out.ndim == 0 else out


class Agent:
    """Robot state (x, y, yaw, pitch) in a scene, moved by discrete actions or set directly."""

    def __init__(self, scene: Scene, config: AgentConfig | None = None, grid: OccupancyGrid | None = None) -> None:
        self.scene = scene
        self.config = config or AgentConfig()
        self.grid = grid if grid is not None else OccupancyGrid.from_scene(scene, self.config.grid_config())
        self.xy = np.zeros(2)
        self.yaw = 0.0
        self.pitch = 0.0
        self.collisions = 0

    # -- state -------------------------------------------------------------------------

    def set_pose(self, x: float, y: float, yaw: float, pitch: float = 0.0, check_free: bool = True) -> None:
        """Place the agent; raises InvalidPoseError for NaN values or (with ``check_free``) blocked places."""
        vals = np.array([x, y, yaw, pitch], dtype=np.float64)
        if not np.all(np.isfinite(vals)):
            raise InvalidPoseError(f"agent pose contains NaN/inf: {vals.tolist()}")
        if check_free and not self.grid.is_free(vals[:2]):
            raise InvalidPoseError(f"({x:.3f}, {y:.3f}) is not traversable in scene {self.scene.name!r}")
        lim = np.radians(self.config.max_tilt_deg)
        self.xy = vals[:2].copy()
        self.yaw = float(wrap_angle(float(vals[2])))
        self.pitch = float(np.clip(vals[3], -lim, lim))

    @property
    def body_pose(self) -> np.ndarray:
        """``T_world_body [4, 4]``: REP-103 body (x forward, y left, z up) on the floor."""
        R = Rotation.from_euler("z", self.yaw).as_matrix()
        return make_pose(R, [self.xy[0], self.xy[1], self.scene.floor_z])

    @property
    def T_world_camera(self) -> np.ndarray:
        """``[4, 4]`` camera-to-world pose, OpenCV optical frame, at the configured height and tilt."""
        return camera_pose(self.xy, self.yaw, self.pitch, self.config.camera_height, self.scene.floor_z)

    @property
    def room_id(self) -> int:
        return self.scene.room_of(self.xy)

    def random_free_pose(self, rng: np.random.Generator, min_clearance: float = 0.0) -> tuple[float, float, float]:
        """A random traversable ``(x, y, yaw)`` (cell centre), optionally at least ``min_clearance`` m from obstacles."""
        cells = np.argwhere(self.grid.traversable & (self.grid.clearance >= min_clearance))
        if len(cells) == 0:
            cells = np.argwhere(self.grid.traversable)
        if len(cells) == 0:
            raise InvalidPoseError(f"scene {self.scene.name!r} has no traversable cell")
        xy = self.grid.cell_to_world(cells[rng.integers(len(cells))])[0]
        return float(xy[0]), float(xy[1]), float(rng.uniform(-np.pi, np.pi))

    def reset_random(self, rng: np.random.Generator, min_clearance: float = 0.3) -> None:
        x, y, yaw = self.random_free_pose(rng, min_clearance)
        self.set_pose(x, y, yaw, 0.0)

    # -- actions -----------------------------------------------------------------------

    def step(self, action: str) -> StepResult:
        """Apply one discrete action (one of :data:`ACTIONS`)."""
        c = self.config
        if action == "move_forward":
            return self._move(c.forward_step)
        if action in ("turn_left", "turn_right"):
            d = np.radians(c.turn_deg) * (1.0 if action == "turn_left" else -1.0)
            self.yaw = float(wrap_angle(self.yaw + d))
            return StepResult(action)
        if action in ("look_up", "look_down"):
            d = np.radians(c.tilt_deg) * (1.0 if action == "look_up" else -1.0)
            lim = np.radians(c.max_tilt_deg)
            self.pitch = float(np.clip(self.pitch + d, -lim, lim))
            return StepResult(action)
        raise ValueError(f"unknown action {action!r}; expected one of {ACTIONS}")

    def _move(self, distance: float) -> StepResult:
        """Move along the heading; stop at the last traversable sample before an obstacle."""
        direction = np.array([np.cos(self.yaw), np.sin(self.yaw)])
        n = max(2, int(np.ceil(distance / (0.25 * self.grid.resolution))) + 1)
        s = np.linspace(0.0, distance, n)
        pts = self.xy + s[:, None] * direction
        free = self.grid.is_free(pts)
        if free.all():
            self.xy = pts[-1]
            return StepResult("move_forward", False, float(distance))
        first_blocked = int(np.argmin(free))
        last = max(first_blocked - 1, 0)
        moved = float(s[last])
        self.xy = pts[last]
        self.collisions += 1
        return StepResult("move_forward", True, moved)
