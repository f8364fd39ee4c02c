"""A tiny procedural multi-room scene on the ``sim.scene.Scene`` contract.

Used by the episodic tests and as a fallback when the simulator's apartment generator is not
installed. Rooms are 4 x 4 m cells in a row joined by 1 m doorways; each room holds a few
coloured boxes whose colour depends on their category, so a small CNN can tell them apart.
"""

from __future__ import annotations

import numpy as np

from sim.scene import Material, Room, Scene, SceneObject

TOY_LABELS: tuple[str, ...] = ("bed", "chair", "table", "sofa", "plant", "lamp", "tv", "shelf", "fridge", "bin")
_COLOURS = np.array(
    [
        [0.85, 0.1, 0.1], [0.1, 0.7, 0.1], [0.1, 0.2, 0.9], [0.9, 0.8, 0.1], [0.1, 0.8, 0.8],
        [0.8, 0.1, 0.8], [0.15, 0.15, 0.15], [0.95, 0.55, 0.1], [0.95, 0.95, 0.95], [0.5, 0.3, 0.1],
    ]
)
_SIZES = np.array(
    [[1.6, 1.2, 0.5], [0.5, 0.5, 0.9], [1.0, 0.8, 0.75], [1.4, 0.7, 0.8], [0.4, 0.4, 1.1],
     [0.3, 0.3, 1.5], [0.9, 0.3, 1.0], [0.8, 0.35, 1.8], [0.7, 0.7, 1.8], [0.4, 0.4, 0.5]]
)


def box_mesh(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box: ``vertices [8, 3]``, outward-facing ``triangles [12, 3]``."""
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    v = np.array(
        [[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0], [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]],
        dtype=np.float32,
    )
    f = np.array(
        [[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
         [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]],
        dtype=np.int32,
    )
    return v, f


def make_toy_apartment(seed: int, n_rooms: int = 4, room_size: float = 4.0, objects_per_room: int = 3) -> Scene:
    """Rooms in a row along +x with walls, doorways and labelled boxes.

    Returns:
        A :class:`Scene` whose instances are 1 floor, walls (label ``wall``) and objects.
    """
    rng = np.random.default_rng(seed)
    verts, tris, tri_inst, tri_mat = [], [], [], []
    materials = [Material("floor", np.array([0.55, 0.5, 0.45])), Material("wall", np.array([0.8, 0.8, 0.75]))]
    objects: list[SceneObject] = []
    rooms: list[Room] = []
    nv = 0

    def add_box(lo, hi, inst, mat):
        nonlocal nv
        v, f = box_mesh(np.asarray(lo, np.float32), np.asarray(hi, np.float32))
        verts.append(v)
        tris.append(f + nv)
        tri_inst.append(np.full(len(f), inst, np.int32))
        tri_mat.append(np.full(len(f), mat, np.int32))
        nv += len(v)

    W, H, t = room_size, 2.6, 0.1
    L = W * n_rooms
    add_box([0, 0, -t], [L, W, 0], 1, 0)
    objects.append(SceneObject(1, "floor_0", "floor", np.array([0, 0, -t]), np.array([L, W, 0])))
    wall_id = 2
    walls = [([0, -t, 0], [L, 0, H]), ([0, W, 0], [L, W + t, H]), ([-t, 0, 0], [0, W, H]), ([L, 0, 0], [L + t, W, H])]
    for k in range(1, n_rooms):  # inner walls with a 1 m doorway in the middle
        x = k * W
        walls += [([x - t / 2, 0, 0], [x + t / 2, W / 2 - 0.5, H]), ([x - t / 2, W / 2 + 0.5, 0], [x + t / 2, W, H])]
    for lo, hi in walls:
        add_box(lo, hi, wall_id, 1)
        objects.append(SceneObject(wall_id, f"wall_{wall_id}", "wall", np.array(lo, float), np.array(hi, float)))
        wall_id += 1
    inst = wall_id
    for r in range(n_rooms):
        rooms.append(Room(r, f"room_{r}", np.array([r * W, 0.0]), np.array([(r + 1) * W, W])))
        labels = rng.choice(len(TOY_LABELS), size=objects_per_room, replace=False)
        # objects stand against the walls, away from the doorway axis
        slots = [(0.2, 0.2), (0.2, W - 0.2), (W - 0.2, 0.2), (W - 0.2, W - 0.2)]
        for j, li in enumerate(labels):
            sx, sy, sz = _SIZES[li]
            cx, cy = slots[j % 4]
            x0 = r * W + (cx if cx < W / 2 else cx - sx)
            y0 = cy if cy < W / 2 else cy - sy
            lo, hi = np.array([x0, y0, 0.0]), np.array([x0 + sx, y0 + sy, sz])
            mat = len(materials)
            materials.append(Material(f"{TOY_LABELS[li]}_{inst}", np.clip(_COLOURS[li] + rng.normal(0, 0.03, 3), 0, 1)))
            add_box(lo, hi, inst, mat)
            objects.append(SceneObject(inst, f"{TOY_LABELS[li]}_{inst}", TOY_LABELS[li], lo, hi, room_id=r))
            inst += 1
    tri = np.concatenate(tris)
    return Scene(
        name=f"toy_apartment_{seed}",
        vertices=np.concatenate(verts).astype(np.float32),
        triangles=tri.astype(np.int32),
        tri_instance=np.concatenate(tri_inst),
        tri_material=np.concatenate(tri_mat),
        tri_uv=np.zeros((len(tri), 3, 2), np.float32),
        materials=materials,
        objects=objects,
        rooms=rooms,
        floor_z=0.0,
    )
