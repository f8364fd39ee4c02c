"""The embedded simulator as a frame source: a scene, a camera trajectory and the CPU renderer.

``make_sim_source("drake_living_room", frames=100)`` is the one-liner the experiments and the
ROS bring-up use; :meth:`SimFrameSource.from_poses` renders any given pose list (held-out
query views, a replayed robot path).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from spatial_memory.errors import ConfigError, EmemError
from spatial_memory.types import CameraIntrinsics, Frame

from .navigation import GridConfig, OccupancyGrid
from .renderer import Lighting, Renderer
from .scene import Scene
from .source import SourceStats
from .trajectories import exploration_trajectory, loop_trajectory

TRAJECTORIES = ("explore", "loop")


def resolve_scene(scene: str | Scene, seed: int = 0) -> Scene:
    """A :class:`Scene` as given, or loaded by name (``"drake_living_room"``, ``"apartment"``) with ``seed``."""
    if isinstance(scene, Scene):
        return scene
    if not isinstance(scene, str):
        raise ConfigError(f"scene must be a Scene or a scene name, got {type(scene).__name__}")
    from .scenes import load_scene  # the scene registry pulls in the asset loaders; load it only when named

    return load_scene(scene, seed=seed)


def resolve_lighting(lighting: Lighting | str | None, seed: int = 0) -> Lighting | None:
    """``None``/``"default"`` -> default lighting, ``"changed"`` -> :meth:`Lighting.changed` (seeded), or as given."""
    if lighting is None or isinstance(lighting, Lighting):
        return lighting
    if lighting == "default":
        return None
    if lighting == "changed":
        return Lighting.changed(seed)
    raise ConfigError(f"lighting must be a Lighting, 'default' or 'changed', got {lighting!r}")


class SimFrameSource:
    """Renders a fixed list of camera poses of a scene as :class:`Frame` s (a :class:`sim.source.FrameSource`).

    Frames are stamped ``start_ns + i / rate_hz`` and carry ``index = i``, the instance-id image
    and the scene's ``id_to_label``. A pose the renderer rejects (NaN, not rigid) is skipped and
    counted in ``stats`` instead of ending the stream.
    """

    def __init__(
        self,
        scene: Scene,
        poses: Sequence[np.ndarray],
        intrinsics: CameraIntrinsics,
        lighting: Lighting | None = None,
        rate_hz: float = 10.0,
        start_ns: int = 0,
        name: str | None = None,
        progress: bool = True,
    ) -> None:
        if not isinstance(scene, Scene):
            raise ConfigError(f"scene must be a Scene, got {type(scene).__name__}")
        if not isinstance(intrinsics, CameraIntrinsics):
            raise ConfigError(f"intrinsics must be CameraIntrinsics, got {type(intrinsics).__name__}")
        if not (np.isfinite(rate_hz) and rate_hz > 0):
            raise ConfigError(f"rate_hz must be positive, got {rate_hz}")
        self.scene = scene
        self.poses = [np.asarray(T, dtype=np.float64) for T in poses]
        self._intrinsics = intrinsics
        self.lighting = lighting
        self.rate_hz = float(rate_hz)
        self.start_ns = int(start_ns)
        self.name = name or f"sim:{scene.name}"
        self.stats = SourceStats()
        self.progress = progress
        self._renderer: Renderer | None = None

    @classmethod
    def from_poses(
        cls,
        scene: str | Scene,
        poses: Sequence[np.ndarray],
        intrinsics: CameraIntrinsics | None = None,
        lighting: Lighting | str | None = None,
        rate_hz: float = 10.0,
        seed: int = 0,
        name: str | None = None,
    ) -> "SimFrameSource":
        """Render ``poses`` of a scene (object or name); default camera 640x480, 70 deg horizontal FOV."""
        sc = resolve_scene(scene, seed)
        return cls(sc, poses, intrinsics or CameraIntrinsics.from_fov(640, 480, 70.0), resolve_lighting(lighting, seed),
                   rate_hz, name=name)

    @property
    def intrinsics(self) -> CameraIntrinsics:
        return self._intrinsics

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            self._renderer = Renderer(self.scene, self.lighting)
        return self._renderer

    def __len__(self) -> int:
        return len(self.poses)

    def stamp_ns(self, i: int) -> int:
        return self.start_ns + int(round(i * 1e9 / self.rate_hz))

    def frame(self, i: int) -> Frame:
        """Render frame ``i`` (raises on a bad pose; iteration skips instead)."""
        f = self.renderer.render_frame(self._intrinsics, self.poses[i], stamp_ns=self.stamp_ns(i), index=i,
                                       lighting=self.lighting)
        return f.validate()

    def __iter__(self) -> Iterator[Frame]:
        it = range(len(self.poses))
        if self.progress:
            it = tqdm(it, desc=f"render {self.name}", unit="frame", disable=None)  # None: only on a terminal
        for i in it:
            try:
                f = self.frame(i)
            except (EmemError, ValueError) as e:
                self.stats.skip(f"frame {i}: {e}")
                continue
            self.stats.yielded += 1
            yield f


def make_trajectory(
    scene: Scene, kind: str, frames: int, seed: int = 0, camera_height: float = 1.0, hfov_deg: float = 70.0,
    grid: OccupancyGrid | None = None, look_around_deg: float = 0.0,
) -> list[np.ndarray]:
    """Poses of a named trajectory kind (``"explore"`` or ``"loop"``) through ``scene``."""
    grid = grid or OccupancyGrid.from_scene(scene, GridConfig(max_height=max(1.1, camera_height + 0.1)))
    if kind == "explore":
        return exploration_trajectory(scene, frames, seed, grid=grid, camera_height=camera_height, hfov_deg=hfov_deg,
                                      look_around_deg=look_around_deg)
    if kind == "loop":
        return loop_trajectory(scene, frames, seed, grid=grid, camera_height=camera_height)
    raise ConfigError(f"trajectory must be one of {TRAJECTORIES}, got {kind!r}")


def make_sim_source(
    scene: str | Scene = "drake_living_room",
    seed: int = 0,
    frames: int = 100,
    width: int = 640,
    height: int = 480,
    hfov_deg: float = 70.0,
    trajectory: str = "explore",
    lighting: Lighting | str | None = None,
    camera_height: float = 1.0,
    rate_hz: float = 10.0,
    progress: bool = True,
    look_around_deg: float = 0.0,
) -> SimFrameSource:
    """A simulated RGB-D stream: ``frames`` views along a seeded trajectory through a scene.

    ``look_around_deg`` adds a slow head-tilt sweep to the exploration (see
    :func:`sim.trajectories.exploration_trajectory`).

    Args:
        scene: a Scene or a name for :func:`sim.scenes.load_scene` (``seed`` picks the apartment).
        trajectory: ``"explore"`` (coverage-driven) or ``"loop"`` (repeated tour, revisits places).
        lighting: a Lighting, ``"default"`` or ``"changed"`` (a seeded different lighting).
    """
    if not (0.0 < hfov_deg < 180.0):
        raise ConfigError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
    sc = resolve_scene(scene, seed)
    K = CameraIntrinsics.from_fov(width, height, hfov_deg)
    poses = make_trajectory(sc, trajectory, frames, seed, camera_height, hfov_deg, look_around_deg=look_around_deg)
    return SimFrameSource(sc, poses, K, resolve_lighting(lighting, seed), rate_hz,
                          name=f"sim:{sc.name}:{trajectory}:seed{seed}", progress=progress)


__all__ = ["SimFrameSource", "make_sim_source", "make_trajectory", "resolve_lighting", "resolve_scene", "TRAJECTORIES"]
