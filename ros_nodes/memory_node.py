"""``memory_node``: feeds posed RGB-D topics into the M3 and episodic memories and serves queries.

Inputs (relative names, remap them to your driver's topics):
    ``camera/color/image_raw`` (Image), ``camera/depth/image_raw`` (Image, registered to colour),
    ``camera/color/camera_info`` (CameraInfo, latest one is used), with ``use_instances`` an
    instance-id image ``camera/instances/image_raw`` and its labels ``camera/instances/labels``
    (String, JSON ``{id: label}``), and the camera pose from one of
    ``pose_source``: ``pose`` -> ``camera/pose`` (PoseStamped, T_world_camera of the optical frame),
    ``odom`` -> ``odom`` (Odometry) chained with the TF from its child frame to the camera frame,
    ``tf`` -> a ``/tf`` lookup ``world_frame`` <- camera frame at the image stamp.

Images (and the pose message) are grouped by an approximate-time synchroniser (``slop``). Each
group goes to a worker thread through a queue of size one where the newest group wins, so a slow
integration drops frames instead of building up latency. Decoding happens in the worker, only for
frames that are integrated. Bad input (unsupported encoding, rgb/depth size mismatch, NaN pose,
empty image, uncalibrated camera) is skipped, counted by reason and reported on ``/diagnostics``;
the node keeps running and answering.

Services (all under the node's private namespace): ``~/query_text``, ``~/render_view``,
``~/save_map``, ``~/load_map``, ``~/recall``, ``~/last_seen``, ``~/answer`` (the episodic reader). Outputs: ``~/query_markers``
(MarkerArray of the last query), ``~/gaussians`` (PointCloud2), ``/diagnostics``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from embodied_memory.msg import EpisodicEntry as EpisodicEntryMsg
from embodied_memory.msg import QueryHit as QueryHitMsg
from embodied_memory.srv import EpisodicAnswer, FilePath, LastSeen, QueryText, Recall, RenderView
from spatial_memory.errors import ConfigError, EmemError, InvalidFrameError, InvalidPoseError
from spatial_memory.types import Frame

from . import conversions as cv
from .common import LatestSlot, guarded_service, node_kwargs, spin_main
from .params import QOS_SPECS, ParamSpec, declare_params, load_config, qos_profile
from .sync import ApproximateTimeSync, TfBuffer, TransformLookupError

log = logging.getLogger(__name__)

SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("world_frame", "map", "Fixed frame of the memories (poses and query results are in it)."),
    ParamSpec("camera_frame", "camera_color_optical_frame",
              "Camera optical frame; used for TF lookups when the image header has no frame_id."),
    ParamSpec("pose_source", "pose", "Where the camera pose comes from.", choices=("pose", "odom", "tf")),
    ParamSpec("use_instances", False, "Also synchronise an instance-id image (camera/instances/image_raw) and "
              "its id -> label map (camera/instances/labels), e.g. the simulator's ground truth or a "
              "segmentation node; the M3 'labels' extractor and the episodic labels need them."),
    ParamSpec("slop", 0.02, "Largest stamp spread (s) of an rgb/depth/pose group.", min=0.0, max=1.0),
    ParamSpec("sync_queue_size", 10, "Messages kept per synchronised input.", min=1, max=1000),
    ParamSpec("tf_timeout", 0.1, "How long (s) the worker waits for a TF needed by a frame.", min=0.0, max=5.0),
    ParamSpec("working_width", 0, "Frames wider than this are downscaled to it (aspect kept) before they reach the "
              "memories; 0 = camera resolution. On a CPU, 320 integrates ~4x faster than 640.", min=0, max=8192),
    ParamSpec("device", "cpu", "Torch device, passed to memory configs that have a device field.",
              choices=("cpu", "cuda")),
    ParamSpec("map_path", "", "Map directory loaded at start-up (empty: start with an empty memory)."),
    ParamSpec("m3_config", "", "YAML file with M3Config fields (empty: defaults)."),
    ParamSpec("episodic_config", "", "YAML file with the episodic memory's config fields (empty: defaults)."),
    ParamSpec("enable_m3", True, "Run the M3 Gaussian memory (query_text, render_view, gaussians)."),
    ParamSpec("enable_episodic", True, "Run the episodic memory (recall, last_seen)."),
    ParamSpec("default_top_k", 5, "Hits returned by query_text when the request's top_k is 0.", min=1, max=1000),
    ParamSpec("recall_radius", 1.5, "Radius (m) of recall-by-position when the request's radius is <= 0.",
              min=0.01, max=1000.0),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", min=0.05, max=3600.0),
    ParamSpec("cloud_period", 2.0, "Seconds between ~/gaussians point clouds (0 disables).", min=0.0, max=3600.0),
    ParamSpec("cloud_max_points", 50000, "Largest ~/gaussians cloud (evenly subsampled).", min=1, max=50_000_000),
    ParamSpec("drop_warn_rate", 0.5, "Diagnostics turn WARN when this fraction of frames is dropped.",
              min=0.0, max=1.0),
) + QOS_SPECS


@dataclass
class IngestStats:
    """Counters of the ingest pipeline (reported on /diagnostics, returned by ``stats()``)."""

    received: int = 0        # synchronised groups handed to the worker
    dropped: int = 0         # groups replaced in the latest-wins slot before the worker took them
    skipped: int = 0         # groups rejected as bad input (see skip_reasons)
    integrated: int = 0      # frames the M3 memory integrated
    not_integrated: int = 0  # frames the memory declined (e.g. too close to the last keyframe)
    errors: int = 0          # memory exceptions while ingesting
    integration_s: float = 0.0
    last_integration_s: float = 0.0
    skip_reasons: Counter = field(default_factory=Counter)
    last_skip: str = ""

    def pending(self) -> int:
        """Groups received but not yet integrated, declined, dropped, skipped or failed."""
        done = self.integrated + self.not_integrated + self.dropped + self.skipped + self.errors
        return max(0, self.received - done)


def build_memories(values: dict[str, Any]) -> tuple[Any, Any]:
    """Construct the memories the parameters ask for (imports happen here, so a node with
    injected memories does not need them).

    Raises:
        ConfigError: a memory module is missing or its config file is invalid.
    """
    m3 = episodic = None
    if values["enable_m3"]:
        try:
            from spatial_memory.m3 import M3Config, M3Memory
        except ImportError as e:
            raise ConfigError(f"enable_m3 is true but the M3 memory is not importable: {e}") from None
        m3 = M3Memory(_make_config(M3Config, values["m3_config"], values["device"]))
    if values["enable_episodic"]:
        try:
            from spatial_memory import episodic as ep_mod
        except ImportError as e:
            raise ConfigError(f"enable_episodic is true but the episodic memory is not importable: {e}") from None
        cfg_cls = getattr(ep_mod, "EpisodicConfig", None) or getattr(ep_mod, "EpisodicMemoryConfig", None)
        cfg = _make_config(cfg_cls, values["episodic_config"], values["device"]) if cfg_cls else None
        episodic = ep_mod.EpisodicMemory(cfg) if cfg is not None else ep_mod.EpisodicMemory()
    return m3, episodic


def _make_config(cls: type, path: str, device: str) -> Any:
    data = load_config(path) if path else {}
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    unknown = sorted(set(data) - names) if names else []
    if unknown:
        raise ConfigError(f"{path}: unknown {cls.__name__} fields {unknown}; known: {sorted(names)}")
    if "device" in names and "device" not in data:
        data["device"] = device
    elif device != "cpu" and "device" not in names:
        log.warning("device=%s requested but %s has no device field; it chooses its own backend", device, cls.__name__)
    from_dict = getattr(cls, "from_dict", None)
    try:
        return from_dict(data) if from_dict else cls(**data)
    except TypeError as e:
        raise ConfigError(f"{path or cls.__name__}: {e}") from None


def _recall_score(entry: Any, query: dict[str, Any]) -> float:
    """Relevance of a recalled entry: 1 at the query position falling to 0 at the radius;
    1 for every entry of a place queried by id (recall filters, it does not rank)."""
    if "position" not in query:
        return 1.0
    d = float(np.linalg.norm(np.asarray(entry.position, dtype=np.float64)[:3] - query["position"]))
    return float(np.clip(1.0 - d / query["radius"], 0.0, 1.0))


def working_resolution(frame: Frame, width: int) -> Frame:
    """``frame`` downscaled to ``width`` (height by aspect) when it is wider; 0 = unchanged."""
    w, h = frame.intrinsics.width, frame.intrinsics.height
    if width <= 0 or w <= width:
        return frame
    return frame.resized(width, max(1, round(h * width / w)))


class MemoryNode(Node):
    """The memory server. ``m3`` / ``episodic`` may be injected (already built memories);
    otherwise they are built from the parameters (:func:`build_memories`)."""

    def __init__(
        self,
        name: str = "memory",
        parameter_overrides: dict[str, Any] | None = None,
        remappings: tuple[tuple[str, str], ...] = (),
        namespace: str = "",
        context: Any = None,
        m3: Any = None,
        episodic: Any = None,
    ) -> None:
        super().__init__(name, **node_kwargs(parameter_overrides, remappings, namespace, context, SPECS))
        self.p = declare_params(self, SPECS)
        self.stats_ = IngestStats()
        self.service_errors = 0
        self.memory_lock = threading.RLock()  # held whenever a memory is read or changed
        if m3 is None and episodic is None:
            m3, episodic = build_memories(self.p)
        self.m3, self.episodic = m3, episodic
        if self.p["map_path"]:
            self._load(self.p["map_path"])
        self._info: CameraInfo | None = None
        self.tf = TfBuffer(cache_time_s=30.0)
        self._slot = LatestSlot()
        self._frame_index = 0

        img_qos = qos_profile(self.p["qos.image_reliability"], self.p["qos.image_depth"])
        pose_qos = qos_profile("reliable", self.p["qos.pose_depth"])
        self._sub_group = MutuallyExclusiveCallbackGroup()
        self._srv_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        mode = self.p["pose_source"]
        # Synchronised inputs, in this order: rgb, depth, [pose | odom], [instances].
        self._inputs = ["rgb", "depth"] + (["pose"] if mode in ("pose", "odom") else [])
        self._inputs += ["instances"] if self.p["use_instances"] else []
        self._id_to_label: dict[int, str] = {}
        self.sync = ApproximateTimeSync(len(self._inputs), self._on_group, self.p["slop"], self.p["sync_queue_size"])
        sub, idx = self.create_subscription, self._inputs.index

        def feed(i: int):
            return lambda m: self._on_msg(i, m)

        sub(Image, "camera/color/image_raw", feed(idx("rgb")), img_qos, callback_group=self._sub_group)
        sub(Image, "camera/depth/image_raw", feed(idx("depth")), img_qos, callback_group=self._sub_group)
        sub(CameraInfo, "camera/color/camera_info", self._on_info, img_qos, callback_group=self._sub_group)
        if mode == "pose":
            sub(PoseStamped, "camera/pose", feed(idx("pose")), pose_qos, callback_group=self._sub_group)
        elif mode == "odom":
            sub(Odometry, "odom", feed(idx("pose")), pose_qos, callback_group=self._sub_group)
        if mode in ("odom", "tf"):
            self._subscribe_tf()
        if self.p["use_instances"]:
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            sub(Image, "camera/instances/image_raw", feed(idx("instances")), img_qos, callback_group=self._sub_group)
            sub(String, "camera/instances/labels", self._on_labels, latched, callback_group=self._sub_group)

        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.pub_markers = self.create_publisher(MarkerArray, "~/query_markers", 1)
        self.pub_cloud = self.create_publisher(PointCloud2, "~/gaussians", 1)
        srv = self.create_service
        srv(QueryText, "~/query_text", self._srv_query_text, callback_group=self._srv_group)
        srv(RenderView, "~/render_view", self._srv_render_view, callback_group=self._srv_group)
        srv(FilePath, "~/save_map", self._srv_save_map, callback_group=self._srv_group)
        srv(FilePath, "~/load_map", self._srv_load_map, callback_group=self._srv_group)
        srv(Recall, "~/recall", self._srv_recall, callback_group=self._srv_group)
        srv(LastSeen, "~/last_seen", self._srv_last_seen, callback_group=self._srv_group)
        srv(EpisodicAnswer, "~/answer", self._srv_answer, callback_group=self._srv_group)
        self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics, callback_group=self._timer_group)
        if self.p["cloud_period"] > 0 and self.m3 is not None:
            self.create_timer(self.p["cloud_period"], self._publish_cloud, callback_group=self._timer_group)

        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name=f"{name}-ingest", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"memory_node up: pose_source={mode}, world_frame={self.p['world_frame']}, "
            f"m3={'on' if self.m3 is not None else 'off'}, episodic={'on' if self.episodic is not None else 'off'}"
        )

    # -- inputs ---------------------------------------------------------------------------------
    def _subscribe_tf(self) -> None:
        from tf2_msgs.msg import TFMessage

        static_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        dyn_qos = qos_profile("reliable", self.p["qos.pose_depth"])
        self.create_subscription(TFMessage, "/tf", lambda m: self.tf.add_tf_message(m, False), dyn_qos,
                                 callback_group=self._sub_group)
        self.create_subscription(TFMessage, "/tf_static", lambda m: self.tf.add_tf_message(m, True), static_qos,
                                 callback_group=self._sub_group)

    def _on_info(self, msg: CameraInfo) -> None:
        self._info = msg

    def _on_labels(self, msg: String) -> None:
        try:
            self._id_to_label = cv.labels_from_json(msg.data)
        except EmemError as e:
            self._skip(f"{type(e).__name__}: {e}")

    def _on_msg(self, index: int, msg: Any) -> None:
        try:
            self.sync.add(index, msg, cv.stamp_to_ns(msg.header.stamp))
        except Exception as e:  # never let a subscription callback raise
            self._skip(f"sync: {type(e).__name__}: {e}")

    def _on_group(self, *msgs: Any) -> None:
        """Synchronised (rgb, depth[, pose]) -> worker slot; cheap, no decoding here."""
        self.stats_.received += 1
        if self._slot.put((msgs, self._info, self._id_to_label)):
            self.stats_.dropped += 1

    # -- worker ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._slot.get(timeout=0.1)
            if item is None:
                continue
            msgs, info, id_to_label = item
            try:
                frame = working_resolution(self._to_frame(msgs, info, id_to_label), self.p["working_width"])
            except (EmemError, ValueError) as e:
                self._skip(f"{type(e).__name__}: {e}")
                continue
            self._ingest(frame)

    def _to_frame(self, msgs: tuple, info: CameraInfo | None, id_to_label: dict[int, str]) -> Frame:
        named = dict(zip(self._inputs, msgs))
        rgb_msg, depth_msg = named["rgb"], named["depth"]
        deadline = time.monotonic() + self.p["tf_timeout"]
        while info is None:  # the first CameraInfo may be handled just after the first images
            info = self._info
            if info is None and time.monotonic() >= deadline:
                raise InvalidFrameError("no CameraInfo received yet on camera/color/camera_info")
            time.sleep(0.005)
        intr = cv.camera_info_to_intrinsics(info)
        stamp = cv.stamp_to_ns(rgb_msg.header.stamp)
        cam_frame = rgb_msg.header.frame_id or self.p["camera_frame"]
        mode = self.p["pose_source"]
        if mode == "pose":
            pose_msg = named["pose"]
            T = cv.pose_stamped_to_matrix(pose_msg)
            src = pose_msg.header.frame_id
            if src and src != self.p["world_frame"]:
                T = self._lookup(self.p["world_frame"], src, stamp) @ T
        elif mode == "odom":
            odom = named["pose"]
            T_odom_base = cv.odometry_to_matrix(odom)
            T_world_odom = (np.eye(4) if odom.header.frame_id in ("", self.p["world_frame"])
                            else self._lookup(self.p["world_frame"], odom.header.frame_id, stamp))
            T_base_cam = (np.eye(4) if odom.child_frame_id in ("", cam_frame)
                          else self._lookup(odom.child_frame_id, cam_frame, stamp))
            T = T_world_odom @ T_odom_base @ T_base_cam
        else:
            T = self._lookup(self.p["world_frame"], cam_frame, stamp)
        frame = cv.frame_from_messages(rgb_msg, depth_msg, intr, T, index=self._frame_index,
                                       instances_msg=named.get("instances"), id_to_label=id_to_label)
        self._frame_index += 1
        return frame

    def _lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """TF lookup that waits up to ``tf_timeout`` for late transforms (the worker thread only)."""
        deadline = time.monotonic() + self.p["tf_timeout"]
        while True:
            try:
                return self.tf.lookup(target, source, stamp_ns)
            except TransformLookupError as e:
                if time.monotonic() >= deadline:
                    raise InvalidPoseError(f"no transform {target} <- {source}: {e}") from None
                time.sleep(0.005)

    def _ingest(self, frame: Frame) -> None:
        t0 = time.perf_counter()
        try:
            with self.memory_lock:
                integrated = True
                if self.m3 is not None:
                    res = self.m3.ingest(frame)
                    integrated = bool(getattr(res, "integrated", res))
                if self.episodic is not None:
                    self.episodic.ingest(frame)
        except (EmemError, ValueError) as e:  # the memory judged the frame bad
            self._skip(f"{type(e).__name__}: {e}")
            return
        except Exception as e:  # a memory bug must not kill the stream; count and report it
            self.stats_.errors += 1
            self.stats_.last_skip = f"ingest error {type(e).__name__}: {e}"
            self.get_logger().error(self.stats_.last_skip)
            return
        dt = time.perf_counter() - t0
        s = self.stats_
        s.integration_s += dt
        s.last_integration_s = dt
        if integrated:
            s.integrated += 1
        else:
            s.not_integrated += 1

    def _skip(self, reason: str) -> None:
        s = self.stats_
        s.skipped += 1
        s.skip_reasons[reason.split(":", 1)[0]] += 1
        s.last_skip = reason
        self.get_logger().warning(f"skipping frame: {reason}", throttle_duration_sec=2.0)

    # -- outputs --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Snapshot of the ingest counters (plus sync and service counters)."""
        s = self.stats_
        done = s.integrated + s.not_integrated
        return {
            "received": s.received, "dropped": s.dropped, "skipped": s.skipped, "integrated": s.integrated,
            "not_integrated": s.not_integrated, "errors": s.errors, "service_errors": self.service_errors,
            "mean_integration_s": s.integration_s / done if done else 0.0,
            "last_integration_s": s.last_integration_s,
            "drop_rate": s.dropped / s.received if s.received else 0.0,
            "pending": s.pending(),
            "sync_emitted": self.sync.stats.emitted, "sync_discarded": self.sync.stats.discarded,
            "skip_reasons": dict(s.skip_reasons), "last_skip": s.last_skip,
            "num_gaussians": int(getattr(self.m3, "num_gaussians", 0) or 0) if self.m3 is not None else 0,
        }

    def _publish_diagnostics(self) -> None:
        try:
            st = self.stats()
            level, msg = DiagnosticStatus.OK, "ingesting"
            if st["received"] == 0:
                level, msg = DiagnosticStatus.WARN, "no synchronised frames received yet"
            elif st["drop_rate"] > self.p["drop_warn_rate"]:
                level, msg = DiagnosticStatus.WARN, f"dropping {st['drop_rate']:.0%} of frames (integration too slow)"
            elif st["errors"]:
                level, msg = DiagnosticStatus.ERROR, f"memory errors: {st['last_skip']}"
            values = [KeyValue(key=k, value=str(v)) for k, v in st.items() if k != "skip_reasons"]
            values += [KeyValue(key=f"skip.{k}", value=str(v)) for k, v in st["skip_reasons"].items()]
            status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: ingest",
                                      message=msg, hardware_id="embodied_memory", values=values)
            arr = DiagnosticArray(status=[status])
            arr.header.stamp = self.get_clock().now().to_msg()
            self.pub_diag.publish(arr)
        except Exception as e:
            self.get_logger().error(f"diagnostics failed: {type(e).__name__}: {e}")

    def _publish_cloud(self) -> None:
        try:
            if self.pub_cloud.get_subscription_count() == 0:
                return
            with self.memory_lock:
                xyz, rgb = self.m3.gaussian_points()
            n = len(xyz)
            if n > self.p["cloud_max_points"]:
                keep = np.linspace(0, n - 1, self.p["cloud_max_points"]).astype(np.int64)
                xyz, rgb = xyz[keep], rgb[keep]
            stamp = self.get_clock().now().nanoseconds
            self.pub_cloud.publish(cv.points_to_pointcloud2(xyz, rgb, stamp, self.p["world_frame"]))
        except Exception as e:
            self.get_logger().error(f"gaussian cloud failed: {type(e).__name__}: {e}", throttle_duration_sec=10.0)

    # -- services -------------------------------------------------------------------------------
    def _need(self, mem: Any, what: str) -> Any:
        if mem is None:
            raise ConfigError(f"{what} is disabled on this node (enable_{what}=false)")
        return mem

    @guarded_service("query_text")
    def _srv_query_text(self, req: QueryText.Request, resp: QueryText.Response) -> QueryText.Response:
        m3 = self._need(self.m3, "m3")
        top_k = int(req.top_k) or self.p["default_top_k"]
        with self.memory_lock:
            hits = m3.query_text(req.text, top_k=top_k, min_score=float(req.min_score))
        resp.hits = [
            QueryHitMsg(label=str(h.label), position=cv.point(h.position), extent=cv.vector3(h.extent),
                        score=float(h.score), support=int(h.support))
            for h in hits
        ]
        stamp = self.get_clock().now().nanoseconds
        self.pub_markers.publish(cv.hits_to_marker_array(hits, stamp, self.p["world_frame"]))
        resp.success = True
        resp.message = f"{len(hits)} hits for {req.text!r}"
        return resp

    @guarded_service("render_view")
    def _srv_render_view(self, req: RenderView.Request, resp: RenderView.Response) -> RenderView.Response:
        m3 = self._need(self.m3, "m3")
        intr = cv.camera_info_to_intrinsics(req.camera_info)
        T = cv.pose_msg_to_matrix(req.pose, "render_view pose")
        with self.memory_lock:
            view = m3.render(intr, T, text=req.query_text or None, decode=False)  # features are not returned
        stamp = self.get_clock().now().nanoseconds
        frame_id = req.camera_info.header.frame_id or self.p["camera_frame"]
        resp.rgb = cv.numpy_to_image_msg(view.rgb, "rgb8", stamp, frame_id)
        resp.depth = cv.numpy_to_image_msg(view.depth.astype(np.float32), "32FC1", stamp, frame_id)
        if view.heatmap is not None:
            resp.heatmap = cv.numpy_to_image_msg(view.heatmap.astype(np.float32), "32FC1", stamp, frame_id)
        resp.success = True
        resp.message = f"rendered {intr.width}x{intr.height}"
        return resp

    @guarded_service("save_map")
    def _srv_save_map(self, req: FilePath.Request, resp: FilePath.Response) -> FilePath.Response:
        path = Path(req.path).expanduser()
        if not req.path:
            raise ConfigError("save_map needs a directory path")
        path.mkdir(parents=True, exist_ok=True)
        with self.memory_lock:
            if self.m3 is not None:
                self.m3.save(path / "m3")
            if self.episodic is not None:
                self.episodic.save(path / "episodic")
        resp.success = True
        resp.message = f"saved to {path}"
        return resp

    @guarded_service("load_map")
    def _srv_load_map(self, req: FilePath.Request, resp: FilePath.Response) -> FilePath.Response:
        if not req.path:
            raise ConfigError("load_map needs a directory path")
        self._load(req.path)
        resp.success = True
        resp.message = f"loaded {req.path}"
        return resp

    def _load(self, path: str) -> None:
        """Load ``path/m3`` and ``path/episodic`` (those that exist for the enabled memories)."""
        p = Path(path).expanduser()
        if not p.is_dir():
            raise ConfigError(f"map directory {p} does not exist")
        loaded = []
        with self.memory_lock:
            if self.m3 is not None and (p / "m3").exists():
                self.m3 = type(self.m3).load(p / "m3")
                loaded.append("m3")
            if self.episodic is not None and (p / "episodic").exists():
                res = self.episodic.load(p / "episodic")
                if res is not None and isinstance(res, type(self.episodic)):
                    self.episodic = res
                loaded.append("episodic")
        if not loaded:
            raise ConfigError(f"{p} holds neither m3/ nor episodic/ for the enabled memories")

    @guarded_service("recall")
    def _srv_recall(self, req: Recall.Request, resp: Recall.Response) -> Recall.Response:
        ep = self._need(self.episodic, "episodic")
        kw: dict[str, Any] = {
            "t_min_ns": int(req.t_min * 1e9) if req.t_min > 0 else None,
            "t_max_ns": int(req.t_max * 1e9) if req.t_max > 0 else None,
        }
        if req.place_id >= 0:
            kw["place_id"] = int(req.place_id)
        else:
            pos = np.array([req.position.x, req.position.y, req.position.z], dtype=np.float64)
            if not np.all(np.isfinite(pos)):
                raise InvalidPoseError(f"recall position {pos.tolist()} is not finite")
            kw["position"] = pos
            kw["radius"] = float(req.radius) if req.radius > 0 else self.p["recall_radius"]
        with self.memory_lock:
            entries = ep.recall(**kw)
        resp.entries = [
            EpisodicEntryMsg(place_id=int(e.place_id), position=cv.point(e.position), heading=float(e.heading),
                             stamp=cv.ns_to_stamp(max(int(e.stamp_ns), 0)), labels=[str(x) for x in e.labels],
                             score=_recall_score(e, kw))
            for e in entries
        ]
        resp.success = True
        resp.message = f"{len(entries)} entries"
        return resp

    @guarded_service("last_seen")
    def _srv_last_seen(self, req: LastSeen.Request, resp: LastSeen.Response) -> LastSeen.Response:
        ep = self._need(self.episodic, "episodic")
        if not req.label:
            raise ConfigError("last_seen needs a label")
        with self.memory_lock:
            seen = ep.last_seen(req.label)
        if seen is None:
            resp.found = False
            resp.message = f"{req.label!r} has not been seen"
            return resp
        resp.found = True
        resp.place_id = int(seen.place_id)
        resp.pose = cv.matrix_to_pose_msg(np.asarray(seen.T_world_camera, dtype=np.float64))
        resp.stamp = cv.ns_to_stamp(max(int(seen.stamp_ns), 0))
        resp.message = f"{req.label!r} last seen at place {seen.place_id}"
        return resp

    @guarded_service("answer")
    def _srv_answer(self, req: EpisodicAnswer.Request, resp: EpisodicAnswer.Response) -> EpisodicAnswer.Response:
        ep = self._need(self.episodic, "episodic")
        # the memory checks task, places and label and raises QueryError with the reason
        args = {"what_was_there": {"place_id": int(req.place_id)}, "first_visit": {"place_id": int(req.place_id)},
                "last_seen": {"label": req.label},
                "order": {"place_a": int(req.place_id), "place_b": int(req.place_b)}}.get(req.task, {})
        with self.memory_lock:
            ans = ep.answer(req.task, args)
        resp.place_id = -1
        if ans.prediction is None:
            resp.success = False
            resp.message = ans.reason
            return resp
        if isinstance(ans.prediction, list):
            resp.labels = [str(x) for x in ans.prediction]
            resp.score_labels = list(ans.scores)
            resp.scores = [float(x) for x in ans.scores.values()]
        else:
            resp.place_id = int(ans.prediction)
        resp.confidence = float(ans.confidence)
        resp.success = True
        resp.message = f"{req.task}: {ans.prediction} (confidence {ans.confidence:.2f})"
        return resp

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the worker thread (call before ``destroy_node``)."""
        self._stop.set()
        self._slot.close()
        self._worker.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    return spin_main(MemoryNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
