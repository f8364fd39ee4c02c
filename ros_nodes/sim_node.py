"""``sim_node``: publishes the embedded simulator (or a dataset / rosbag2) as a ROS RGB-D camera.

Outputs (relative names): ``camera/color/image_raw`` (rgb8), ``camera/depth/image_raw`` (32FC1
metres or 16UC1 millimetres), ``camera/color/camera_info``, ``camera/pose`` (PoseStamped,
T_world_camera of the optical frame), ``/tf`` (``world_frame`` -> ``camera_frame``), ``/clock``,
the simulator's ground-truth ``camera/instances/image_raw`` (16UC1/32SC1 instance ids) with
``camera/instances/labels`` (std_msgs/String, JSON ``{id: label}``, latched) and ``~/done`` (std_msgs/Bool, latched; True once a finite stream has been fully published).

Two ways to drive the camera (``mode``):
  * ``trajectory``: the frames of a source (the simulator's scripted trajectory via
    :func:`sim.simulator.make_sim_source`, or ``source: dataset`` with ``source_path`` opened by
    :func:`sim.datasets.open_dataset`, which also reads rosbag2 directories), one per timer tick
    at ``rate`` Hz; ``prerender`` renders them all first (steady rate, e.g. for benchmarks) and
    ``loop`` repeats them.
  * ``cmd_vel``: a :class:`sim.agent.Agent` in the scene integrates ``cmd_vel`` (Twist: linear.x,
    linear.y in the body frame, angular.z) each tick; a move into an obstacle is refused.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any, Iterator

import numpy as np
from geometry_msgs.msg import PoseStamped, Twist
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Bool, String

from spatial_memory.errors import ConfigError, EmemError, InvalidPoseError
from spatial_memory.types import CameraIntrinsics, Frame

from . import conversions as cv
from .common import node_kwargs, spin_main
from .params import ParamSpec, declare_params, qos_profile

SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("source", "sim", "Frame source.", choices=("sim", "dataset")),
    ParamSpec("source_path", "", "Dataset folder or rosbag2 directory (source: dataset)."),
    ParamSpec("scene", "drake_living_room", "Simulator scene name (sim.scenes.SCENE_NAMES)."),
    ParamSpec("seed", 0, "Seed of the scene (apartment) and trajectory.", min=0, max=2**31 - 1),
    ParamSpec("trajectory", "explore", "Scripted trajectory kind.", choices=("explore", "loop")),
    ParamSpec("frames", 100, "Frames of the scripted trajectory.", min=1, max=1_000_000),
    ParamSpec("width", 640, "Image width (px).", min=8, max=4096),
    ParamSpec("height", 480, "Image height (px).", min=8, max=4096),
    ParamSpec("hfov_deg", 70.0, "Horizontal field of view (deg).", min=1.0, max=179.0),
    ParamSpec("look_around_deg", 0.0, "Head-tilt sweep of the exploration: up by this much and back every 24 "
              "frames, so floor-level and ceiling objects are both seen (0 = level camera).", min=0.0, max=60.0),
    ParamSpec("camera_height", 1.0, "Camera height above the floor (m).", min=0.05, max=3.0),
    ParamSpec("lighting", "default", "Scene lighting.", choices=("default", "changed")),
    ParamSpec("mode", "trajectory", "Scripted trajectory or cmd_vel teleoperation.", choices=("trajectory", "cmd_vel")),
    ParamSpec("rate", 10.0, "Publishing rate (Hz).", min=0.1, max=1000.0),
    ParamSpec("max_frames", 0, "Stop after this many published frames (0: the whole source, forever for "
              "cmd_vel or loop).", min=0, max=2**31 - 1),
    ParamSpec("loop", False, "Restart the source when it ends."),
    ParamSpec("prerender", False, "Render/load every frame before publishing (steady rate)."),
    ParamSpec("restamp", True, "Stamp messages with the node clock instead of the source's stamps."),
    ParamSpec("start_delay", 0.0, "Seconds to wait after start-up before the first frame.", min=0.0, max=600.0),
    ParamSpec("wait_for_subscribers", 0, "Hold the first frame until the colour image topic has this many "
              "subscribers (so a consumer started alongside misses nothing).", min=0, max=100),
    ParamSpec("world_frame", "map", "Frame of the published poses and the /tf parent."),
    ParamSpec("camera_frame", "camera_color_optical_frame", "Optical frame of the images and the /tf child."),
    ParamSpec("depth_encoding", "32FC1", "Encoding of the depth image.", choices=("32FC1", "16UC1")),
    ParamSpec("publish_tf", True, "Publish world_frame -> camera_frame on /tf."),
    ParamSpec("publish_clock", True, "Publish the frame stamps on /clock."),
    ParamSpec("publish_instances", True, "Publish the ground-truth instance-id image and its id -> label map "
              "(camera/instances/image_raw, camera/instances/labels) when the source has them."),
    ParamSpec("qos.reliability", "reliable", "Reliability of the camera publishers.", choices=("reliable", "best_effort")),
    ParamSpec("qos.depth", 5, "History depth of the camera publishers.", min=1, max=100),
)


def open_source(p: dict[str, Any]):
    """The frame source the parameters describe (``sim`` or ``dataset``)."""
    if p["source"] == "sim":
        from sim.simulator import make_sim_source

        return make_sim_source(p["scene"], seed=p["seed"], frames=p["frames"], width=p["width"], height=p["height"],
                               hfov_deg=p["hfov_deg"], trajectory=p["trajectory"], lighting=p["lighting"],
                               camera_height=p["camera_height"], rate_hz=p["rate"], progress=False,
                               look_around_deg=p["look_around_deg"])
    if not p["source_path"]:
        raise ConfigError("source: dataset needs source_path (a dataset folder or a rosbag2 directory)")
    from sim.datasets import open_dataset

    return open_dataset(p["source_path"])


class SimNode(Node):
    """Publishes frames from a source (or an ``Agent`` under cmd_vel) at ``rate``."""

    def __init__(
        self,
        name: str = "sim",
        parameter_overrides: dict[str, Any] | None = None,
        remappings: tuple[tuple[str, str], ...] = (),
        namespace: str = "",
        context: Any = None,
        source: Any = None,
    ) -> None:
        super().__init__(name, **node_kwargs(parameter_overrides, remappings, namespace, context, SPECS))
        self.p = declare_params(self, SPECS)
        self.published = 0
        self.skipped = 0
        self.done = False
        self._lock = threading.Lock()
        qos = qos_profile(self.p["qos.reliability"], self.p["qos.depth"])
        self.pub_rgb = self.create_publisher(Image, "camera/color/image_raw", qos)
        self.pub_depth = self.create_publisher(Image, "camera/depth/image_raw", qos)
        self.pub_info = self.create_publisher(CameraInfo, "camera/color/camera_info", qos)
        self.pub_pose = self.create_publisher(PoseStamped, "camera/pose", qos)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_done = self.create_publisher(Bool, "~/done", latched)
        self.pub_done.publish(Bool(data=False))
        self.pub_tf = None
        if self.p["publish_tf"]:
            from tf2_msgs.msg import TFMessage

            self._TFMessage = TFMessage
            self.pub_tf = self.create_publisher(TFMessage, "/tf", qos_profile("reliable", 100))
        self.pub_clock = self.create_publisher(Clock, "/clock", 10) if self.p["publish_clock"] else None
        self.pub_ids = self.pub_labels = None
        self._labels_sent: dict[int, str] | None = None
        if self.p["publish_instances"]:
            self.pub_ids = self.create_publisher(Image, "camera/instances/image_raw", qos)
            self.pub_labels = self.create_publisher(String, "camera/instances/labels", latched)

        self._twist = np.zeros(3)  # vx, vy (body frame, m/s), wz (rad/s)
        self._frames: Iterator[Frame] | None = None
        self._agent = self._renderer = None
        if self.p["mode"] == "cmd_vel":
            self._setup_agent()
            self.create_subscription(Twist, "cmd_vel", self._on_cmd_vel, 10)
        else:
            src = source if source is not None else open_source(self.p)
            self._source = src
            frames: Any = list(src) if self.p["prerender"] else src
            if self.p["prerender"] and not frames:
                raise ConfigError(f"source {getattr(src, 'name', src)!r} yielded no frames")
            self._frames = itertools.cycle(frames) if self.p["loop"] else iter(frames)
        self._start = time.monotonic() + self.p["start_delay"]
        self._timer = self.create_timer(1.0 / self.p["rate"], self._tick)
        self.get_logger().info(f"sim_node up: mode={self.p['mode']}, source={self.p['source']}, rate={self.p['rate']} Hz")

    # -- cmd_vel ------------------------------------------------------------------------------
    def _setup_agent(self) -> None:
        from sim.agent import Agent, AgentConfig
        from sim.renderer import Renderer
        from sim.simulator import resolve_lighting, resolve_scene

        scene = resolve_scene(self.p["scene"], self.p["seed"])
        intr = CameraIntrinsics.from_fov(self.p["width"], self.p["height"], self.p["hfov_deg"])
        self._agent = Agent(scene, AgentConfig(camera_height=self.p["camera_height"], intrinsics=intr))
        self._agent.reset_random(np.random.default_rng(self.p["seed"]))
        self._renderer = Renderer(scene, resolve_lighting(self.p["lighting"], self.p["seed"]))
        self._intr = intr

    def _on_cmd_vel(self, msg: Twist) -> None:
        v = np.array([msg.linear.x, msg.linear.y, msg.angular.z], dtype=np.float64)
        self._twist = v if np.all(np.isfinite(v)) else np.zeros(3)

    def _agent_frame(self, stamp_ns: int) -> Frame:
        a, dt = self._agent, 1.0 / self.p["rate"]
        vx, vy, wz = self._twist
        yaw = a.yaw + wz * dt
        c, s = np.cos(yaw), np.sin(yaw)
        xy = a.xy + dt * np.array([c * vx - s * vy, s * vx + c * vy])
        try:
            a.set_pose(xy[0], xy[1], yaw, a.pitch, check_free=True)
        except InvalidPoseError:
            a.set_pose(a.xy[0], a.xy[1], yaw, a.pitch, check_free=False)  # blocked: turn in place only
            a.collisions += 1
        return self._renderer.render_frame(self._intr, a.T_world_camera, stamp_ns=stamp_ns, index=self.published)

    # -- publishing ---------------------------------------------------------------------------
    def _tick(self) -> None:
        if self.done or time.monotonic() < self._start:
            return
        if self.published == 0 and self.pub_rgb.get_subscription_count() < self.p["wait_for_subscribers"]:
            return
        if not self._lock.acquire(blocking=False):
            return  # the previous tick is still rendering
        try:
            now = self.get_clock().now().nanoseconds
            if self._agent is not None:
                frame = self._agent_frame(now)
            else:
                frame = next(self._frames, None)
                if frame is None:
                    self._finish()
                    return
            self.publish_frame(frame, now if self.p["restamp"] else int(frame.stamp_ns))
            if self.p["max_frames"] and self.published >= self.p["max_frames"]:
                self._finish()
        except (EmemError, ValueError) as e:
            self.skipped += 1
            self.get_logger().warning(f"skipping frame: {type(e).__name__}: {e}", throttle_duration_sec=2.0)
        except Exception as e:  # a timer callback must not raise into the executor
            self.skipped += 1
            self.get_logger().error(f"frame failed: {type(e).__name__}: {e}")
        finally:
            self._lock.release()

    def publish_frame(self, frame: Frame, stamp_ns: int) -> None:
        """Publish one frame's images, calibration, pose, TF and clock, all with ``stamp_ns``."""
        if frame.T_world_camera is None:
            raise InvalidPoseError(f"frame {frame.index} has no pose")
        fid, wf = self.p["camera_frame"], self.p["world_frame"]
        rgb = cv.numpy_to_image_msg(frame.rgb, "rgb8", stamp_ns, fid)
        depth_arr = frame.depth if frame.depth is not None else np.zeros(frame.rgb.shape[:2], np.float32)
        depth = cv.numpy_to_image_msg(depth_arr, self.p["depth_encoding"], stamp_ns, fid)
        info = cv.intrinsics_to_camera_info(frame.intrinsics, stamp_ns, fid)
        pose = cv.matrix_to_pose_stamped(frame.T_world_camera, stamp_ns, wf)
        if self.pub_tf is not None:
            tfm = self._TFMessage(transforms=[cv.matrix_to_transform_stamped(frame.T_world_camera, stamp_ns, wf, fid)])
            self.pub_tf.publish(tfm)
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=cv.ns_to_stamp(stamp_ns)))
        if self.pub_ids is not None and frame.instance_ids is not None:
            if frame.id_to_label != self._labels_sent:  # latched: sent once per change of the map
                self.pub_labels.publish(String(data=cv.labels_to_json(frame.id_to_label)))
                self._labels_sent = dict(frame.id_to_label)
            self.pub_ids.publish(cv.instances_to_image_msg(frame.instance_ids, stamp_ns, fid))
        self.pub_info.publish(info)
        self.pub_pose.publish(pose)
        self.pub_depth.publish(depth)
        self.pub_rgb.publish(rgb)
        self.published += 1

    def _finish(self) -> None:
        self.done = True
        self.pub_done.publish(Bool(data=True))
        self.get_logger().info(f"sim_node finished: {self.published} frames published, {self.skipped} skipped")


def main(args: list[str] | None = None) -> int:
    return spin_main(SimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
