"""Approximate-time synchroniser and TF buffer (our message_filters / tf2_ros replacements)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("embodied_memory.srv", reason="ROS 2 interfaces not built (scripts/build_ros_interfaces.sh)")

from ros_nodes.sync import ApproximateTimeSync, TfBuffer, TransformLookupError  # noqa: E402
from spatial_memory.errors import InvalidPoseError  # noqa: E402
from spatial_memory.geometry import interpolate_pose, invert_pose, make_pose  # noqa: E402

MS = 1_000_000
RNG = np.random.default_rng(1)


def random_pose() -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return make_pose(Rotation.random(random_state=RNG).as_matrix(), RNG.normal(size=3))


# --------------------------------------------------------------------------- synchroniser


def collect(n_inputs: int, slop_s: float, queue_size: int = 10):
    out: list[tuple] = []
    return ApproximateTimeSync(n_inputs, lambda *m: out.append(m), slop_s, queue_size), out


def test_jittered_streams_pair_with_their_partner() -> None:
    sync, out = collect(3, slop_s=0.010)
    stamps = np.arange(40) * 33 * MS
    for i, t in enumerate(stamps):
        # depth lags a few ms, the pose arrives first; every message names its frame index
        sync.add(2, ("pose", i), int(t + RNG.integers(-3, 4) * MS))
        sync.add(0, ("rgb", i), int(t))
        sync.add(1, ("depth", i), int(t + RNG.integers(0, 6) * MS))
    assert len(out) == 40
    assert all(rgb[1] == depth[1] == pose[1] for rgb, depth, pose in out)
    assert sync.stats.emitted == 40 and sync.pending() == [0, 0, 0]


def test_spread_beyond_slop_is_not_emitted() -> None:
    sync, out = collect(2, slop_s=0.005)
    sync.add(0, "a", 100 * MS)
    sync.add(1, "b", 106 * MS)
    assert out == []
    sync.add(0, "c", 107 * MS)  # now within 1 ms of b
    assert out == [("c", "b")]
    assert sync.stats.discarded == 1  # "a" was older than the emitted group


def test_missing_partner_messages_are_discarded_not_stuck() -> None:
    sync, out = collect(2, slop_s=0.002)
    for i in range(10):
        sync.add(0, f"rgb{i}", i * 100 * MS)
        if i % 2 == 0:  # depth only for even frames
            sync.add(1, f"d{i}", i * 100 * MS + MS)
    assert [g[0] for g in out] == [f"rgb{i}" for i in range(0, 10, 2)]


def test_queue_is_bounded() -> None:
    sync, out = collect(2, slop_s=0.001, queue_size=3)
    for i in range(10):
        sync.add(0, i, i * MS * 100)
    assert sync.pending() == [3, 0] and sync.stats.discarded == 7
    sync.add(1, "late", 900 * MS)
    assert out == [(9, "late")]


def test_out_of_order_arrival() -> None:
    sync, out = collect(2, slop_s=0.003)
    sync.add(1, "d2", 200 * MS)
    sync.add(1, "d1", 100 * MS)
    sync.add(0, "r1", 101 * MS)
    sync.add(0, "r2", 199 * MS)
    assert out == [("r1", "d1"), ("r2", "d2")]


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        ApproximateTimeSync(1, print)
    with pytest.raises(ValueError):
        ApproximateTimeSync(2, print, slop_s=-1.0)
    with pytest.raises(IndexError):
        ApproximateTimeSync(2, print).add(2, "x", 0)


# --------------------------------------------------------------------------- TF buffer


def test_chained_lookup_matches_composition() -> None:
    tf = TfBuffer()
    T_map_odom, T_odom_base, T_base_cam, T_base_lidar = (random_pose() for _ in range(4))
    tf.set_transform("map", "odom", T_map_odom, 0, static=True)
    tf.set_transform("odom", "base_link", T_odom_base, 10 * MS)
    tf.set_transform("base_link", "camera", T_base_cam, 0, static=True)
    tf.set_transform("base_link", "lidar", T_base_lidar, 0, static=True)
    T_map_cam = T_map_odom @ T_odom_base @ T_base_cam
    np.testing.assert_allclose(tf.lookup("map", "camera", 10 * MS), T_map_cam, atol=1e-12)
    np.testing.assert_allclose(tf.lookup("camera", "map", 10 * MS), invert_pose(T_map_cam), atol=1e-12)
    # siblings: through their common parent, not the root
    np.testing.assert_allclose(tf.lookup("lidar", "camera", 0), invert_pose(T_base_lidar) @ T_base_cam, atol=1e-12)
    np.testing.assert_allclose(tf.lookup("/map", "map"), np.eye(4))


def test_interpolation_between_samples() -> None:
    tf = TfBuffer()
    A, B = random_pose(), random_pose()
    tf.set_transform("map", "cam", B, 200 * MS)
    tf.set_transform("map", "cam", A, 100 * MS)  # inserted out of order
    np.testing.assert_allclose(tf.lookup("map", "cam", 125 * MS), interpolate_pose(A, B, 0.25), atol=1e-12)
    np.testing.assert_allclose(tf.lookup("map", "cam", 0), B, atol=1e-12)  # 0 = latest


def test_latest_common_time_over_a_chain() -> None:
    tf = TfBuffer()
    tf.set_transform("map", "odom", make_pose(np.eye(3), [0, 0, 0]), 100 * MS)
    tf.set_transform("map", "odom", make_pose(np.eye(3), [1, 0, 0]), 200 * MS)
    tf.set_transform("odom", "base", make_pose(np.eye(3), [0, 0, 0]), 150 * MS)
    # latest time both edges know is 150 ms: map->odom is interpolated there
    np.testing.assert_allclose(tf.lookup("map", "base")[:3, 3], [0.5, 0, 0], atol=1e-12)


def test_lookup_failures() -> None:
    tf = TfBuffer(extrapolation_tolerance_s=0.01)
    tf.set_transform("map", "cam", np.eye(4), 100 * MS)
    tf.set_transform("map", "cam", np.eye(4), 200 * MS)
    tf.set_transform("world", "other", np.eye(4), 0, static=True)
    with pytest.raises(TransformLookupError, match="does not exist"):
        tf.lookup("map", "nope")
    with pytest.raises(TransformLookupError, match="not connected"):
        tf.lookup("map", "other")
    with pytest.raises(TransformLookupError, match="future"):
        tf.lookup("map", "cam", 300 * MS)
    with pytest.raises(TransformLookupError, match="past"):
        tf.lookup("map", "cam", 50 * MS)
    np.testing.assert_allclose(tf.lookup("map", "cam", 205 * MS), np.eye(4))  # within tolerance
    assert not tf.can_transform("map", "other") and tf.can_transform("map", "cam", 150 * MS)


def test_cache_window_and_bad_input() -> None:
    tf = TfBuffer(cache_time_s=1.0)
    for i in range(30):
        tf.set_transform("map", "cam", np.eye(4), i * 100 * MS)
    with pytest.raises(TransformLookupError):
        tf.lookup("map", "cam", 500 * MS)  # older than the 1 s window
    with pytest.raises(ValueError, match="cycle"):
        tf.set_transform("cam", "map", np.eye(4), 0)
    with pytest.raises(ValueError):
        tf.set_transform("map", "map", np.eye(4), 0)
    with pytest.raises(InvalidPoseError):
        tf.set_transform("map", "x", np.full((4, 4), np.nan), 0)


def test_tf_message_ingestion_skips_bad_transforms() -> None:
    from tf2_msgs.msg import TFMessage

    from ros_nodes.conversions import matrix_to_transform_stamped

    T = random_pose()
    good = matrix_to_transform_stamped(T, 5 * MS, "map", "cam")
    bad = matrix_to_transform_stamped(np.eye(4), 5 * MS, "map", "cam2")
    bad.transform.translation.x = float("nan")
    tf = TfBuffer()
    assert tf.add_tf_message(TFMessage(transforms=[good, bad])) == 1
    np.testing.assert_allclose(tf.lookup("map", "cam", 5 * MS), T, atol=1e-12)
    assert "cam2" not in tf.frames()


# --------------------------------------------------------------------------- latest-wins slot


def test_latest_slot_keeps_the_newest_and_counts_drops() -> None:
    import threading
    import time

    from ros_nodes.common import LatestSlot

    slot = LatestSlot()
    assert slot.get(timeout=0.01) is None
    assert slot.put(1) is False and slot.put(2) is True  # 1 was never taken: dropped
    assert slot.get() == 2 and slot.get(timeout=0.01) is None

    taken: list[int] = []
    drops = 0

    def slow_consumer() -> None:
        while True:
            item = slot.get(timeout=1.0)
            if item is None:
                return
            taken.append(item)
            time.sleep(0.02)  # integration slower than the producer

    t = threading.Thread(target=slow_consumer)
    t.start()
    for i in range(100):
        drops += slot.put(i)
        time.sleep(0.001)
    slot.close()
    t.join()
    assert taken[-1] == 99  # the newest item is never lost
    assert taken == sorted(taken) and len(taken) + drops == 100 and drops > 50
