"""Fixtures for the simulator tests: a small box world built directly from triangles.

Two 4 m x 3 m rooms side by side (x in [0, 4] and [4, 8]) joined by a 1 m doorway in the
dividing wall at x = 4 (y in [1, 2]), a 2.5 m ceiling, three solid box objects and a desk on
four legs (top at 0.70-0.75 m) that a low robot can drive under. It needs only
``sim.scene`` so the navigation tests do not depend on the scene generators.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.scene import Material, Room, Scene, SceneObject

# Corner indices of the 12 triangles of an axis-aligned box (corner bit 0 = x, bit 1 = y, bit 2 = z).
_BOX_TRIS = np.array(
    [[0, 2, 1], [1, 2, 3], [4, 5, 6], [5, 7, 6], [0, 1, 4], [1, 5, 4],
     [2, 6, 3], [3, 6, 7], [0, 4, 2], [2, 4, 6], [1, 3, 5], [3, 7, 5]],
    dtype=np.int32,
)


def _box(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    corners = np.array([[(hi if (c >> k) & 1 else lo)[k] for k in range(3)] for c in range(8)])
    return corners.astype(np.float32), _BOX_TRIS.copy()


class _Builder:
    def __init__(self) -> None:
        self.v: list[np.ndarray] = []
        self.t: list[np.ndarray] = []
        self.inst: list[np.ndarray] = []
        self.mat: list[np.ndarray] = []
        self.objects: list[SceneObject] = []
        self.materials: list[Material] = []
        self.n = 0

    def material(self, name: str, rgb) -> int:
        self.materials.append(Material(name, np.asarray(rgb, float)))
        return len(self.materials) - 1

    def add_box(self, name: str, label: str, lo, hi, mat: int, room_id: int = 0) -> None:
        v, t = _box(lo, hi)
        iid = len(self.objects) + 1
        existing = [o for o in self.objects if o.name == name]
        if existing:  # several boxes of one instance (wall pieces)
            o = existing[0]
            iid = o.instance_id
            o.aabb_min = np.minimum(o.aabb_min, lo)
            o.aabb_max = np.maximum(o.aabb_max, hi)
        else:
            self.objects.append(SceneObject(iid, name, label, np.asarray(lo, float), np.asarray(hi, float), room_id))
        self.v.append(v)
        self.t.append(t + self.n)
        self.n += len(v)
        self.inst.append(np.full(len(t), iid, np.int32))
        self.mat.append(np.full(len(t), mat, np.int32))

    def build(self, name: str, rooms: list[Room]) -> Scene:
        tris = np.concatenate(self.t).astype(np.int32)
        return Scene(
            name=name,
            vertices=np.concatenate(self.v).astype(np.float32),
            triangles=tris,
            tri_instance=np.concatenate(self.inst),
            tri_material=np.concatenate(self.mat),
            tri_uv=np.zeros((len(tris), 3, 2), np.float32),
            materials=self.materials,
            objects=self.objects,
            rooms=rooms,
            floor_z=0.0,
        )


def make_box_world() -> Scene:
    b = _Builder()
    m_floor = b.material("floor", (0.6, 0.5, 0.4))
    m_wall = b.material("wall", (0.85, 0.85, 0.8))
    m_ceil = b.material("ceiling", (0.95, 0.95, 0.95))
    m_obj = b.material("wood", (0.5, 0.3, 0.15))
    m_red = b.material("fabric", (0.7, 0.1, 0.1))
    w = 0.1  # wall thickness
    b.add_box("floor_0", "floor", (0, 0, -0.05), (8, 3, 0.0), m_floor)
    b.add_box("ceiling_0", "ceiling", (0, 0, 2.5), (8, 3, 2.55), m_ceil)
    b.add_box("wall_0", "wall", (-w, -w, 0), (8 + w, 0, 2.5), m_wall)
    b.add_box("wall_0", "wall", (-w, 3, 0), (8 + w, 3 + w, 2.5), m_wall)
    b.add_box("wall_0", "wall", (-w, 0, 0), (0, 3, 2.5), m_wall)
    b.add_box("wall_0", "wall", (8, 0, 0), (8 + w, 3, 2.5), m_wall)
    # dividing wall with a doorway at y in [1, 2] and a lintel above 2.1 m
    b.add_box("wall_1", "wall", (4 - w / 2, 0, 0), (4 + w / 2, 1.0, 2.5), m_wall)
    b.add_box("wall_1", "wall", (4 - w / 2, 2.0, 0), (4 + w / 2, 3.0, 2.5), m_wall)
    b.add_box("wall_1", "wall", (4 - w / 2, 1.0, 2.1), (4 + w / 2, 2.0, 2.5), m_wall)
    b.add_box("table_0", "table", (1.0, 0.5, 0), (2.0, 1.3, 0.75), m_obj, room_id=0)
    b.add_box("shelf_0", "shelf", (0.1, 2.0, 0), (0.5, 2.9, 1.8), m_obj, room_id=0)
    b.add_box("sofa_0", "sofa", (5.5, 2.2, 0), (7.5, 2.9, 0.8), m_red, room_id=1)
    b.add_box("desk_0", "desk", (6.2, 0.3, 0.70), (7.4, 1.0, 0.75), m_obj, room_id=1)
    for x0 in (6.2, 7.35):
        for y0 in (0.3, 0.95):
            b.add_box("desk_0", "desk", (x0, y0, 0.0), (x0 + 0.05, y0 + 0.05, 0.70), m_obj, room_id=1)
    rooms = [Room(0, "room_a", np.array([0.0, 0.0]), np.array([4.0, 3.0])),
             Room(1, "room_b", np.array([4.0, 0.0]), np.array([8.0, 3.0]))]
    return b.build("box_world", rooms)


@pytest.fixture(scope="session")
def box_world() -> Scene:
    return make_box_world()


@pytest.fixture(scope="session")
def box_grid(box_world):
    from sim.navigation import OccupancyGrid

    return OccupancyGrid.from_scene(box_world)
