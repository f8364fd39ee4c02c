import numpy as np
import pytest

from spatial_memory import CameraIntrinsics, Frame, backproject_depth, project_points
from spatial_memory.errors import InvalidFrameError, InvalidIntrinsicsError, InvalidPoseError
from spatial_memory.geometry import look_at


def _cam(w=64, h=48):
    return CameraIntrinsics.from_fov(w, h, 90.0)


def _frame(**kw):
    cam = kw.pop("cam", _cam())
    d = dict(
        stamp_ns=1,
        rgb=np.zeros((cam.height, cam.width, 3), np.uint8),
        depth=np.ones(cam.shape, np.float32),
        intrinsics=cam,
        T_world_camera=np.eye(4),
    )
    d.update(kw)
    return Frame(**d)


def test_intrinsics_K_and_scaling():
    cam = CameraIntrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)
    assert np.allclose(cam.K, [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])
    half = cam.scaled(320, 240)
    assert half.fx == pytest.approx(262.5) and half.cx == pytest.approx(159.5)
    assert CameraIntrinsics.from_dict(cam.to_dict()) == cam


@pytest.mark.parametrize("bad", [dict(fx=-1.0), dict(width=0), dict(cx=float("nan"))])
def test_intrinsics_rejects_bad_values(bad):
    args = dict(width=64, height=48, fx=50.0, fy=50.0, cx=32.0, cy=24.0)
    args.update(bad)
    with pytest.raises(InvalidIntrinsicsError):
        CameraIntrinsics(**args)


def test_frame_validate_ok_and_sanitises_negative_depth():
    f = _frame(depth=np.full((48, 64), -1.0, np.float32))
    f.validate()
    assert (f.depth == 0).all()
    with pytest.raises(InvalidFrameError, match="negative or infinite"):
        _frame(depth=np.full((48, 64), np.inf, np.float32)).validate(allow_invalid_depth_values=False)


def test_frame_size_mismatch_named():
    with pytest.raises(InvalidFrameError, match="rgb is 64x48 but depth is 32x24"):
        _frame(depth=np.ones((24, 32), np.float32)).validate()
    with pytest.raises(InvalidFrameError, match="camera intrinsics are"):
        _frame(rgb=np.zeros((10, 10, 3), np.uint8), depth=None).validate()
    with pytest.raises(InvalidFrameError, match="uint8"):
        _frame(rgb=np.zeros((48, 64, 3), np.float32)).validate()


def test_frame_rejects_non_orthonormal_pose():
    T = np.eye(4)
    T[0, 0] = 1.5
    with pytest.raises(InvalidPoseError, match="orthonormal"):
        _frame(T_world_camera=T).validate()
    T = np.eye(4)
    T[0, 3] = np.nan
    with pytest.raises(InvalidPoseError, match="NaN"):
        _frame(T_world_camera=T).validate()


def test_backproject_then_project_roundtrip():
    cam = _cam()
    T = look_at([1.0, 2.0, 1.5], [3.0, 2.5, 1.0])
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 4.0, cam.shape).astype(np.float32)
    depth[0, 0] = 0.0
    depth[1, 1] = np.nan
    pts, vu = backproject_depth(depth, cam, T)
    assert len(pts) == cam.width * cam.height - 2
    uv, z = project_points(pts, cam, T)
    assert np.allclose(uv[:, 0], vu[:, 1], atol=1e-6) and np.allclose(uv[:, 1], vu[:, 0], atol=1e-6)
    assert np.allclose(z, depth[vu[:, 0], vu[:, 1]], atol=1e-5)


def test_labels_present():
    ids = np.zeros((48, 64), np.int32)
    ids[:10, :10] = 3
    f = _frame(instance_ids=ids, id_to_label={3: "mug", 4: "sofa"})
    assert f.labels_present() == ["mug"]


def test_resized_frame_keeps_geometry_and_labels():
    """Halving a frame: depth values are copied (never blended), ids stay ids, and a 3D point
    back-projected from the small frame lands on the same surface as in the full one."""
    K = CameraIntrinsics.from_fov(64, 48, 70.0)
    yy, xx = np.mgrid[0:48, 0:64]
    depth = np.where(xx < 32, 1.0, 3.0).astype(np.float32)  # a depth edge
    ids = np.where(xx < 32, 1, 2).astype(np.int32)
    rgb = np.stack([xx * 4, yy * 5, np.full_like(xx, 9)], -1).astype(np.uint8)
    f = Frame(0, rgb, depth, K, np.eye(4), ids, {1: "sofa", 2: "wall"})
    s = f.resized(32, 24)
    assert s.rgb.shape == (24, 32, 3) and s.depth.shape == (24, 32) and s.instance_ids.dtype == np.int32
    assert set(np.unique(s.depth)) <= {1.0, 3.0} and set(np.unique(s.instance_ids)) == {1, 2}
    assert s.id_to_label == f.id_to_label and s.intrinsics == K.scaled(32, 24)
    assert ((s.depth == 1.0) == (s.instance_ids == 1)).all()
    # the small frame's points lie on the full frame's surfaces (z = depth of the same side)
    pts_small, _ = backproject_depth(s.depth, s.intrinsics)
    uv, z = project_points(pts_small, K, np.eye(4))
    u = np.clip(np.round(uv[:, 0]).astype(int), 0, 63)
    v = np.clip(np.round(uv[:, 1]).astype(int), 0, 47)
    inside = np.abs(uv[:, 0] - 31.5) > 1.5  # away from the edge column
    assert np.allclose(z[inside], depth[v, u][inside])
    assert f.resized(64, 48) is f
    with pytest.raises(InvalidFrameError):
        f.resized(0, 10)

