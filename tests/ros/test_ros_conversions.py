"""Round trips of the ROS message conversions (our cv_bridge / tf2 geometry replacement)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("embodied_memory.srv", reason="ROS 2 interfaces not built (scripts/build_ros_interfaces.sh)")

from geometry_msgs.msg import Pose  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from ros_nodes import conversions as cv  # noqa: E402
from spatial_memory.errors import (  # noqa: E402
    ImageDecodeError,
    InvalidFrameError,
    InvalidIntrinsicsError,
    InvalidPoseError,
    UnsupportedEncodingError,
)
from spatial_memory.geometry import look_at, make_pose  # noqa: E402
from spatial_memory.types import CameraIntrinsics, Frame  # noqa: E402

RNG = np.random.default_rng(0)


def random_pose() -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return make_pose(Rotation.random(random_state=RNG).as_matrix(), RNG.normal(size=3) * 3)


def test_stamp_round_trip_and_negative() -> None:
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789):
        assert cv.stamp_to_ns(cv.ns_to_stamp(ns)) == ns
    with pytest.raises(ValueError):
        cv.ns_to_stamp(-1)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_image_round_trip(encoding: str) -> None:
    rgb = RNG.integers(0, 256, size=(7, 11, 3), dtype=np.uint8)
    msg = cv.numpy_to_image_msg(rgb, encoding, 5, "cam")
    assert (msg.width, msg.height, msg.encoding, msg.header.frame_id) == (11, 7, encoding, "cam")
    assert cv.stamp_to_ns(msg.header.stamp) == 5
    np.testing.assert_array_equal(cv.rgb_msg_to_numpy(msg), rgb)


def test_bgr_payload_is_channel_swapped() -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # pure red
    msg = cv.numpy_to_image_msg(rgb, "bgr8")
    assert bytes(msg.data)[:3] == bytes([0, 0, 200])


def test_depth_round_trips() -> None:
    depth = RNG.uniform(0.3, 8.0, size=(6, 9)).astype(np.float32)
    depth[0, 0] = 0.0
    out = cv.depth_msg_to_numpy(cv.numpy_to_image_msg(depth, "32FC1"))
    np.testing.assert_array_equal(out, depth)
    out16 = cv.depth_msg_to_numpy(cv.numpy_to_image_msg(depth, "16UC1"))
    assert out16.dtype == np.float32
    np.testing.assert_allclose(out16, depth, atol=0.0006)  # millimetre quantisation
    assert out16[0, 0] == 0.0


def test_row_padding_is_honoured() -> None:
    rgb = RNG.integers(0, 256, size=(3, 5, 3), dtype=np.uint8)
    msg = Image(height=3, width=5, encoding="rgb8", step=16)
    padded = np.zeros((3, 16), np.uint8)
    padded[:, :15] = rgb.reshape(3, 15)
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(cv.image_msg_to_numpy(msg), rgb)


def test_bad_images_raise_typed_errors() -> None:
    good = cv.numpy_to_image_msg(np.zeros((4, 4, 3), np.uint8), "rgb8")
    bad_enc = Image(height=4, width=4, encoding="yuv422", step=8, data=bytes(32))
    with pytest.raises(UnsupportedEncodingError):
        cv.image_msg_to_numpy(bad_enc)
    with pytest.raises(ImageDecodeError, match="empty"):
        cv.image_msg_to_numpy(Image(height=4, width=4, encoding="rgb8", step=12))
    truncated = Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(good.data)[:-5])
    with pytest.raises(ImageDecodeError):
        cv.image_msg_to_numpy(truncated)
    with pytest.raises(ImageDecodeError, match="depth topic"):
        cv.depth_msg_to_numpy(good)
    with pytest.raises(ImageDecodeError, match="colour topic"):
        cv.rgb_msg_to_numpy(cv.numpy_to_image_msg(np.ones((4, 4), np.float32), "32FC1"))


def test_camera_info_round_trip_and_uncalibrated() -> None:
    intr = CameraIntrinsics(640, 480, 600.5, 601.25, 319.0, 241.5)
    msg = cv.intrinsics_to_camera_info(intr, 7, "cam")
    assert msg.p[0] == 600.5 and msg.p[3] == 0.0 and msg.distortion_model == "plumb_bob"
    assert cv.camera_info_to_intrinsics(msg) == intr
    with pytest.raises(InvalidIntrinsicsError, match="not calibrated"):
        cv.camera_info_to_intrinsics(CameraInfo(width=640, height=480))


def test_pose_and_transform_round_trips() -> None:
    for _ in range(20):
        T = random_pose()
        np.testing.assert_allclose(cv.pose_msg_to_matrix(cv.matrix_to_pose_msg(T)), T, atol=1e-12)
        np.testing.assert_allclose(cv.transform_msg_to_matrix(cv.matrix_to_transform_msg(T)), T, atol=1e-12)
        ps = cv.matrix_to_pose_stamped(T, 42, "map")
        assert ps.header.frame_id == "map" and cv.stamp_to_ns(ps.header.stamp) == 42
        np.testing.assert_allclose(cv.pose_stamped_to_matrix(ps), T, atol=1e-12)
        ts = cv.matrix_to_transform_stamped(T, 3, "map", "cam")
        assert (ts.header.frame_id, ts.child_frame_id) == ("map", "cam")


def test_odometry_and_unnormalised_quaternion() -> None:
    odom = Odometry()
    odom.pose.pose.position.x = 2.0
    odom.pose.pose.orientation.z = 2.0  # unnormalised 180 deg about z: normalised on the way in
    odom.pose.pose.orientation.w = 0.0
    T = cv.odometry_to_matrix(odom)
    np.testing.assert_allclose(T[:3, :3], np.diag([-1.0, -1.0, 1.0]), atol=1e-12)
    assert T[0, 3] == 2.0


def test_nan_and_zero_poses_are_rejected() -> None:
    p = Pose()
    p.position.x = float("nan")
    p.orientation.w = 1.0
    with pytest.raises(InvalidPoseError, match="NaN"):
        cv.pose_msg_to_matrix(p)
    zero = Pose()
    zero.orientation.w = 0.0
    with pytest.raises(InvalidPoseError, match="zero"):
        cv.pose_msg_to_matrix(zero)
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(InvalidPoseError):
        cv.matrix_to_pose_msg(bad)


def test_frame_from_messages() -> None:
    intr = CameraIntrinsics.from_fov(16, 12, 60.0)
    rgb = RNG.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    depth = RNG.uniform(0.5, 3.0, size=(12, 16)).astype(np.float32)
    T = look_at([1.0, 2.0, 1.0], [3.0, 2.0, 1.0])
    rmsg = cv.numpy_to_image_msg(rgb, "bgr8", 1_500_000_000, "cam")
    f = cv.frame_from_messages(rmsg, cv.numpy_to_image_msg(depth, "32FC1"), intr, T, index=3)
    assert f.stamp_ns == 1_500_000_000 and f.frame_id == "cam" and f.index == 3
    np.testing.assert_array_equal(f.rgb, rgb)
    np.testing.assert_array_equal(f.depth, depth)
    small_depth = cv.numpy_to_image_msg(depth[:6, :8].copy(), "32FC1")
    with pytest.raises(InvalidFrameError, match="rgb is 16x12 but depth is 8x6"):
        cv.frame_from_messages(rmsg, small_depth, intr, T)
    with pytest.raises(InvalidFrameError):  # camera_info size disagrees with the images
        cv.frame_from_messages(rmsg, None, CameraIntrinsics.from_fov(32, 24, 60.0), T)


def test_pointcloud_round_trip() -> None:
    xyz = RNG.normal(size=(50, 3)).astype(np.float32)
    rgb = RNG.integers(0, 256, size=(50, 3), dtype=np.uint8)
    msg = cv.points_to_pointcloud2(xyz, rgb, 9, "map")
    assert msg.width == 50 and msg.point_step == 16 and msg.row_step == 800 and msg.is_dense
    xyz2, rgb2 = cv.pointcloud2_to_points(msg)
    np.testing.assert_array_equal(xyz2, xyz)
    np.testing.assert_array_equal(rgb2, rgb)


def test_marker_array_of_hits() -> None:
    from types import SimpleNamespace

    hits = [SimpleNamespace(label="sofa", position=np.array([1.0, 2.0, 0.5]), extent=np.array([2.0, 1.0, 0.8]), score=0.9)]
    arr = cv.hits_to_marker_array(hits, 10, "map")
    assert len(arr.markers) == 3  # DELETEALL + box + text
    box, text = arr.markers[1], arr.markers[2]
    assert (box.pose.position.x, box.scale.x, box.header.frame_id) == (1.0, 2.0, "map")
    assert text.text.startswith("sofa") and text.pose.position.z > box.pose.position.z


def test_instance_image_and_labels_round_trip() -> None:
    ids = RNG.integers(0, 300, size=(6, 8)).astype(np.int32)
    msg = cv.instances_to_image_msg(ids, 4, "cam")
    assert msg.encoding == "16UC1" and msg.step == 16
    np.testing.assert_array_equal(cv.instance_msg_to_numpy(msg), ids)
    big = ids.copy()
    big[0, 0] = 70000
    msg32 = cv.instances_to_image_msg(big)
    assert msg32.encoding == "32SC1"
    np.testing.assert_array_equal(cv.instance_msg_to_numpy(msg32), big)
    with pytest.raises(UnsupportedEncodingError):
        cv.instance_msg_to_numpy(cv.numpy_to_image_msg(np.zeros((2, 2, 3), np.uint8), "rgb8"))
    with pytest.raises(InvalidFrameError):
        cv.instances_to_image_msg(np.full((2, 2), -1))
    labels = {3: "sofa", 12: "tea set"}
    assert cv.labels_from_json(cv.labels_to_json(labels)) == labels
    with pytest.raises(InvalidFrameError):
        cv.labels_from_json("[1, 2]")
    intr = CameraIntrinsics.from_fov(8, 6, 60.0)
    f = cv.frame_from_messages(cv.numpy_to_image_msg(np.zeros((6, 8, 3), np.uint8), "rgb8"), None, intr, None,
                               instances_msg=msg, id_to_label=labels)
    np.testing.assert_array_equal(f.instance_ids, ids)
    assert f.id_to_label == labels


def test_working_resolution_only_shrinks():
    from ros_nodes.memory_node import working_resolution

    f = Frame(0, np.zeros((48, 64, 3), np.uint8), np.ones((48, 64), np.float32), CameraIntrinsics.from_fov(64, 48, 70.0))
    assert working_resolution(f, 0) is f and working_resolution(f, 128) is f
    s = working_resolution(f, 32)
    assert (s.intrinsics.width, s.intrinsics.height) == (32, 24)
