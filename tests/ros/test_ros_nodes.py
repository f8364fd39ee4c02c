"""Live nodes over real DDS (loopback): streaming, malformed input, services.

The graph runs in-process through ros_nodes.bringup (its own rclpy context); the test talks to
it from a separate probe node, so every message and service call crosses the middleware.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("embodied_memory.srv", reason="ROS 2 interfaces not built (scripts/build_ros_interfaces.sh)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from embodied_memory.srv import EpisodicAnswer, FilePath, LastSeen, QueryText, Recall, RenderView  # noqa: E402
from ros_nodes import conversions as cv  # noqa: E402
from ros_nodes.bringup import Bringup  # noqa: E402
from ros_nodes.graph import build_graph  # noqa: E402
from ros_nodes.params import load_config  # noqa: E402
from spatial_memory.geometry import look_at  # noqa: E402
from spatial_memory.types import CameraIntrinsics  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SMALL = {"width": 160, "height": 120}


def diag_values(arrays: list) -> dict[str, str]:
    """Key/values of the latest memory-node status on /diagnostics."""
    for arr in reversed(arrays):
        for st in arr.status:
            if st.name.endswith("memory: ingest"):
                return {kv.key: kv.value for kv in st.values}
    return {}


def sim_graph(frames: int, memory_params: dict, scene: str = "apartment") -> list:
    cfg = load_config(REPO / "config/sim.yaml")
    return build_graph(
        cfg,
        overrides={
            "sim": {**SMALL, "frames": frames, "rate": 20.0, "wait_for_subscribers": 1},
            "memory": {"diagnostics_period": 0.2, **memory_params},
        },
        args={"scene": scene},
    )


def test_sim_stream_reaches_memory_node(ros_domain, probe) -> None:
    """>= 50 frames of the embedded simulator over real topics, converted and accepted."""
    diags = probe.record(DiagnosticArray, "/diagnostics")
    poses = probe.record(PoseStamped, "camera/pose")
    nodes = sim_graph(60, {"enable_m3": False, "enable_episodic": False})
    with Bringup(nodes, domain_id=ros_domain) as up:
        sim, mem = up.node("sim"), up.node("memory")
        # the probe spins while waiting so it records every pose and diagnostics message
        assert probe.spin_until(lambda: sim.done, timeout_s=120), f"sim published only {sim.published} frames"
        assert probe.spin_until(lambda: mem.stats()["integrated"] + mem.stats()["dropped"] >= sim.published, 10)
        probe.spin_until(lambda: diag_values(diags).get("integrated") == str(mem.stats()["integrated"]), 5)
        st = mem.stats()
    assert sim.published == 60 and sim.skipped == 0
    assert st["received"] >= 50, st
    assert st["skipped"] == 0 and st["errors"] == 0, st
    assert st["integrated"] + st["dropped"] == st["received"]
    assert st["integrated"] >= 50
    vals = diag_values(diags)
    assert int(vals["received"]) == st["received"] and vals["skipped"] == "0"
    assert len(poses) == 60 and {p.header.frame_id for p in poses} == {"map"}


def _camera(probe, intr: CameraIntrinsics):
    from rclpy.qos import QoSProfile

    q = QoSProfile(depth=10)
    pubs = {
        "rgb": probe.node.create_publisher(Image, "camera/color/image_raw", q),
        "depth": probe.node.create_publisher(Image, "camera/depth/image_raw", q),
        "info": probe.node.create_publisher(CameraInfo, "camera/color/camera_info", q),
        "pose": probe.node.create_publisher(PoseStamped, "camera/pose", q),
    }
    return pubs


def test_malformed_input_is_counted_and_node_keeps_answering(ros_domain, probe) -> None:
    diags = probe.record(DiagnosticArray, "/diagnostics")
    intr = CameraIntrinsics.from_fov(32, 24, 70.0)
    pubs = _camera(probe, intr)
    nodes = build_graph(
        {"nodes": {"memory": {"executable": "memory_node"}}},
        overrides={"memory": {"enable_m3": False, "enable_episodic": False, "diagnostics_period": 0.2,
                              "qos.image_reliability": "reliable"}},
    )
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 3.0, (24, 32)).astype(np.float32)
    T = look_at([0.0, 0.0, 1.0], [1.0, 0.0, 1.0])

    def group(stamp_s: float, rgb_msg=None, depth_msg=None, pose_msg=None):
        ns = int(stamp_s * 1e9)
        r = rgb_msg or cv.numpy_to_image_msg(rgb, "rgb8", ns, "cam")
        d = depth_msg or cv.numpy_to_image_msg(depth, "32FC1", ns, "cam")
        p = pose_msg or cv.matrix_to_pose_stamped(T, ns, "map")
        for m in (r, d, p):
            m.header.stamp = cv.ns_to_stamp(ns)
        return r, d, p

    nan_pose = cv.matrix_to_pose_stamped(T, 0, "map")
    nan_pose.pose.position.y = float("nan")
    cases = [
        ("good", {}),
        ("wrong encoding", {"rgb_msg": Image(height=24, width=32, encoding="yuv422", step=64, data=bytes(24 * 64))}),
        ("depth on the colour topic", {"rgb_msg": cv.numpy_to_image_msg(depth, "32FC1")}),
        ("rgb/depth size mismatch", {"depth_msg": cv.numpy_to_image_msg(depth[:12, :16].copy(), "32FC1")}),
        ("NaN pose", {"pose_msg": nan_pose}),
        ("empty image", {"rgb_msg": Image(height=24, width=32, encoding="rgb8", step=96)}),
        ("good again", {}),
    ]
    with Bringup(nodes, domain_id=ros_domain) as up:
        mem = up.node("memory")
        assert probe.spin_until(lambda: pubs["rgb"].get_subscription_count() > 0, 10)
        pubs["info"].publish(cv.intrinsics_to_camera_info(intr, 0, "cam"))
        time.sleep(0.2)
        for i, (what, kw) in enumerate(cases):
            before = mem.stats()
            done_before = before["integrated"] + before["skipped"]
            r, d, p = group(1.0 + i, **kw)
            pubs["pose"].publish(p)
            pubs["depth"].publish(d)
            pubs["rgb"].publish(r)
            assert up.spin_until(lambda: mem.stats()["integrated"] + mem.stats()["skipped"] > done_before, 10), what
        st = mem.stats()
        probe.spin_until(lambda: diag_values(diags).get("skipped") == "5", 5)
        # still answering: the services reply (with a clear message, memories are disabled here)
        resp = probe.call(QueryText, "/memory/query_text", QueryText.Request(text="chair"))
        seen = probe.call(LastSeen, "/memory/last_seen", LastSeen.Request(label="chair"))
    assert st["integrated"] == 2 and st["skipped"] == 5, st
    reasons = st["skip_reasons"]
    assert reasons["UnsupportedEncodingError"] == 1
    assert reasons["ImageDecodeError"] == 2  # depth encoding on the colour topic, empty payload
    assert reasons["InvalidFrameError"] == 1 and reasons["InvalidPoseError"] == 1
    vals = diag_values(diags)
    assert vals["skipped"] == "5" and vals["skip.InvalidPoseError"] == "1"
    assert not resp.success and "disabled" in resp.message
    assert not seen.found and "disabled" in seen.message


def _available(module: str, attr: str) -> str | None:
    """None if ``module.attr`` imports, else the reason (the skip message)."""
    try:
        if not hasattr(importlib.import_module(module), attr):
            return f"{module}.{attr} is not available yet"
    except ImportError as e:
        return f"{module}.{attr} is not importable yet ({e})"
    return None


def _visible_label(frames: int, scene: str = "drake_living_room") -> str:
    """The object label covering most pixels of the first simulated frame (always a keyframe)."""
    from sim.simulator import make_sim_source

    f = make_sim_source(scene, frames=frames, **SMALL, progress=False).frame(0)
    structural = {"floor", "wall", "ceiling", "door_frame", "window", "door", "curtain"}
    ids, counts = np.unique(f.instance_ids, return_counts=True)
    ranked = [f.id_to_label.get(int(i)) for i in ids[np.argsort(-counts)]]
    return next(lab for lab in ranked if lab and lab not in structural)


M3_MISSING = _available("spatial_memory.m3", "M3Memory")
EPISODIC_MISSING = _available("spatial_memory.episodic", "EpisodicMemory")


@pytest.mark.slow  # CPU Gaussian-splat integration of a few keyframes
@pytest.mark.skipif(M3_MISSING is not None, reason=str(M3_MISSING))
def test_m3_services_end_to_end(ros_domain, probe, tmp_path: Path) -> None:
    """Stream the Drake living room into the real M3 memory, then call its services."""
    from sensor_msgs.msg import PointCloud2
    from visualization_msgs.msg import MarkerArray

    label = _visible_label(30)
    markers = probe.record(MarkerArray, "/memory/query_markers")
    clouds = probe.record(PointCloud2, "/memory/gaussians")
    nodes = sim_graph(30, {"enable_episodic": False, "cloud_period": 0.5}, scene="drake_living_room")
    intr = CameraIntrinsics.from_fov(160, 120, 70.0)
    with Bringup(nodes, domain_id=ros_domain) as up:
        sim, mem = up.node("sim"), up.node("memory")
        assert probe.spin_until(lambda: sim.done, timeout_s=240)
        assert probe.spin_until(lambda: mem.stats()["pending"] == 0, 300)
        st = mem.stats()
        assert st["integrated"] >= 1 and st["errors"] == 0 and st["skipped"] == 0, st
        assert probe.spin_until(lambda: len(clouds) > 0, 10)
        xyz, _ = cv.pointcloud2_to_points(clouds[-1])
        assert 0 < len(xyz) <= st["num_gaussians"]

        q = probe.call(QueryText, "/memory/query_text", QueryText.Request(text=label, top_k=3, min_score=0.0))
        assert q.success, q.message
        assert 1 <= len(q.hits) <= 3 and q.hits[0].label == label and q.hits[0].score >= q.hits[-1].score
        assert probe.spin_until(lambda: len(markers) > 0, 5)
        assert len(markers[-1].markers) == 1 + 2 * len(q.hits)

        target = [q.hits[0].position.x, q.hits[0].position.y, q.hits[0].position.z]
        T = look_at(np.array(target) + [1.5, 0.0, 0.5], target)
        rv = probe.call(RenderView, "/memory/render_view", RenderView.Request(
            pose=cv.matrix_to_pose_msg(T), camera_info=cv.intrinsics_to_camera_info(intr), query_text=label))
        assert rv.success, rv.message
        assert cv.rgb_msg_to_numpy(rv.rgb).shape == (120, 160, 3)
        depth = cv.depth_msg_to_numpy(rv.depth)
        assert depth.shape == (120, 160) and (depth > 0).any()
        assert (rv.heatmap.width, rv.heatmap.height, rv.heatmap.encoding) == (160, 120, "32FC1")
        bad = probe.call(RenderView, "/memory/render_view", RenderView.Request(pose=cv.matrix_to_pose_msg(T)))
        assert not bad.success and "InvalidIntrinsicsError" in bad.message  # all-zero CameraInfo

        saved = probe.call(FilePath, "/memory/save_map", FilePath.Request(path=str(tmp_path / "map")))
        assert saved.success, saved.message
        loaded = probe.call(FilePath, "/memory/load_map", FilePath.Request(path=str(tmp_path / "map")))
        assert loaded.success, loaded.message
        missing = probe.call(FilePath, "/memory/load_map", FilePath.Request(path=str(tmp_path / "nope")))
        assert not missing.success and "does not exist" in missing.message
        q2 = probe.call(QueryText, "/memory/query_text", QueryText.Request(text=label, top_k=3))
        assert q2.success and [h.support for h in q2.hits] == [h.support for h in q.hits]


@pytest.mark.slow
@pytest.mark.skipif(EPISODIC_MISSING is not None, reason=str(EPISODIC_MISSING))
def test_episodic_services_end_to_end(ros_domain, probe, tmp_path: Path) -> None:
    """Stream into the real episodic memory, then recall places and ask where a label was seen."""
    label = _visible_label(40)
    ep_cfg = tmp_path / "episodic.yaml"
    ep_cfg.write_text("place_radius: 0.5\n")  # the 40-frame walk spans 1.2 m: several places (order needs two)
    nodes = sim_graph(40, {"enable_m3": False, "episodic_config": str(ep_cfg)}, scene="drake_living_room")
    with Bringup(nodes, domain_id=ros_domain) as up:
        sim, mem = up.node("sim"), up.node("memory")
        assert probe.spin_until(lambda: sim.done, timeout_s=240)
        assert probe.spin_until(lambda: mem.stats()["pending"] == 0, 120)
        st = mem.stats()
        assert st["integrated"] >= 1 and st["errors"] == 0, st

        req = Recall.Request(place_id=-1, radius=50.0)
        req.position.x, req.position.y, req.position.z = 0.0, 0.0, 1.0
        rc = probe.call(Recall, "/memory/recall", req)
        assert rc.success and len(rc.entries) > 0, rc.message
        pid = rc.entries[0].place_id
        by_place = probe.call(Recall, "/memory/recall", Recall.Request(place_id=pid))
        assert by_place.success and by_place.entries and all(e.place_id == pid for e in by_place.entries)
        future = probe.call(Recall, "/memory/recall", Recall.Request(place_id=pid, t_min=4e9))  # year 2096
        assert future.success and len(future.entries) == 0

        ls = probe.call(LastSeen, "/memory/last_seen", LastSeen.Request(label=label))
        assert ls.found, ls.message
        T = cv.pose_msg_to_matrix(ls.pose)
        assert np.isfinite(T).all() and cv.stamp_to_ns(ls.stamp) > 0
        never = probe.call(LastSeen, "/memory/last_seen", LastSeen.Request(label="giraffe"))
        assert not never.found and "giraffe" in never.message

        # the learned reader through ~/answer: one question of each task, and bad requests
        other = next((e.place_id for e in rc.entries if e.place_id != pid), None)
        wwt = probe.call(EpisodicAnswer, "/memory/answer", EpisodicAnswer.Request(task="what_was_there", place_id=pid))
        assert wwt.success and 0.0 <= wwt.confidence <= 1.0 and wwt.place_id == -1, wwt.message
        assert set(wwt.labels) <= set(wwt.score_labels) and len(wwt.scores) == len(wwt.score_labels)
        assert set(wwt.labels) == {lab for lab, p in zip(wwt.score_labels, wwt.scores) if p > 0.5}
        fv = probe.call(EpisodicAnswer, "/memory/answer", EpisodicAnswer.Request(task="first_visit", place_id=pid))
        assert fv.success and len(fv.scores) == len(wwt.scores), fv.message
        ls_answer = probe.call(EpisodicAnswer, "/memory/answer", EpisodicAnswer.Request(task="last_seen", label=label))
        if label in wwt.score_labels:  # the reader answers over its own vocabulary only
            assert ls_answer.success and ls_answer.place_id >= 0, ls_answer.message
        else:
            assert not ls_answer.success and "vocabulary" in ls_answer.message
        assert other is not None, [(e.place_id, round(e.position.x, 2), round(e.position.y, 2)) for e in rc.entries]
        order = probe.call(EpisodicAnswer, "/memory/answer", EpisodicAnswer.Request(task="order", place_id=pid, place_b=other))
        assert order.success and order.place_id in (pid, other), order.message
        same = probe.call(EpisodicAnswer, "/memory/answer", EpisodicAnswer.Request(task="order", place_id=pid, place_b=pid))
        assert not same.success and "two different places" in same.message
        unknown = probe.call(EpisodicAnswer, "/memory/answer", EpisodicAnswer.Request(task="where_is_waldo"))
        assert not unknown.success and "unknown task" in unknown.message
        nowhere = probe.call(EpisodicAnswer, "/memory/answer", EpisodicAnswer.Request(task="what_was_there", place_id=999))
        assert not nowhere.success and "QueryError" in nowhere.message

        saved = probe.call(FilePath, "/memory/save_map", FilePath.Request(path=str(tmp_path / "ep")))
        assert saved.success, saved.message
        assert probe.call(FilePath, "/memory/load_map", FilePath.Request(path=str(tmp_path / "ep"))).success


def test_tf_pose_source_and_odd_frames(ros_domain, probe) -> None:
    """memory_node takes the pose from /tf (world_frame <- image frame) when asked to."""
    nodes = sim_graph(20, {"enable_m3": False, "enable_episodic": False, "pose_source": "tf", "tf_timeout": 2.0})
    with Bringup(nodes, domain_id=ros_domain) as up:
        sim, mem = up.node("sim"), up.node("memory")
        assert up.spin_until(lambda: sim.done, timeout_s=120)
        # under load the worker can fall behind and a newer frame replaces a waiting one (dropped):
        # wait until every received frame has an outcome
        assert up.spin_until(lambda: mem.stats()["pending"] == 0, 10), mem.stats()
        st = mem.stats()
        T = mem.tf.lookup("map", "camera_color_optical_frame")
    assert st["received"] >= 18 and st["skipped"] == 0 and st["integrated"] == st["received"] - st["dropped"], st
    assert np.allclose(T[3], [0, 0, 0, 1]) and abs(T[2, 3] - 1.0) < 0.2  # camera ~1 m above the floor


def test_cmd_vel_drives_the_simulated_agent(ros_domain, probe) -> None:
    from geometry_msgs.msg import Twist

    poses = probe.record(PoseStamped, "camera/pose")
    cmd = probe.node.create_publisher(Twist, "cmd_vel", 10)
    nodes = build_graph({"args": {}, "nodes": {"sim": {"executable": "sim_node", "parameters": {
        "mode": "cmd_vel", "scene": "apartment", **SMALL, "rate": 10.0}}}})
    with Bringup(nodes, domain_id=ros_domain) as up:
        assert probe.spin_until(lambda: len(poses) >= 3 and cmd.get_subscription_count() > 0, 60)
        still = cv.pose_stamped_to_matrix(poses[-1])
        turn = Twist()
        turn.angular.z = 1.0
        cmd.publish(turn)
        n = len(poses)
        assert probe.spin_until(lambda: len(poses) >= n + 10, 30)
        turned = cv.pose_stamped_to_matrix(poses[-1])
        cmd.publish(Twist())
        assert up.node("sim").published >= 13
    # turning in place: the camera keeps its position and rotates about the vertical
    assert np.linalg.norm(turned[:3, 3] - still[:3, 3]) < 1e-6
    yaw = lambda T: np.arctan2(T[1, 2], T[0, 2])  # heading of the optical axis  # noqa: E731
    assert abs(np.angle(np.exp(1j * (yaw(turned) - yaw(still))))) > 0.5


def test_emem_ros_up_cli(ros_domain, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "emem.cli", "ros", "up", "--config", str(REPO / "config/sim.yaml"),
           "--arg", "scene=apartment", "--set", "sim.frames=10", "--set", "sim.width=64", "--set", "sim.height=48",
           "--set", "sim.rate=20", "--set", "sim.wait_for_subscribers=1", "--set", "memory.enable_m3=false",
           "--set", "memory.enable_episodic=false", "--domain-id", str(ros_domain), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout[out.stdout.index("{"):])
    assert summary["sim"] == {"published": 10, "skipped": 0, "done": True}
    assert summary["memory"]["received"] == 10 and summary["memory"]["skipped"] == 0
    bad = subprocess.run(cmd[:7] + ["--set", "nosuchnode.x=1"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "not in the graph" in bad.stderr


def _relocalizer_available() -> str | None:
    try:
        from relocalization.favor import FavorMap, FavorRelocalizer  # noqa: F401
    except ImportError as e:
        return f"relocalization.favor is not available yet ({e})"
    return None


@pytest.mark.slow  # builds a small FaVoR map at start-up (xfeat on the CPU)
@pytest.mark.skipif(_relocalizer_available() is not None, reason=str(_relocalizer_available()))
def test_reloc_node_relocalizes_a_held_out_view(ros_domain, probe, tmp_path) -> None:
    from embodied_memory.srv import Relocalize
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from relocalization.favor import FavorMap
    from sim.simulator import make_sim_source
    from spatial_memory.geometry import pose_error

    # Map on the even frames, save, let the node load the map, query an odd frame it never saw.
    frames = list(make_sim_source("drake_living_room", frames=32, width=256, height=192, progress=False))
    FavorMap.build(frames[0::2], progress=False).save(tmp_path / "rmap")
    query = frames[15]
    poses_out = probe.record(PoseWithCovarianceStamped, "/reloc/pose")
    nodes = build_graph({"nodes": {"reloc": {"executable": "reloc_node", "parameters": {
        "map_path": str(tmp_path / "rmap")}}}})
    with Bringup(nodes, domain_id=ros_domain):
        req = Relocalize.Request(image=cv.numpy_to_image_msg(query.rgb, "rgb8", 1, "cam"),
                                 camera_info=cv.intrinsics_to_camera_info(query.intrinsics))
        resp = probe.call(Relocalize, "/reloc/relocalize", req, timeout_s=120)
        bad = probe.call(Relocalize, "/reloc/relocalize", Relocalize.Request(image=Image(encoding="rgb8")))
        probe.spin_until(lambda: len(poses_out) >= 1, 5)
    assert resp.success, resp.message
    dt, dr = pose_error(cv.pose_msg_to_matrix(resp.pose.pose.pose), query.T_world_camera)
    assert dt < 0.10 and dr < 5.0, (dt, dr)  # the bar: within 10 cm / 5 deg
    assert resp.pose.header.frame_id == "map" and resp.inliers > 0 and 0 < resp.confidence <= 1
    assert not bad.success and "Error" in bad.message
    assert len(poses_out) == 1
