"""Scene description shared by the embedded renderer, the agent and the experiments.

A scene is one triangle soup in a z-up world (metres) with, per triangle, the instance it
belongs to and the material/UVs used to texture it. Objects carry their semantic label and
world AABB; rooms carry their floor footprint (used for evaluation only: memories never read
room ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Material:
    """A diffuse material: a texture (``[h, w, 3] uint8``, sampled with wrapping UVs) or a flat colour."""

    name: str
    base_color: np.ndarray  # [3] float in [0, 1]; multiplies the texture when one is present
    texture: np.ndarray | None = None


@dataclass
class SceneObject:
    """A labelled instance. ``instance_id`` > 0; 0 means "no instance" in id images."""

    instance_id: int
    name: str  # unique, e.g. "sofa_0"
    label: str  # semantic category, e.g. "sofa"
    aabb_min: np.ndarray  # [3]
    aabb_max: np.ndarray  # [3]
    room_id: int = 0

    @property
    def center(self) -> np.ndarray:
        return 0.5 * (np.asarray(self.aabb_min) + np.asarray(self.aabb_max))


@dataclass
class Room:
    """An axis-aligned room footprint on the floor plane (x/y, metres)."""

    room_id: int
    name: str
    xy_min: np.ndarray  # [2]
    xy_max: np.ndarray  # [2]

    def contains(self, xy: np.ndarray) -> np.ndarray:
        xy = np.atleast_2d(xy)
        return np.all((xy >= self.xy_min) & (xy <= self.xy_max), axis=1)


@dataclass
class Scene:
    """Triangle mesh scene with per-triangle instance ids, materials and UVs.

    Attributes:
        vertices: ``[V, 3] float32`` world coordinates (z up, metres).
        triangles: ``[T, 3] int32`` vertex indices.
        tri_instance: ``[T] int32`` instance id of each triangle (see ``objects``).
        tri_material: ``[T] int32`` index into ``materials``.
        tri_uv: ``[T, 3, 2] float32`` texture coordinates of each triangle corner.
        objects: every labelled instance, including structure (wall, floor, ceiling, door frame).
        rooms: room footprints (one for a single-room scene).
        floor_z: height of the walkable floor.
    """

    name: str
    vertices: np.ndarray
    triangles: np.ndarray
    tri_instance: np.ndarray
    tri_material: np.ndarray
    tri_uv: np.ndarray
    materials: list[Material]
    objects: list[SceneObject]
    rooms: list[Room] = field(default_factory=list)
    floor_z: float = 0.0

    @property
    def id_to_label(self) -> dict[int, str]:
        return {o.instance_id: o.label for o in self.objects}

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vertices.min(axis=0), self.vertices.max(axis=0)

    def object(self, instance_id: int) -> SceneObject:
        for o in self.objects:
            if o.instance_id == instance_id:
                return o
        raise KeyError(f"scene {self.name!r} has no instance {instance_id}")

    def labels(self, include_structure: bool = False) -> list[str]:
        """Sorted object categories (structure classes excluded unless asked)."""
        structure = {"wall", "floor", "ceiling", "door_frame", "window"}
        return sorted({o.label for o in self.objects if include_structure or o.label not in structure})

    def room_of(self, xy: np.ndarray) -> int:
        """Room id containing a floor point, -1 if none."""
        for r in self.rooms:
            if r.contains(np.asarray(xy)[:2])[0]:
                return r.room_id
        return -1
