"""sim.bags: rosbag2 round trips (MCAP and SQLite3, 32FC1 and 16UC1), synchronisation, errors."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from sim.bags import (
    CAMERA_INFO_T,
    IMAGE_T,
    POSE_T,
    TYPESTORE,
    BagFrameSource,
    BagTopics,
    camera_info_msg,
    image_msg,
    pose_stamped_msg,
    write_bag,
)
from sim.datasets import open_dataset
from sim.source import FrameSource
from spatial_memory.errors import DatasetFormatError, MissingTopicError, UnsupportedEncodingError
from spatial_memory.geometry import look_at
from spatial_memory.types import CameraIntrinsics, Frame

K = CameraIntrinsics(32, 24, 30.0, 31.0, 15.5, 11.5)
T0 = 1_700_000_000_123_456_789


def _frames(n: int = 4, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        depth = rng.uniform(0.2, 6.0, (24, 32)).astype(np.float32)
        depth[0, :3] = 0.0
        pose = look_at(rng.uniform(-2, 2, 3), rng.uniform(3, 4, 3))
        rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        frames.append(Frame(T0 + i * 33_333_333, rgb, depth, K, pose, index=i))
    return frames


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("encoding", ["32FC1", "16UC1"])
def test_round_trip(tmp_path, storage, encoding):
    frames = _frames()
    summary = write_bag(frames, tmp_path / "bag", storage=storage, depth_encoding=encoding)
    assert summary.frames == 4 and summary.skipped == 0
    assert summary.messages == {t: 4 for t in ("/camera/color/image_raw", "/camera/depth/image_raw",
                                               "/camera/color/camera_info", "/camera/pose", "/tf")}
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert any(p.suffix == suffix for p in (tmp_path / "bag").iterdir())
    for pose_from in ("pose", "tf"):
        src = BagFrameSource(tmp_path / "bag", pose_from=pose_from)
        assert isinstance(src, FrameSource) and len(src) == 4 and src.intrinsics == K
        out = list(src)
        assert src.stats.yielded == 4 and src.stats.skipped == 0
        for a, b in zip(frames, out):
            assert b.index == a.index and b.stamp_ns == a.stamp_ns and b.intrinsics == K
            assert b.frame_id == "camera_color_optical_frame"
            np.testing.assert_array_equal(b.rgb, a.rgb)
            if encoding == "32FC1":
                np.testing.assert_array_equal(b.depth, a.depth)
            else:
                assert np.abs(b.depth - a.depth).max() <= 0.0005 + 1e-6
                assert (b.depth[0, :3] == 0).all()
            assert np.abs(b.T_world_camera - a.T_world_camera).max() < 1e-9


def _write_raw(path, storage=StoragePlugin.MCAP, topics=BagTopics(), rgb=(), depth=(), poses=(), info=True):
    """A bag written message by message: ``rgb``/``depth`` are ``(stamp, msg)``, ``poses`` ``(stamp, T)``."""
    with Writer(path, version=9, storage_plugin=storage) as w:
        c_rgb = w.add_connection(topics.rgb, IMAGE_T, typestore=TYPESTORE)
        c_depth = w.add_connection(topics.depth, IMAGE_T, typestore=TYPESTORE) if depth is not None else None
        c_info = w.add_connection(topics.camera_info, CAMERA_INFO_T, typestore=TYPESTORE) if info else None
        c_pose = w.add_connection(topics.pose, POSE_T, typestore=TYPESTORE) if poses is not None else None
        msgs = [(s, c_rgb, IMAGE_T, m) for s, m in rgb]
        msgs += [(s, c_depth, IMAGE_T, m) for s, m in depth or ()]
        msgs += [(s, c_pose, POSE_T, T if hasattr(T, "pose") else pose_stamped_msg(T, s, "map")) for s, T in poses or ()]
        if info:
            msgs.append((T0 - 1, c_info, CAMERA_INFO_T, camera_info_msg(K, T0 - 1, topics.camera_frame)))
        for s, conn, typ, m in sorted(msgs, key=lambda x: x[0]):
            w.write(conn, s, TYPESTORE.serialize_cdr(m, typ))


def test_approximate_sync_picks_nearest_and_skips_unmatched(tmp_path):
    frames = _frames(5)
    ms = 1_000_000
    rgb = [(f.stamp_ns, image_msg(f.rgb, "rgb8", f.stamp_ns, "cam")) for f in frames]
    # depth 5 ms late, plus a decoy 15 ms early for frame 2; no depth at all near frame 3
    depth = [(f.stamp_ns + 5 * ms, image_msg(f.depth, "32FC1", f.stamp_ns + 5 * ms, "cam"))
             for k, f in enumerate(frames) if k != 3]
    decoy = np.full_like(frames[2].depth, 9.0)
    depth.append((frames[2].stamp_ns - 15 * ms, image_msg(decoy, "32FC1", frames[2].stamp_ns - 15 * ms, "cam")))
    poses = [(f.stamp_ns - 3 * ms, f.T_world_camera) for f in frames]
    _write_raw(tmp_path / "bag", rgb=rgb, depth=depth, poses=poses)
    src = BagFrameSource(tmp_path / "bag", slop_s=0.02)
    out = list(src)
    assert [f.index for f in out] == [0, 1, 2, 4]
    assert src.stats.skipped == 1 and "no /camera/depth/image_raw message" in src.stats.skip_reasons[0]
    for f in out:
        np.testing.assert_array_equal(f.depth, frames[f.index].depth)  # the 5 ms one, not the decoy
        assert np.abs(f.T_world_camera - frames[f.index].T_world_camera).max() < 1e-9
    part = src.subset(1, 5, 2)
    assert len(part) == 2 and [f.index for f in part] == [1] and part.stats.skipped == 1  # 3 has no depth
    tight = BagFrameSource(tmp_path / "bag", slop_s=0.004)  # depth 5 ms away: nothing matches
    assert list(tight) == [] and tight.stats.skipped == 5


def test_bad_messages_are_skipped_and_counted(tmp_path):
    frames = _frames(3)
    rgb = [(f.stamp_ns, image_msg(f.rgb, "rgb8", f.stamp_ns, "cam")) for f in frames]
    broken = rgb[1][1]
    broken.data = broken.data[:-10]  # payload shorter than step * height
    depth = [(f.stamp_ns, image_msg(f.depth, "16UC1", f.stamp_ns, "cam")) for f in frames]
    poses = [(f.stamp_ns, f.T_world_camera) for f in frames]
    zero_quat = pose_stamped_msg(frames[2].T_world_camera, frames[2].stamp_ns, "map")
    q = zero_quat.pose.orientation
    q.x = q.y = q.z = q.w = 0.0  # not a rotation
    poses[2] = (frames[2].stamp_ns, zero_quat)
    _write_raw(tmp_path / "bag", StoragePlugin.SQLITE3, rgb=rgb, depth=depth, poses=poses)
    src = BagFrameSource(tmp_path / "bag")
    assert src.stats.skipped == 1 and "/camera/pose message" in src.stats.skip_reasons[0]  # the pose
    out = list(src)
    assert [f.index for f in out] == [0]
    assert src.stats.skipped == 3
    assert "expected step*height" in src.stats.skip_reasons[1]  # truncated rgb payload of frame 1
    assert "no pose on /camera/pose" in src.stats.skip_reasons[2]  # frame 2 lost its only pose


def test_missing_topic_names_it_and_lists_present(tmp_path):
    f = _frames(1)[0]
    _write_raw(tmp_path / "bag", rgb=[(f.stamp_ns, image_msg(f.rgb, "rgb8", f.stamp_ns, "c"))], depth=None,
               poses=[(f.stamp_ns, f.T_world_camera)])
    with pytest.raises(MissingTopicError) as e:
        BagFrameSource(tmp_path / "bag")
    msg = str(e.value)
    assert "'/camera/depth/image_raw'" in msg and "/camera/color/image_raw" in msg and "/camera/pose" in msg
    with pytest.raises(MissingTopicError, match="'/tf'"):
        BagFrameSource(tmp_path / "bag", topics=BagTopics(depth="/camera/color/image_raw"), pose_from="tf")


def test_unknown_encoding_raises(tmp_path):
    f = _frames(1)[0]
    msg = image_msg(f.rgb, "rgb8", f.stamp_ns, "c")
    msg.encoding = "yuv422"
    _write_raw(tmp_path / "bag", rgb=[(f.stamp_ns, msg)],
               depth=[(f.stamp_ns, image_msg(f.depth, "32FC1", f.stamp_ns, "c"))],
               poses=[(f.stamp_ns, f.T_world_camera)])
    with pytest.raises(UnsupportedEncodingError, match="yuv422"):
        list(BagFrameSource(tmp_path / "bag"))


def test_write_bag_guards_and_open_dataset(tmp_path):
    frames = _frames(2)
    bad = Frame(T0, np.zeros((5, 5, 3), np.uint8), None, K)  # 5x5 rgb vs 32x24 camera
    summary = write_bag([frames[0], bad, frames[1]], tmp_path / "bag")
    assert summary.frames == 2 and summary.skipped == 1 and "5x5" in summary.skip_reasons[0]
    with pytest.raises(FileExistsError):
        write_bag(frames, tmp_path / "bag")
    with pytest.raises(ValueError, match="depth_encoding"):
        write_bag(frames, tmp_path / "other", depth_encoding="16UC3")
    src = open_dataset(tmp_path / "bag")
    assert isinstance(src, BagFrameSource) and [f.index for f in src] == [0, 1]
    # a bag whose storage file is cut short is reported as such, not as a crash deep in rosbags
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "metadata.yaml").write_text((tmp_path / "bag/metadata.yaml").read_text().replace("bag.mcap", "cut.mcap"))
    (cut / "cut.mcap").write_bytes((tmp_path / "bag/bag.mcap").read_bytes()[:2000])
    with pytest.raises(DatasetFormatError, match="cut.*not a readable rosbag2"):
        BagFrameSource(cut)
