"""emem.viz: Rerun recordings, contact sheets, top-down maps and the progress wrapper."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from emem.viz import (
    CAPTION_HEIGHT,
    RerunRecorder,
    colorize_depth,
    contact_sheet,
    progress,
    rasterize_topdown,
    topdown_map_png,
)
from spatial_memory.geometry import look_at
from spatial_memory.types import CameraIntrinsics, Frame

K = CameraIntrinsics(64, 48, 60.0, 60.0, 31.5, 23.5)


def _frames(n: int) -> list[Frame]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        rgb = np.zeros((48, 64, 3), np.uint8)
        rgb[:] = (40 * i % 256, 100, 200)
        depth = rng.uniform(1.0, 3.0, (48, 64)).astype(np.float32)
        depth[:8] = 0.0  # invalid band at the top
        out.append(Frame(i * 100_000_000, rgb, depth, K, look_at([i * 0.1, 0, 1], [i * 0.1, 3, 1]), index=10 + i))
    return out


@dataclass
class Hit:
    position: np.ndarray
    extent: np.ndarray
    label: str


def test_rerun_recording_file(tmp_path):
    frames = _frames(3)
    empty = tmp_path / "empty.rrd"
    RerunRecorder(empty).close()
    path = tmp_path / "run" / "rec.rrd"
    with RerunRecorder(path) as rec:
        for f in frames:
            rec.log_frame(f)
        rec.log_trajectory([f.T_world_camera for f in frames], color=(0, 255, 0))
        rec.log_points(np.random.default_rng(0).normal(size=(500, 3)), np.full((500, 3), 0.5))
        rec.log_hits([Hit(np.zeros(3), np.array([1.0, 0.5, 0.8]), "sofa"), {"position": [1, 1, 0], "label": "cup"}])
        rec.log_scalar("metrics/recall", 0.5, step=1)
    rec.close()  # idempotent
    data = path.read_bytes()
    assert data[:4] == b"RRF2"  # Rerun's file magic
    # three 64x48 rgb + float depth images must be in there (far more than an empty recording)
    assert len(data) > empty.stat().st_size + 3 * 64 * 48 * (3 + 4)


def test_contact_sheet_size_and_content(tmp_path):
    frames = _frames(5)
    out = contact_sheet(frames, tmp_path / "sheet.png", cols=3, tile_width=160)
    img = cv2.imread(str(out))[:, :, ::-1]
    th = 120  # 160 * 48 / 64
    assert img.shape == (2 * (2 * th + CAPTION_HEIGHT), 3 * 160, 3)
    tile_h = 2 * th + CAPTION_HEIGHT
    # tile k=4 sits at row 1, column 1 and shows frame 4's flat colour
    np.testing.assert_array_equal(img[tile_h + 60, 160 + 80], frames[4].rgb[0, 0])
    # invalid depth (top band) is black; valid depth is colourised
    assert (img[th + 2, 80] == 0).all() and img[th + 100, 80].sum() > 0
    # the sixth cell is left blank
    assert (img[tile_h + 10 : tile_h + 100, 330:470] == 255).all()
    no_depth = contact_sheet(frames[:2], tmp_path / "s2.png", cols=6, tile_width=64, with_depth=False)
    assert cv2.imread(str(no_depth)).shape == (48 + CAPTION_HEIGHT, 2 * 64, 3)
    with pytest.raises(ValueError):
        contact_sheet([], tmp_path / "none.png")


def test_colorize_depth_range():
    d = np.array([[0.0, 1.0, 2.0, np.nan]], np.float32)
    rgb = colorize_depth(d, 1.0, 2.0)
    assert rgb.shape == (1, 4, 3) and (rgb[0, 0] == 0).all() and (rgb[0, 3] == 0).all()
    assert not np.array_equal(rgb[0, 1], rgb[0, 2])


def test_rasterize_topdown_keeps_highest_point():
    pts = np.array([[0.0, 0.0, 0.0], [0.01, 0.01, 2.0], [1.0, 0.5, 1.0]])
    cols = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    img, extent = rasterize_topdown(pts, cols, resolution=0.1)
    assert img.shape == (6, 11, 4)
    assert extent == pytest.approx((0.0, 1.1, 0.0, 0.6))
    np.testing.assert_allclose(img[5, 0], [0, 1, 0, 1])  # green (z=2) above red (z=0)
    np.testing.assert_allclose(img[0, 10], [0, 0, 1, 1])
    assert img[2, 5, 3] == 0  # empty cell is transparent


def test_topdown_map_png(tmp_path):
    rng = np.random.default_rng(1)
    pts = rng.uniform([-2, -2, 0], [2, 2, 2], (2000, 3))
    traj = np.stack([look_at([x, 0, 1], [x, 1, 1]) for x in np.linspace(-1, 1, 10)])
    out = topdown_map_png(tmp_path / "map.png", pts, None, {"gt": traj, "est": traj + 0.0},
                          [((0.5, 0.5), "cup", "red")], resolution=0.05, title="t")
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 300
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # it drew something


def test_progress_passthrough_and_forced(capsys):
    assert list(progress(range(5), "quiet", force=False)) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err == ""
    assert list(progress(iter(range(3)), "loud", total=3, force=True)) == [0, 1, 2]
    assert "loud" in capsys.readouterr().err
