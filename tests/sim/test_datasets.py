"""sim.datasets on the real ICL-NUIM / Open3D data, and on TUM / 7-Scenes folders built from it."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from sim.datasets import (
    PRIMESENSE_DEFAULT,
    SEVEN_SCENES_DEFAULT,
    TUM_INTRINSICS,
    Y_UP_TO_Z_UP,
    RedwoodSource,
    SevenScenesSource,
    TumRgbdSource,
    associate_nearest,
    detect_format,
    open_dataset,
    read_redwood_log,
)
from sim.image_codec import read_depth_png, write_depth_png, write_image_file
from sim.source import FrameSource
from spatial_memory.errors import DatasetFormatError
from spatial_memory.geometry import invert_pose, pose_error, tq_from_pose
from spatial_memory.types import Frame, backproject_depth, project_points

ICL = "icl_nuim_livingroom_micro"
O3D = "open3d_rgbd_samples"


@pytest.fixture(scope="module")
def icl(shared_data) -> RedwoodSource:
    return RedwoodSource(shared_data / ICL)


def test_icl_layout_intrinsics_and_frames(icl, shared_data):
    assert isinstance(icl, FrameSource)
    assert len(icl) == 211
    assert icl.intrinsics == PRIMESENSE_DEFAULT
    assert icl.trajectory_path == shared_data / ICL / "test_scene/trajectory.log"
    f = icl[7]
    assert f.index == 7 and f.stamp_ns == round(7e9 / 30)
    assert f.rgb.shape == (480, 640, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (480, 640) and f.depth.dtype == np.float32
    valid = f.depth[f.depth > 0]
    assert 0.3 < valid.min() and valid.max() < 5.0  # millimetres were divided by 1000
    assert f.T_world_camera.shape == (4, 4)
    np.testing.assert_allclose(icl[0].T_world_camera, np.eye(4), atol=1e-7)  # estimated trajectory starts at I


def test_open3d_samples_intrinsics_from_json_and_gt_poses(shared_data):
    src = open_dataset(shared_data / O3D)
    assert isinstance(src, RedwoodSource) and len(src) == 5
    k = src.intrinsics
    assert (k.width, k.height, k.fx, k.fy, k.cx, k.cy) == (640, 480, 525.0, 525.0, 319.5, 239.5)
    frames = list(src)
    assert src.stats.yielded == 5 and src.stats.skipped == 0
    assert frames[0].T_world_camera[0, 3] == pytest.approx(-0.31057997014702826)
    assert frames[0].T_world_camera[2, 2] == pytest.approx(0.27388870414358013)


def _overlap_nn_median(fa, fb, T_a, T_b) -> tuple[float, float]:
    """Back-project frames a and b with poses T_a, T_b; for points of b that project inside a
    with consistent depth, the median distance to a's cloud and the overlapping fraction."""
    K = fa.intrinsics
    pa, _ = backproject_depth(fa.depth, K, T_a, stride=2)
    pb, _ = backproject_depth(fb.depth, K, T_b, stride=4)
    uv, z = project_points(pb, K, T_a)
    u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    inside = (z > 0) & (u >= 0) & (u < K.width) & (v >= 0) & (v < K.height)
    inside[inside] &= np.abs(fa.depth[v[inside], u[inside]] - z[inside]) < 0.1
    if inside.sum() < 100:
        return float("inf"), float(inside.mean())
    d, _ = cKDTree(pa).query(pb[inside])
    return float(np.median(d)), float(inside.mean())


@pytest.mark.parametrize("i", [0, 100, 200])
def test_icl_poses_are_camera_to_world_on_real_data(icl, i):
    """Frames i and i+10 seen through their poses overlap to millimetres; the inverse
    convention (world-to-camera) or ignoring the motion does not."""
    fa, fb = icl[i], icl[i + 10]
    med, frac = _overlap_nn_median(fa, fb, fa.T_world_camera, fb.T_world_camera)
    print(f"ICL frames {i},{i + 10}: median NN {med * 1000:.2f} mm over {frac:.0%} overlap")
    assert med < 0.03 and frac > 0.5
    med_inv, _ = _overlap_nn_median(fa, fb, invert_pose(fa.T_world_camera), invert_pose(fb.T_world_camera))
    med_still, _ = _overlap_nn_median(fa, fb, np.eye(4), np.eye(4))
    assert med_inv > 3 * med and med_still > 3 * med


def test_icl_estimated_trajectory_agrees_with_ground_truth(icl, shared_data):
    """Same images: the 211-frame estimate equals the 5-frame ground truth after aligning frame 0."""
    gt = RedwoodSource(shared_data / O3D)
    G = [e.T_world_camera for e in gt.entries]
    for k in range(1, 5):
        dt, dr = pose_error(icl.entries[k].T_world_camera, invert_pose(G[0]) @ G[k])
        moved, _ = pose_error(np.eye(4), invert_pose(G[0]) @ G[k])
        assert dt < 0.005 and dr < 0.2 and moved > 0.02


def test_subset_frames_and_aligned(icl):
    part = icl.subset(0, 100, 10)
    assert len(part) == 10 and part.indices == list(range(0, 100, 10))
    queries = icl.frames([150, 3])
    got = [f.index for f in queries]
    assert got == [150, 3] and queries.stats.yielded == 2 and icl.stats.yielded == 0
    with pytest.raises(IndexError, match="999"):
        icl.frames([999])
    with pytest.raises(ValueError):
        icl.subset(step=0)


def test_aligned_makes_the_gt_world_z_up(shared_data):
    src = RedwoodSource(shared_data / O3D)
    up = src.aligned(Y_UP_TO_Z_UP)
    T = up[0].T_world_camera
    np.testing.assert_allclose(T, Y_UP_TO_Z_UP @ src[0].T_world_camera)
    cam_down_in_world = T[:3, 1]  # optical y axis points down in the image
    assert cam_down_in_world[2] < -0.99


def test_log_parser_and_missing_things(tmp_path, shared_data):
    poses = read_redwood_log(shared_data / O3D / "trajectory.log")
    assert sorted(poses) == [0, 1, 2, 3, 4]
    (tmp_path / "bad.log").write_text("0 0 1\n1 0 0 0\n")
    with pytest.raises(DatasetFormatError, match="bad.log"):
        read_redwood_log(tmp_path / "bad.log")
    (tmp_path / "image").mkdir()
    with pytest.raises(DatasetFormatError, match=r"lacks depth/"):
        RedwoodSource(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetFormatError, match="empty.*no known dataset layout"):
        open_dataset(empty)
    with pytest.raises(DatasetFormatError, match="no such"):
        open_dataset(tmp_path / "absent")


# ------------------------------------------------------------------------------ streams skip bad frames

def _redwood_copy(shared_data: Path, dst: Path, n: int) -> Path:
    (dst / "image").mkdir(parents=True)
    (dst / "depth").mkdir()
    lines = (shared_data / ICL / "test_scene/trajectory.log").read_text().splitlines()
    (dst / "trajectory.log").write_text("\n".join(lines[: 5 * n]) + "\n")
    for i in range(n):
        shutil.copy(shared_data / ICL / f"image/{i:05d}.jpg", dst / "image")
        shutil.copy(shared_data / ICL / f"depth/{i:05d}.png", dst / "depth")
    return dst


def test_bad_frames_are_skipped_counted_and_named(shared_data, tmp_path):
    root = _redwood_copy(shared_data, tmp_path / "seq", 8)
    (root / "image/00001.jpg").write_bytes(b"\x00garbage" * 100)  # corrupt colour
    data = (root / "image/00002.jpg").read_bytes()
    (root / "image/00002.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    (root / "depth/00003.png").unlink()  # missing depth
    write_depth_png(root / "depth/00004.png", np.ones((240, 320), np.float32))  # size mismatch
    log = (root / "trajectory.log").read_text().splitlines()
    log[5 * 5 + 1] = "2.0 0.0 0.0 0.0"  # frame 5: non-orthonormal rotation
    (root / "trajectory.log").write_text("\n".join(log) + "\n")

    src = open_dataset(root)
    frames = list(src)
    assert [f.index for f in frames] == [0, 6, 7]
    assert src.stats.yielded == 3 and src.stats.skipped == 5
    reasons = "\n".join(src.stats.skip_reasons)
    for needle in ("00001.jpg", "truncated JPEG", "00003.png", "not found", "320x240", "orthonormal"):
        assert needle in reasons, needle


# ------------------------------------------------------------------------------ TUM RGB-D

def _tum_folder(shared_data: Path, icl: RedwoodSource, root: Path, n: int = 4) -> tuple[Path, list[float]]:
    """A TUM sequence from ICL frames: depth 7 ms after rgb, ground truth at 100 Hz, plus one
    rgb image with no depth in reach and the real TUM fixture frame."""
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    t0 = 1305031102.175304
    rgb_lines, depth_lines, gt_lines = ["# color images"], ["# depth maps"], ["# timestamp tx ty tz qx qy qz qw"]
    stamps = []
    for i in range(n):
        f = icl[i]
        t = t0 + i * 0.1
        stamps.append(t)
        write_image_file(root / f"rgb/{t:.6f}.png", f.rgb)
        write_depth_png(root / f"depth/{t + 0.007:.6f}.png", f.depth, scale=5000.0)
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{t + 0.007:.6f} depth/{t + 0.007:.6f}.png")
        for dt in (-0.01, 0.0, 0.01):  # the nearest ground-truth sample is the exact one
            T = f.T_world_camera.copy()
            T[0, 3] += dt * 10  # neighbours are 10 cm off
            tr, q = tq_from_pose(T)
            gt_lines.append(f"{t + dt:.6f} " + " ".join(f"{v:.9f}" for v in (*tr, *q)))
    t_lonely = t0 + n * 0.1
    rgb_lines.append(f"{t_lonely:.6f} rgb/lonely.png")  # no depth within 20 ms
    t_real = t0 + (n + 1) * 0.1
    shutil.copy(shared_data / O3D / "other_formats/TUM_color.png", root / "rgb/real.png")
    shutil.copy(shared_data / O3D / "other_formats/TUM_depth.png", root / "depth/real.png")
    rgb_lines.append(f"{t_real:.6f} rgb/real.png")
    depth_lines.append(f"{t_real - 0.015:.6f} depth/real.png")
    gt_lines.append(f"{t_real + 0.004:.6f} 1 2 3 0 0 0 1")
    (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    (root / "groundtruth.txt").write_text("\n".join(gt_lines) + "\n")
    return root, stamps


def test_tum_association_depth_scale_and_poses(shared_data, icl, tmp_path):
    root, stamps = _tum_folder(shared_data, icl, tmp_path / "rgbd_dataset_freiburg1_xyz")
    assert detect_format(root) == "tum"
    src = open_dataset(root)
    assert isinstance(src, TumRgbdSource)
    assert src.intrinsics == TUM_INTRINSICS["freiburg1"]  # chosen from the sequence name
    assert len(src) == 5 and src.unassociated == 1
    frames = list(src)
    assert src.stats.skipped == 0 and len(frames) == 5
    for i, f in enumerate(frames[:4]):
        ref = icl[i]
        assert f.stamp_ns == int(Decimal(f"{stamps[i]:.6f}") * 10**9)  # exact ns
        ok = ref.depth > 0
        assert np.abs(f.depth[ok] - ref.depth[ok]).max() < 1e-4  # 5000 units/m, exact for mm input
        np.testing.assert_allclose(f.T_world_camera, ref.T_world_camera, atol=1e-6)
    real = frames[4]
    np.testing.assert_allclose(real.T_world_camera[:3, 3], [1, 2, 3])
    valid = real.depth[real.depth > 0]
    assert 0.3 < np.median(valid) < 10.0  # TUM's 5000 units per metre


def test_tum_max_dt_and_overrides(shared_data, icl, tmp_path):
    root, _ = _tum_folder(shared_data, icl, tmp_path / "seq", n=2)
    with pytest.raises(DatasetFormatError, match="no rgb image has a depth image.*0.005"):
        TumRgbdSource(root, max_dt=0.005)  # depth is 7 ms after rgb
    src = TumRgbdSource(root, max_dt=0.02, intrinsics=PRIMESENSE_DEFAULT)
    assert src.intrinsics == PRIMESENSE_DEFAULT and len(src) == 3
    (root / "groundtruth.txt").unlink()
    with pytest.raises(DatasetFormatError, match="groundtruth.txt"):
        TumRgbdSource(root)
    no_pose = TumRgbdSource(root, require_pose=False)
    assert len(no_pose) == 3 and all(f.T_world_camera is None for f in no_pose)


def test_associate_nearest():
    ref = np.array([0.0, 1.0, 2.0, 3.0])
    other = np.array([0.015, 0.99, 2.5])
    assert associate_nearest(ref, other, 0.02).tolist() == [0, 1, -1, -1]


# ------------------------------------------------------------------------------ 7-Scenes

def _seven_scenes(icl: RedwoodSource, seq: Path, n: int = 3) -> Path:
    seq.mkdir(parents=True)
    for i in range(n):
        f = icl[i]
        write_image_file(seq / f"frame-{i:06d}.color.png", f.rgb)
        d = f.depth.copy()
        write_depth_png(seq / f"frame-{i:06d}.depth.png", d)
        np.savetxt(seq / f"frame-{i:06d}.pose.txt", f.T_world_camera)
    return seq


def test_seven_scenes_layout(icl, tmp_path):
    seq = _seven_scenes(icl, tmp_path / "chess/seq-01")
    # 65535 is 7-Scenes' "no reading" marker
    raw = (read_depth_png(seq / "frame-000001.depth.png") * 1000).round().astype(np.uint16)
    raw[:10, :10] = 65535
    cv2.imwrite(str(seq / "frame-000001.depth.png"), raw)
    assert detect_format(seq) == "7scenes"
    src = open_dataset(seq)
    assert isinstance(src, SevenScenesSource) and len(src) == 3
    assert src.intrinsics == SEVEN_SCENES_DEFAULT
    frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2]
    assert (frames[1].depth[:10, :10] == 0).all() and frames[1].depth[20:, 20:].max() > 1.0
    np.testing.assert_allclose(frames[2].T_world_camera, icl[2].T_world_camera, atol=1e-12)
    (tmp_path / "chess/camera-intrinsics.txt").write_text("500 0 320\n0 501 240\n0 0 1\n")
    k = SevenScenesSource(seq).intrinsics
    assert (k.fx, k.fy, k.cx, k.cy, k.width, k.height) == (500, 501, 320, 240, 640, 480)


def test_seven_scenes_reads_what_sim_export_writes(icl, tmp_path):
    """Small frames with the project's intrinsics.json: the size comes from the file, not 640x480."""
    from sim.export import write_frames_folder

    small = []
    for f in (icl[0], icl[5]):
        rgb = cv2.resize(f.rgb, (160, 120), interpolation=cv2.INTER_AREA)
        depth = cv2.resize(f.depth, (160, 120), interpolation=cv2.INTER_NEAREST)
        ids = np.zeros((120, 160), np.int32)
        ids[40:80, 50:100] = 7
        small.append(Frame(f.stamp_ns, rgb, depth, f.intrinsics.scaled(160, 120), f.T_world_camera,
                           instance_ids=ids, id_to_label={7: "armchair"}, index=f.index))
    write_frames_folder(small, tmp_path / "frames")
    src = open_dataset(tmp_path / "frames")
    assert isinstance(src, SevenScenesSource) and src.intrinsics == small[0].intrinsics
    out = list(src)
    assert len(out) == 2 and src.stats.skipped == 0
    np.testing.assert_array_equal(out[1].rgb, small[1].rgb)
    np.testing.assert_allclose(out[1].T_world_camera, small[1].T_world_camera, atol=1e-8)
    np.testing.assert_array_equal(out[0].instance_ids, small[0].instance_ids)
    assert out[0].labels_present() == ["armchair"]


def test_seven_scenes_missing_pose_is_skipped(icl, tmp_path):
    seq = _seven_scenes(icl, tmp_path / "seq-02")
    (seq / "frame-000000.pose.txt").unlink()
    src = SevenScenesSource(seq)
    assert [f.index for f in src] == [1, 2]
    assert src.stats.skipped == 1 and "frame-000000.pose.txt" in src.stats.skip_reasons[0]
    with pytest.raises(DatasetFormatError, match="no 7-Scenes frames"):
        SevenScenesSource(tmp_path)
