"""Scene loading: the real Drake living room, the procedural apartment and the registry."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import open3d as o3d
import pytest

from sim.apartment import DOOR_H, generate_apartment
from sim.drake_room import R_ZUP_YUP, load_drake_living_room, parse_directives
from sim.scenes import SCENE_NAMES, load_scene
from spatial_memory.errors import ConfigError, DatasetFormatError

STRUCTURE = {"wall", "floor", "ceiling", "door_frame", "window"}


@pytest.fixture(scope="module")
def drake(shared_data):
    return load_drake_living_room(shared_data / "drake_living_room")


def _check_arrays(scene) -> None:
    T = len(scene.triangles)
    assert scene.vertices.dtype == np.float32 and scene.vertices.shape[1] == 3
    assert scene.triangles.dtype == np.int32 and scene.triangles.max() < len(scene.vertices)
    assert scene.tri_instance.shape == (T,) and scene.tri_material.shape == (T,)
    assert scene.tri_uv.shape == (T, 3, 2) and scene.tri_uv.dtype == np.float32
    assert scene.tri_material.max() < len(scene.materials)
    ids = {o.instance_id for o in scene.objects}
    assert set(np.unique(scene.tri_instance).tolist()) == ids and 0 not in ids
    assert len({o.name for o in scene.objects}) == len(scene.objects)
    for m in scene.materials:
        assert m.texture is None or (m.texture.dtype == np.uint8 and m.texture.shape[2] == 3)


# ----------------------------------------------------------------------------- Drake room


def test_drake_room_labels_and_bounds(drake):
    _check_arrays(drake)
    labels = set(drake.labels())
    assert {"sofa", "table", "cabinet", "bookshelf", "stool", "tea set", "curtain"} <= labels
    assert {"wall", "floor", "ceiling"} <= set(drake.labels(include_structure=True))
    lo, hi = drake.bounds
    size = hi - lo
    assert 5.9 < size[0] < 6.3 and 5.9 < size[1] < 6.4 and 3.1 < size[2] < 3.3
    assert drake.floor_z == pytest.approx(0.0, abs=1e-3)
    assert len(drake.rooms) == 1 and drake.room_of(np.array([0.0, 0.0])) == 0
    # textures came through from the glTF files
    assert sum(m.texture is not None for m in drake.materials) >= 8


def test_drake_room_structure_split_by_geometry(drake):
    """Floor triangles are horizontal at z = 0, ceiling at the top, walls vertical."""
    V, F = drake.vertices.astype(np.float64), drake.triangles
    n = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    for o in drake.objects:
        sel = drake.tri_instance == o.instance_id
        if o.label == "floor":
            assert np.all(np.abs(n[sel, 2]) > 0.99) and np.allclose(V[F[sel]][..., 2], 0.0, atol=1e-3)
        if o.label == "ceiling":
            assert np.all(np.abs(n[sel, 2]) > 0.99) and np.all(V[F[sel]][..., 2] > 3.1)
    walls = [o for o in drake.objects if o.label == "wall" and o.name.startswith("wall_")]
    assert len(walls) == 4


def test_drake_room_furniture_poses_follow_directives(drake):
    """Objects sit where the .dmd.yaml welds them, on the floor, inside the room."""
    by_name = {o.name: o for o in drake.objects}
    sofa = by_name["sofa"]
    assert sofa.center[:2] == pytest.approx([0.0, -2.41], abs=0.1)
    assert sofa.aabb_min[2] == pytest.approx(0.0, abs=0.02)
    # bookshelves are yawed -90 deg: their long side (1.37 m) runs along y against the x = 3 wall
    shelf = by_name["bookshelves"]
    ext = shelf.aabb_max - shelf.aabb_min
    assert ext[1] > 1.3 and ext[0] < 0.7 and shelf.aabb_max[0] < 3.05
    tea = by_name["tea_set"]
    table = by_name["wooden_table"]
    assert tea.aabb_min[2] == pytest.approx(table.aabb_max[2], abs=0.02)  # on the table top


def test_drake_room_is_cached(shared_data, drake):
    t = time.perf_counter()
    again = load_drake_living_room(shared_data / "drake_living_room")
    assert again is drake and time.perf_counter() - t < 0.05
    assert not drake.vertices.flags.writeable


def test_directives_rpy_tag(shared_data):
    models = {n: X for n, _, X in parse_directives(shared_data / "drake_living_room/models/furnished_living_room.dmd.yaml")}
    R = models["bookshelves"][:3, :3]
    assert R @ np.array([1.0, 0, 0]) == pytest.approx([0.0, -1.0, 0.0], abs=1e-9)  # yaw -90 deg
    assert models["bookshelves"][:3, 3] == pytest.approx([2.716, -1.0716, 0.0])
    assert R_ZUP_YUP @ np.array([0.0, 1.0, 0.0]) == pytest.approx([0.0, 0.0, 1.0])  # glTF up -> z


def test_directives_errors(tmp_path):
    p = tmp_path / "bad.dmd.yaml"
    p.write_text("directives:\n- add_model: {name: a, file: a.sdf}\n- add_weld: {parent: b::x, child: a::a}\n")
    with pytest.raises(DatasetFormatError, match="world"):
        parse_directives(p)
    p.write_text("directives:\n- add_weld: {parent: world, child: a::a, X_PC: {rotation: !Rpy {turns: [1]}}}\n")
    with pytest.raises(DatasetFormatError, match="Rpy"):
        parse_directives(p)
    with pytest.raises(DatasetFormatError, match="missing"):
        load_drake_living_room(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- apartment


def _digest(scene) -> str:
    h = hashlib.sha256()
    for a in (scene.vertices, scene.triangles, scene.tri_instance, scene.tri_material, scene.tri_uv):
        h.update(np.ascontiguousarray(a).tobytes())
    for m in scene.materials:
        h.update(m.texture.tobytes())
    h.update(repr([(o.name, o.label, o.room_id) for o in scene.objects]).encode())
    return h.hexdigest()


def test_apartment_deterministic_per_seed():
    a = generate_apartment(7, cache=False)
    b = generate_apartment(7, cache=False)
    c = generate_apartment(8, cache=False)
    assert a is not b
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


@pytest.fixture(scope="module", params=[0, 1, 2])
def apartment(request):
    return generate_apartment(request.param)


def test_apartment_counts(apartment):
    _check_arrays(apartment)
    assert len(apartment.rooms) >= 3
    furniture = [o for o in apartment.objects if o.label not in STRUCTURE]
    assert len(furniture) >= 15
    assert len(apartment.labels()) >= 8
    for r in apartment.rooms:
        assert {"floor", "wall", "ceiling"} <= {o.label for o in apartment.objects if o.room_id == r.room_id}
    for o in furniture:  # every object lies in the room it claims
        assert apartment.room_of(o.center[:2]) == o.room_id, o.name


def test_apartment_objects_do_not_overlap_and_leave_floor(apartment):
    on_floor = [o for o in apartment.objects if o.label not in STRUCTURE and o.aabb_min[2] < 0.01]
    for i, a in enumerate(on_floor):
        for b in on_floor[i + 1 :]:
            overlap = np.minimum(a.aabb_max[:2], b.aabb_max[:2]) - np.maximum(a.aabb_min[:2], b.aabb_min[:2])
            assert not np.all(overlap > 0), f"{a.name} overlaps {b.name}"
    for r in apartment.rooms:
        area = float(np.prod(r.xy_max - r.xy_min))
        used = sum(float(np.prod(o.aabb_max[:2] - o.aabb_min[:2])) for o in on_floor if o.room_id == r.room_id)
        assert used < 0.55 * area, r.name


def test_apartment_doorways_passable(apartment):
    """A 0.4 m robot drives straight through every doorway: rays along its path, across its width
    and height, hit nothing for 1 m on each side of the wall; and the doors connect all rooms."""
    rc = o3d.t.geometry.RaycastingScene()
    rc.add_triangles(o3d.core.Tensor(apartment.vertices), o3d.core.Tensor(apartment.triangles.astype(np.uint32)))
    doors = [o for o in apartment.objects if o.label == "door_frame"]
    assert len(doors) >= len(apartment.rooms) - 1
    edges = []
    for d in doors:
        ext = d.aabb_max - d.aabb_min
        axis = int(np.argmin(ext[:2]))  # the wall is thin along the passing direction
        other = 1 - axis
        assert ext[other] >= 0.4 + 0.2 and ext[2] == pytest.approx(DOOR_H)
        c = d.center
        rays = []
        for lateral in np.linspace(-0.2, 0.2, 5):
            for z in (0.05, 0.5, 1.0, 1.5):
                o = np.array(c, float)
                o[other] += lateral
                o[axis] -= 1.0
                o[2] = z
                direction = np.zeros(3)
                direction[axis] = 1.0
                rays.append(np.concatenate([o, direction]))
        t = rc.cast_rays(o3d.core.Tensor(np.array(rays, np.float32)))["t_hit"].numpy()
        assert np.all(t > 2.0), f"{d.name} is blocked at {np.min(t):.2f} m"
        sides = []
        for s in (-0.3, 0.3):
            p = np.array(c[:2], float)
            p[axis] += s
            sides.append(apartment.room_of(p))
        assert sides[0] != sides[1] and -1 not in sides
        edges.append(tuple(sides))
    reached, frontier = {0}, [0]
    while frontier:
        r = frontier.pop()
        for a, b in edges:
            for u, v in ((a, b), (b, a)):
                if u == r and v not in reached:
                    reached.add(v)
                    frontier.append(v)
    assert reached == {r.room_id for r in apartment.rooms}


def test_apartment_bad_arguments():
    with pytest.raises(ConfigError, match="n_rooms"):
        generate_apartment(0, n_rooms=2)
    with pytest.raises(ConfigError, match="seed"):
        generate_apartment(-1)


def test_apartment_more_rooms():
    s = generate_apartment(3, n_rooms=5)
    assert len(s.rooms) == 5 and len({r.name for r in s.rooms}) == 5


# ----------------------------------------------------------------------------- registry


def test_load_scene_registry(shared_data):
    assert set(SCENE_NAMES) == {"drake_living_room", "apartment"}
    assert load_scene("apartment", seed=1) is generate_apartment(1)
    assert load_scene("drake_living_room").name == "drake_living_room"
    with pytest.raises(ConfigError, match="drake_living_room, apartment"):
        load_scene("moon_base")
