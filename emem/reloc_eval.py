"""Relocalization evaluation settings that need the simulator (the metrics and the generic
sequence split live in :mod:`relocalization.evaluate`, which imports no data source)."""

from __future__ import annotations

from relocalization.evaluate import RelocDataset
from sim.renderer import Lighting
from sim.simulator import SimFrameSource, make_trajectory, resolve_scene
from sim.trajectories import densify_poses, heldout_query_viewpoints
from spatial_memory.errors import EmptyMapError
from spatial_memory.types import CameraIntrinsics


def sim_dataset(scene: str = "drake_living_room", frames: int = 60, queries: int = 20, seed: int = 0,
                width: int = 640, height: int = 480, hfov_deg: float = 70.0, lighting_change: bool = True,
                densify: int = 2, progress: bool = False) -> RelocDataset:
    """Simulator setting: an exploration trajectory to map, held-out viewpoints to query
    (rendered with the mapping lighting and, if ``lighting_change``, with a changed one).

    The exploration trajectory turns up to 10 deg per pose, so a point stays in a 70 deg view
    for at most ~7 poses; ``densify`` renders interpolated poses in between (a video-rate
    sequence) so that tracks can reach FaVoR's > 5 observations.
    """
    sc = resolve_scene(scene, seed)
    K = CameraIntrinsics.from_fov(width, height, hfov_deg)
    key_poses = make_trajectory(sc, "explore", frames, seed, 1.0, hfov_deg)
    src = SimFrameSource(sc, densify_poses(key_poses, densify), K, None, progress=progress)
    mapping = list(src)
    if len(mapping) < 2:
        raise EmptyMapError(f"the simulator produced {len(mapping)} mapping frames")
    poses = heldout_query_viewpoints(sc, [f.T_world_camera for f in mapping], queries, seed=seed + 1, intrinsics=K)
    q = {"same_light": list(SimFrameSource(sc, poses, K, None, progress=progress))}
    if lighting_change:
        q["changed_light"] = list(SimFrameSource(sc, poses, K, Lighting.changed(seed), progress=progress))
    return RelocDataset(f"sim:{scene}", mapping, q)


__all__ = ["sim_dataset"]
