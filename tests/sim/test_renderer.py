"""The CPU ray-casting renderer: exact z-depth, pixel convention, texturing, ids, lighting, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sim.apartment import generate_apartment
from sim.drake_room import load_drake_living_room
from sim.renderer import Lighting, Renderer, camera_ray_directions
from sim.scene import Material, Room, Scene, SceneObject
from spatial_memory.errors import ConfigError, InvalidIntrinsicsError, InvalidPoseError
from spatial_memory.geometry import look_at, make_pose
from spatial_memory.types import CameraIntrinsics, backproject_depth, project_points

SMALL = CameraIntrinsics.from_fov(160, 120, 60.0)


def quad_scene(quads: list[tuple[np.ndarray, np.ndarray, int]], materials: list[Material]) -> Scene:
    """One instance per quad: ``(corners [4, 3], uv [4, 2], material index)``; ids 1.."""
    V, F, UV, M, I, objs = [], [], [], [], [], []
    for k, (c, uv, m) in enumerate(quads):
        tri = np.array([[0, 1, 2], [0, 2, 3]])
        V.append(c)
        F.append(tri + 4 * k)
        UV.append(uv[tri])
        M += [m, m]
        I += [k + 1, k + 1]
        objs.append(SceneObject(k + 1, f"quad_{k}", f"label_{k}", c.min(0), c.max(0)))
    return Scene("quads", np.concatenate(V).astype(np.float32), np.concatenate(F).astype(np.int32),
                 np.array(I, np.int32), np.array(M, np.int32), np.concatenate(UV).astype(np.float32), materials, objs,
                 [Room(0, "r", np.array([-5.0, -5.0]), np.array([5.0, 5.0]))])


@pytest.fixture(scope="module")
def floor_scene() -> Scene:
    """A 10 m x 10 m floor at z = 0 and a wall at x = 3 facing -x, flat grey."""
    floor = np.array([[-5, -5, 0], [5, -5, 0], [5, 5, 0], [-5, 5, 0]], float)
    wall = np.array([[3, -5, 0], [3, 5, 0], [3, 5, 4], [3, -5, 4]], float)
    uv = np.zeros((4, 2))
    return quad_scene([(floor, uv, 0), (wall, uv, 0)], [Material("grey", np.array([0.5, 0.5, 0.5]))])


def test_depth_of_floor_seen_from_above_is_exact(floor_scene):
    r = Renderer(floor_scene).render(SMALL, look_at([0.0, 0.0, 1.7], [0.0, 0.0, 0.0], up=(0, 1, 0)))
    assert r.depth.dtype == np.float32 and r.instance_ids.dtype == np.int32 and r.rgb.dtype == np.uint8
    assert np.all(r.instance_ids == 1)
    np.testing.assert_allclose(r.depth, 1.7, atol=1e-5)


def test_depth_is_z_depth_not_ray_length(floor_scene):
    """Facing the wall squarely from 2 m, every pixel (even the corners) has depth 2 m."""
    T = look_at([1.0, 0.0, 1.0], [3.0, 0.0, 1.0])
    r = Renderer(floor_scene).render(CameraIntrinsics.from_fov(160, 120, 90.0), T)
    wall = r.instance_ids == 2
    assert wall.mean() > 0.4
    np.testing.assert_allclose(r.depth[wall], 2.0, atol=1e-5)


def test_pixel_centre_convention_round_trips(floor_scene):
    """A tilted view: back-projecting depth with K lands every pixel on its plane, and projecting
    those points back gives the same pixel (pixel (u, v) looks along K^-1 [u, v, 1])."""
    K = CameraIntrinsics(97, 61, 70.0, 75.0, 40.3, 33.1)
    T = look_at([0.2, -0.4, 1.3], [2.0, 1.0, 0.2])
    r = Renderer(floor_scene).render(K, T)
    pts, vu = backproject_depth(r.depth, K, T)
    ids = r.instance_ids[vu[:, 0], vu[:, 1]]
    assert (ids == 1).sum() > 100 and (ids == 2).sum() > 100
    np.testing.assert_allclose(pts[ids == 1, 2], 0.0, atol=1e-4)
    np.testing.assert_allclose(pts[ids == 2, 0], 3.0, atol=1e-4)
    uv, z = project_points(pts, K, T)
    np.testing.assert_allclose(uv, vu[:, ::-1], atol=1e-3)
    d = camera_ray_directions(K)
    assert d[0, 0] == pytest.approx([-K.cx / K.fx, -K.cy / K.fy, 1.0])


def test_texture_lookup_orientation_and_misses():
    """A 2x2 texture on a unit quad seen head-on: each image quadrant shows its texel (glTF: v = 0
    is the top row); rays that miss give rgb 0, depth 0, id 0."""
    tex = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 0]]], np.uint8)
    # quad in the plane y = 2 facing -y; u grows with +x, v grows with -z (image down)
    c = np.array([[-0.5, 2, 0.5], [0.5, 2, 0.5], [0.5, 2, -0.5], [-0.5, 2, -0.5]], float)
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    scene = quad_scene([(c, uv, 0)], [Material("checker", np.ones(3), tex)])
    K = CameraIntrinsics(200, 200, 200.0, 200.0, 100.0, 100.0)  # texel centres fall on pixel centres
    T = make_pose(np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]), [0.0, 0.0, 0.0])  # optical z = +y, image down = -z
    r = Renderer(scene, Lighting(ambient=1.0, directional=0.0)).render(K, T)
    # the quad spans pixels 50..150; sample the middle of each quadrant (texel centres)
    assert r.rgb[75, 75].tolist() == [255, 0, 0]
    assert r.rgb[75, 125].tolist() == [0, 255, 0]
    assert r.rgb[125, 75].tolist() == [0, 0, 255]
    assert r.rgb[125, 125].tolist() == [255, 255, 0]
    assert r.instance_ids[100, 100] == 1 and r.depth[100, 100] == pytest.approx(2.0)
    assert r.instance_ids[10, 10] == 0 and r.depth[10, 10] == 0.0 and r.rgb[10, 10].tolist() == [0, 0, 0]


@pytest.fixture(scope="module")
def drake_renderer(shared_data) -> Renderer:
    return Renderer(load_drake_living_room(shared_data / "drake_living_room"))


def test_instance_ids_match_labels(drake_renderer):
    scene = drake_renderer.scene
    K = CameraIntrinsics.from_fov(320, 240, 70.0)
    T = look_at([0.0, 1.5, 1.5], [0.0, -2.5, 0.6])
    f = drake_renderer.render_frame(K, T, stamp_ns=123, index=4).validate()
    assert f.stamp_ns == 123 and f.index == 4 and f.instance_ids.shape == (240, 320)
    assert {"sofa", "table", "floor", "wall", "tea set"} <= set(f.labels_present())
    assert set(np.unique(f.instance_ids).tolist()) <= set(f.id_to_label)
    # the pixel where the sofa's centre projects shows the sofa; the table's top shows the table
    for name in ("sofa", "wooden_table"):
        o = next(o for o in scene.objects if o.name == name)
        target = o.center.copy()
        target[2] = o.aabb_max[2] - 0.05 if name == "wooden_table" else o.center[2]
        uv, _ = project_points(target[None], K, T)
        u, v = uv[0]
        assert f.id_to_label[int(f.instance_ids[int(round(v)), int(round(u))])] == o.label
    # depth agrees with the geometry: the floor pixels back-project to z = 0
    pts, vu = backproject_depth(f.depth, K, T)
    ids = f.instance_ids[vu[:, 0], vu[:, 1]]
    floor_id = next(o.instance_id for o in scene.objects if o.label == "floor")
    np.testing.assert_allclose(pts[ids == floor_id, 2], 0.0, atol=2e-3)


def test_textures_give_trackable_detail():
    scene = generate_apartment(0)
    room = scene.rooms[0]
    c = 0.5 * (room.xy_min + room.xy_max)
    eye = np.array([*(0.7 * room.xy_min + 0.3 * c), 1.4])
    T = look_at(eye, [c[0], c[1], 0.8])
    r = Renderer(scene).render(CameraIntrinsics.from_fov(640, 480, 70.0), T)
    gray = cv2.cvtColor(r.rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)
    assert float(np.mean(gx**2 + gy**2)) > 500.0
    assert len(cv2.ORB_create(1000).detect(r.rgb, None)) > 200
    flat = Renderer(quad_scene([(np.array([[-5, 3, -5], [5, 3, -5], [5, 3, 5], [-5, 3, 5]], float), np.zeros((4, 2)), 0)],
                               [Material("flat", np.full(3, 0.6))]))
    r_flat = flat.render(CameraIntrinsics.from_fov(640, 480, 70.0), look_at([0, 0, 0], [0, 3, 0]))
    assert len(cv2.ORB_create(1000).detect(r_flat.rgb, None)) < 10  # the detector is not fooled by nothing


def test_lighting_change_changes_rgb_only(drake_renderer):
    K = CameraIntrinsics.from_fov(160, 120, 70.0)
    T = look_at([1.0, 1.0, 1.4], [-1.0, 2.6, 0.8])
    a = drake_renderer.render(K, T)
    b = drake_renderer.render(K, T, lighting=Lighting.changed(3))
    assert np.array_equal(a.depth, b.depth) and np.array_equal(a.instance_ids, b.instance_ids)
    assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() > 8.0
    assert Lighting.changed(3) == Lighting.changed(3) != Lighting.changed(4)
    again = drake_renderer.render(K, T)
    assert np.array_equal(a.rgb, again.rgb)  # the per-call override did not stick


def test_bad_inputs(floor_scene):
    r = Renderer(floor_scene)
    T = np.eye(4)
    T[0, 0] = 1.5
    with pytest.raises(InvalidPoseError, match="orthonormal"):
        r.render(SMALL, T)
    with pytest.raises(InvalidPoseError):
        r.render(SMALL, np.full((4, 4), np.nan))
    with pytest.raises(InvalidPoseError):
        r.render(SMALL, np.eye(3))
    with pytest.raises(InvalidIntrinsicsError):
        r.render(np.eye(3), np.eye(4))
    bad = quad_scene([(np.eye(4, 3), np.zeros((4, 2)), 1)], [Material("only", np.ones(3))])
    with pytest.raises(ConfigError, match="tri_material"):
        Renderer(bad)
    with pytest.raises(ConfigError, match=">= 0"):
        Lighting(ambient=-0.1)
    with pytest.raises(ConfigError, match="non-zero"):
        Lighting(direction=(0.0, 0.0, 0.0))
