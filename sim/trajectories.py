"""Seeded camera trajectories through a scene: exploration, loops and held-out query views.

Every trajectory is a list of ``T_world_camera [4, 4]`` poses (OpenCV optical frame) of a
camera ``camera_height`` above the floor, produced by a robot that drives along A* paths over
the :class:`~sim.navigation.OccupancyGrid`. Motion is limited per frame (at most ``step`` metres
and ``max_turn_deg`` of heading), so consecutive frames overlap enough for frame-to-frame
tracking; the robot turns in place when the path bends sharply.

Coverage is measured in 2D: a traversable cell is *seen* when a ray of the camera's
horizontal field of view reaches it within ``view_range`` metres over the obstacle grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from spatial_memory.errors import ConfigError
from spatial_memory.geometry import interpolate_pose, pose_error
from spatial_memory.types import CameraIntrinsics

from .agent import camera_pose, wrap_angle, yaw_pitch_from_camera
from .navigation import GridConfig, OccupancyGrid, SceneRaycaster
from .scene import Scene

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MotionLimits:
    """Per-frame motion of a trajectory (metres, degrees)."""

    step: float = 0.2  # translation per frame while driving
    max_turn_deg: float = 10.0  # heading change per frame
    turn_in_place_deg: float = 30.0  # heading error above which the robot turns without driving
    lookahead: float = 0.4  # metres along the path used to pick the heading

    def __post_init__(self) -> None:
        if not (self.step > 0 and 0 < self.max_turn_deg <= 90 and self.turn_in_place_deg >= self.max_turn_deg
                and self.lookahead > 0):
            raise ConfigError(f"invalid motion limits {self}")


def densify_poses(poses: list[np.ndarray], factor: int) -> list[np.ndarray]:
    """Insert ``factor - 1`` interpolated poses (slerp + linear) between consecutive poses."""
    if factor <= 1 or len(poses) < 2:
        return [np.asarray(T) for T in poses]
    out = []
    for a, b in zip(poses[:-1], poses[1:]):
        out.extend(interpolate_pose(a, b, k / factor) for k in range(factor))
    out.append(np.asarray(poses[-1]))
    return out


def trajectory_length(poses: list[np.ndarray]) -> float:
    """Total camera path length in metres (sum of consecutive translation distances)."""
    if len(poses) < 2:
        return 0.0
    t = np.stack([np.asarray(T)[:3, 3] for T in poses])
    return float(np.linalg.norm(np.diff(t, axis=0), axis=1).sum())


def _grid_for(scene: Scene, grid: OccupancyGrid | None, camera_height: float = 1.0) -> OccupancyGrid:
    """The given grid, or one for a robot whose body reaches 0.1 m above its camera (at least 1.1 m)."""
    if grid is not None:
        return grid
    return OccupancyGrid.from_scene(scene, GridConfig(max_height=max(1.1, camera_height + 0.1)))


def _follow(path: np.ndarray, yaw: float, lim: MotionLimits) -> Iterator[tuple[np.ndarray, float]]:
    """Drive along a polyline ``path [K, 2]`` from its first point with a rate-limited heading.

    Yields one ``(xy [2], yaw)`` per frame; positions stay on the polyline (which the planner
    made collision-free), headings point ``lookahead`` metres ahead along it.
    """
    path = np.asarray(path, dtype=np.float64)
    distinct = np.concatenate([[True], np.linalg.norm(np.diff(path, axis=0), axis=1) > 1e-9])
    path = path[distinct]
    if len(path) < 2:
        return
    starts, seg = path[:-1], np.diff(path, axis=0)
    seglen = np.linalg.norm(seg, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seglen)])
    total = cum[-1]

    def point(s: float) -> np.ndarray:
        i = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(seglen) - 1))
        return starts[i] + (s - cum[i]) / seglen[i] * seg[i]

    max_turn = np.radians(lim.max_turn_deg)
    move_tol = np.radians(lim.turn_in_place_deg)
    s = 0.0
    while total - s > 1e-6:
        here = point(s)
        ahead = point(min(s + lim.lookahead, total)) - here
        if np.linalg.norm(ahead) > 1e-3:
            err = float(wrap_angle(np.arctan2(ahead[1], ahead[0]) - yaw))
            yaw = float(wrap_angle(yaw + np.clip(err, -max_turn, max_turn)))
            err -= float(np.clip(err, -max_turn, max_turn))
        else:
            err = 0.0
        if abs(err) <= move_tol:
            s = min(s + lim.step, total)
        yield point(s), yaw


class _Recorder:
    """Collects poses and the cells they see."""

    def __init__(self, grid: OccupancyGrid, n_frames: int, camera_height: float, pitch: float, hfov: float,
                 view_range: float, look_around: float = 0.0, look_period: int = 40) -> None:
        self.grid, self.n = grid, n_frames
        self.h, self.pitch, self.hfov, self.range = camera_height, pitch, hfov, view_range
        self.look_around, self.look_period = look_around, max(int(look_period), 2)
        self.poses: list[np.ndarray] = []
        self.seen = np.zeros(grid.shape, dtype=bool)
        self.xy, self.yaw = np.zeros(2), 0.0

    @property
    def full(self) -> bool:
        return len(self.poses) >= self.n

    def emit(self, xy: np.ndarray, yaw: float) -> None:
        self.xy, self.yaw = np.asarray(xy, dtype=np.float64).copy(), float(yaw)
        # Head tilt: a smooth raised-cosine sweep from the base pitch up by look_around and back, so
        # things above the camera's field of view (ceiling lights, high shelves) get seen too.
        phase = 2.0 * np.pi * len(self.poses) / self.look_period
        pitch = self.pitch + self.look_around * 0.5 * (1.0 - np.cos(phase))
        self.poses.append(camera_pose(self.xy, self.yaw, pitch, self.h, self.grid.floor_z))
        self.seen |= self.grid.visible_cells(self.xy, self.yaw, self.hfov, self.range)

    def drive(self, path: np.ndarray, lim: MotionLimits, stop=None) -> int:
        """Follow ``path``; stop early when ``stop()`` turns true. Returns frames emitted."""
        k = 0
        for xy, yaw in _follow(path, self.yaw, lim):
            if self.full:
                break
            self.emit(xy, yaw)
            k += 1
            if stop is not None and stop():
                break
        return k


def _start_pose(grid: OccupancyGrid, rng: np.random.Generator, start_xy=None) -> tuple[np.ndarray, float]:
    if start_xy is not None:
        s = grid.snap(start_xy)
        if s is None:
            raise ConfigError(f"start {np.asarray(start_xy).tolist()} is not traversable")
        return s, float(rng.uniform(-np.pi, np.pi))
    cells = np.argwhere(grid.traversable & (grid.clearance >= 0.4))
    if len(cells) == 0:
        cells = np.argwhere(grid.traversable)
    if len(cells) == 0:
        raise ConfigError("the occupancy grid has no traversable cell")
    return grid.cell_to_world(cells[rng.integers(len(cells))])[0], float(rng.uniform(-np.pi, np.pi))


def _check_frames(n_frames: int) -> None:
    if int(n_frames) < 1:
        raise ConfigError(f"n_frames must be >= 1, got {n_frames}")


def exploration_trajectory(
    scene: Scene,
    n_frames: int,
    seed: int = 0,
    grid: OccupancyGrid | None = None,
    camera_height: float = 1.0,
    pitch_deg: float = -5.0,
    hfov_deg: float = 70.0,
    view_range: float = 3.0,
    limits: MotionLimits | None = None,
    start_xy: np.ndarray | None = None,
    look_around_deg: float = 0.0,
    look_period_frames: int = 24,
) -> list[np.ndarray]:
    """A coverage-driven exploration of ``n_frames`` poses.

    ``look_around_deg`` > 0 adds a slow head-tilt sweep (up by that much and back every
    ``look_period_frames``) on top of ``pitch_deg``.

    The robot repeatedly picks the unseen traversable cell that is cheapest to reach
    (geodesic distance plus a penalty for turning away from its heading, with a small seeded
    jitter), drives there along the A* path, and re-plans as soon as that cell has been seen.
    When everything is seen it keeps wandering to random far cells (revisiting) until the frame
    budget is spent.

    Returns:
        ``n_frames`` poses ``[4, 4]``.
    """
    _check_frames(n_frames)
    grid = _grid_for(scene, grid, camera_height)
    lim = limits or MotionLimits()
    rng = np.random.default_rng(seed)
    rec = _Recorder(grid, n_frames, camera_height, np.radians(pitch_deg), np.radians(hfov_deg), view_range,
                    np.radians(look_around_deg), look_period_frames)
    xy, yaw = _start_pose(grid, rng, start_xy)
    rec.emit(xy, yaw)
    free = grid.traversable
    n_free = max(int(free.sum()), 1)
    unreachable = np.zeros(grid.shape, dtype=bool)
    idle = 0
    while not rec.full:
        dist = grid.distance_field(rec.xy)
        todo = free & ~rec.seen & ~unreachable & np.isfinite(dist)
        exploring = todo.sum() > 0.005 * n_free
        if exploring:
            cells = np.argwhere(todo)
            d = dist[cells[:, 0], cells[:, 1]]
            xy_c = grid.cell_to_world(cells)
            bearing = np.arctan2(xy_c[:, 1] - rec.xy[1], xy_c[:, 0] - rec.xy[0])
            score = d + 0.3 * np.abs(wrap_angle(bearing - rec.yaw)) + rng.uniform(0.0, 0.2, len(d))
            score[d < 0.3] += 5.0  # a goal under the robot cannot be driven to
            k = int(np.argmin(score))
        else:  # all seen: revisit a random far place
            cells = np.argwhere(free & np.isfinite(dist) & (dist > 1.0))
            if len(cells) == 0:
                cells = np.argwhere(free & np.isfinite(dist))
            k = int(rng.integers(len(cells)))
        goal_cell = cells[k]
        path = grid.plan(rec.xy, grid.cell_to_world(goal_cell)[0])
        if path is None:
            unreachable[goal_cell[0], goal_cell[1]] = True
            continue
        gy, gx = int(goal_cell[0]), int(goal_cell[1])
        emitted = rec.drive(path, lim, stop=(lambda: bool(rec.seen[gy, gx])) if exploring else None)
        if emitted == 0 or (exploring and not rec.seen[gy, gx] and np.linalg.norm(rec.xy - path[-1]) < 0.1):
            # reached (or could not move toward) a cell the camera cannot see: do not pick it again
            unreachable[gy, gx] = True
            idle += emitted == 0
            if idle > 1000:
                raise ConfigError("exploration made no progress; is the traversable space degenerate?")
    return rec.poses


def loop_trajectory(
    scene: Scene,
    n_frames: int,
    seed: int = 0,
    grid: OccupancyGrid | None = None,
    n_waypoints: int = 5,
    camera_height: float = 1.0,
    pitch_deg: float = -5.0,
    limits: MotionLimits | None = None,
) -> list[np.ndarray]:
    """A closed tour through ``n_waypoints`` spread-out places, driven lap after lap.

    Waypoints are chosen by geodesic farthest-point sampling among open cells (>= 0.7 m from
    obstacles where the scene allows; seeded first waypoint) and ordered by a greedy nearest-neighbour tour, so the
    second and later laps revisit the first lap's places: loop closures for SLAM/relocalization.

    Returns:
        ``n_frames`` poses ``[4, 4]``.
    """
    _check_frames(n_frames)
    if n_waypoints < 2:
        raise ConfigError(f"n_waypoints must be >= 2, got {n_waypoints}")
    grid = _grid_for(scene, grid, camera_height)
    lim = limits or MotionLimits()
    rng = np.random.default_rng(seed)
    rec = _Recorder(grid, n_frames, camera_height, np.radians(pitch_deg), np.radians(70.0), 3.0)
    start, yaw = _start_pose(grid, rng)
    # waypoints in open floor, so turning around at one does not stare at a wall from up close
    for min_clear in (0.7, 0.5, 0.35, 0.0):
        roomy = grid.traversable & (grid.clearance >= min_clear)
        if roomy.sum() >= 4 * n_waypoints:
            break
    waypoints = [start]
    dists = [grid.distance_field(start)]
    for _ in range(n_waypoints - 1):
        dmin = np.min(np.stack(dists), axis=0)
        dmin = np.where(roomy & np.isfinite(dmin), dmin, -1.0)
        c = np.unravel_index(int(np.argmax(dmin)), dmin.shape)
        if dmin[c] <= 0.5:
            break
        p = grid.cell_to_world(np.array([c]))[0]
        waypoints.append(p)
        dists.append(grid.distance_field(p))
    # greedy nearest-neighbour ordering from the start
    order, left = [0], set(range(1, len(waypoints)))
    while left:
        here = dists[order[-1]]
        nxt = min(left, key=lambda j: here[tuple(grid.world_to_cell(waypoints[j])[0])])
        order.append(nxt)
        left.remove(nxt)
    tour = [waypoints[i] for i in order]
    rec.emit(start, yaw)
    legs = [grid.plan(tour[i], tour[(i + 1) % len(tour)]) for i in range(len(tour))]
    if len(tour) < 2 or any(p is None for p in legs):
        raise ConfigError("could not plan a loop: too little connected free space")
    i = 0
    while not rec.full:
        leg = legs[i % len(legs)]
        leg = np.vstack([rec.xy, leg[1:]]) if len(leg) > 1 else leg
        if rec.drive(leg, lim) == 0 and i > 2 * len(legs):
            raise ConfigError("loop trajectory made no progress")
        i += 1
    return rec.poses


def trajectory_coverage(
    grid: OccupancyGrid, poses: list[np.ndarray], hfov_deg: float = 70.0, view_range: float = 3.0
) -> float:
    """Fraction of traversable cells seen (2D visibility within ``view_range``) from the poses' cameras."""
    seen = np.zeros(grid.shape, dtype=bool)
    for T in poses:
        yaw, _ = yaw_pitch_from_camera(T)
        seen |= grid.visible_cells(np.asarray(T)[:2, 3], yaw, np.radians(hfov_deg), view_range)
    return float((seen & grid.traversable).sum()) / max(int(grid.traversable.sum()), 1)


def nearest_mapping_pose(mapping_poses: list[np.ndarray] | np.ndarray, T: np.ndarray) -> tuple[int, float, float]:
    """The mapping pose nearest in translation to ``T`` (ties broken by rotation).

    Returns:
        ``(index, translation distance m, rotation difference deg)``.
    """
    P = np.asarray(mapping_poses, dtype=np.float64)
    d = np.linalg.norm(P[:, :3, 3] - np.asarray(T)[:3, 3], axis=1)
    ties = np.flatnonzero(d <= d.min() + 1e-6)
    rots = [pose_error(T, P[i])[1] for i in ties]
    j = int(ties[int(np.argmin(rots))])
    return j, float(d[j]), float(min(rots))


def heldout_query_viewpoints(
    scene: Scene,
    mapping_poses: list[np.ndarray],
    n: int,
    seed: int = 0,
    trans_range: tuple[float, float] = (0.2, 1.0),
    rot_range_deg: tuple[float, float] = (10.0, 40.0),
    grid: OccupancyGrid | None = None,
    intrinsics: CameraIntrinsics | None = None,
    min_median_depth: float = 1.0,
    max_pitch_deg: float = 20.0,
    max_tries_per_view: int = 400,
) -> list[np.ndarray]:
    """``n`` query poses off the mapping path, for relocalization / novel-view evaluation.

    Each pose is a seeded perturbation of a random mapping pose (horizontal offset, heading and
    tilt change, same camera height) that is accepted only when: its position is traversable;
    its translation to the NEAREST mapping pose is within ``trans_range`` metres and its rotation
    to that pose is within ``rot_range_deg``; and a ray-cast depth image (coarse, 32x24) has at
    least 80 % valid pixels with a median depth >= ``min_median_depth`` (so it is not staring at
    a wall from 0.2 m).

    Raises:
        ConfigError: bad ranges, or fewer than ``n`` poses found in ``n * max_tries_per_view`` tries.
    """
    lo_t, hi_t = map(float, trans_range)
    lo_r, hi_r = map(float, rot_range_deg)
    if not (0 <= lo_t < hi_t and 0 <= lo_r < hi_r <= 180 and n >= 0 and len(mapping_poses) > 0):
        raise ConfigError(f"bad held-out view request: n={n}, trans_range={trans_range}, rot_range_deg={rot_range_deg}, "
                          f"{len(mapping_poses)} mapping poses")
    grid = _grid_for(scene, grid)
    K_src = intrinsics or CameraIntrinsics.from_fov(640, 480, 70.0)
    small = K_src.scaled(32, 24)
    caster = SceneRaycaster(scene)
    rng = np.random.default_rng(seed)
    P = np.asarray(mapping_poses, dtype=np.float64)
    out: list[np.ndarray] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > n * max_tries_per_view:
            raise ConfigError(f"found only {len(out)} of {n} held-out views satisfying trans_range={trans_range}, "
                              f"rot_range_deg={rot_range_deg}, min_median_depth={min_median_depth}")
        base = P[rng.integers(len(P))]
        yaw0, pitch0 = yaw_pitch_from_camera(base)
        ang = rng.uniform(-np.pi, np.pi)
        r = rng.uniform(lo_t, hi_t)
        xy = base[:2, 3] + r * np.array([np.cos(ang), np.sin(ang)])
        if not grid.is_free(xy):
            continue
        dyaw = np.radians(rng.uniform(lo_r, hi_r)) * rng.choice([-1.0, 1.0])
        pitch = float(np.clip(pitch0 + np.radians(rng.uniform(-10.0, 10.0)), -np.radians(max_pitch_deg),
                              np.radians(max_pitch_deg)))
        T = camera_pose(xy, yaw0 + dyaw, pitch, base[2, 3] - grid.floor_z, grid.floor_z)
        _, d, rot = nearest_mapping_pose(P, T)
        if not (lo_t <= d <= hi_t and lo_r <= rot <= hi_r):
            continue
        depth = caster.depth(small.K, small.width, small.height, T)
        valid = depth > 0
        if valid.mean() < 0.8 or float(np.median(depth[valid])) < min_median_depth:
            continue
        out.append(T)
    log.info("held-out views: %d accepted in %d tries", len(out), tries)
    return out


__all__ = [
    "MotionLimits",
    "exploration_trajectory",
    "heldout_query_viewpoints",
    "loop_trajectory",
    "nearest_mapping_pose",
    "trajectory_coverage",
    "trajectory_length",
]
