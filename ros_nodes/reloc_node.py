"""``reloc_node``: FaVoR relocalization as a service.

Loads a FaVoR map (``map_path``, a directory written by ``FavorMap.save``) or builds one
at start-up from the embedded simulator (``build_from: sim``), then answers ``~/relocalize``
(embodied_memory/srv/Relocalize): the camera pose ``T_world_camera`` of one image, with inliers,
a confidence in [0, 1] and a covariance derived from it. With ``publish_pose`` every successful
answer is also published on ``~/pose`` (PoseWithCovarianceStamped), e.g. for a localisation
monitor or an initial-pose topic.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.node import Node

from embodied_memory.srv import Relocalize
from spatial_memory.errors import ConfigError

from . import conversions as cv
from .common import guarded_service, node_kwargs, spin_main
from .params import ParamSpec, declare_params

SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("map_path", "", "FaVoR map directory to load (empty: build one, see build_from)."),
    ParamSpec("build_from", "sim", "Source of mapping frames when map_path is empty.", choices=("sim", "none")),
    ParamSpec("scene", "drake_living_room", "Simulator scene for build_from: sim."),
    ParamSpec("seed", 0, "Scene / trajectory seed for build_from: sim.", min=0, max=2**31 - 1),
    ParamSpec("frames", 60, "Mapping frames for build_from: sim.", min=2, max=100000),
    ParamSpec("width", 320, "Mapping image width for build_from: sim.", min=16, max=4096),
    ParamSpec("height", 240, "Mapping image height for build_from: sim.", min=16, max=4096),
    ParamSpec("world_frame", "map", "frame_id of the returned poses."),
    ParamSpec("publish_pose", True, "Publish successful results on ~/pose."),
    ParamSpec("min_confidence", 0.0, "Answers below this confidence are reported as failures.", min=0.0, max=1.0),
)


def pose_covariance(confidence: float) -> list[float]:
    """Row-major 6x6 covariance (x, y, z, roll, pitch, yaw) from a confidence in [0, 1].

    A heuristic, documented as such: sigma_t = 0.02 + 0.5 (1 - c) metres and
    sigma_r = 0.01 + 0.2 (1 - c) radians, independent axes. FaVoR does not estimate a covariance;
    this lets consumers (e.g. robot_localization) weight the answer by the confidence.
    """
    c = float(np.clip(confidence, 0.0, 1.0))
    st, sr = 0.02 + 0.5 * (1.0 - c), 0.01 + 0.2 * (1.0 - c)
    cov = np.diag([st**2] * 3 + [sr**2] * 3)
    return cov.reshape(-1).tolist()


def load_relocalizer(p: dict[str, Any]) -> Any:
    """The relocalizer the parameters describe (imports happen here so an injected one needs none).

    Raises:
        ConfigError: FaVoR not importable, or neither ``map_path`` nor ``build_from: sim``.
        MapFormatError, EmptyMapError: from loading / building the map.
    """
    try:
        from relocalization.favor import FavorMap, FavorRelocalizer
    except ImportError as e:
        raise ConfigError(f"FaVoR relocalizer is not importable: {e}") from None
    if p["map_path"]:
        return FavorRelocalizer(FavorMap.load(p["map_path"]))
    if p["build_from"] == "none":
        raise ConfigError("reloc_node needs map_path, or build_from: sim")
    from sim.simulator import make_sim_source

    src = make_sim_source(p["scene"], seed=p["seed"], frames=p["frames"], width=p["width"], height=p["height"],
                          progress=False)
    return FavorRelocalizer(FavorMap.build(list(src), progress=False))


class RelocNode(Node):
    """Relocalization server; ``relocalizer`` may be injected (anything with ``locate``)."""

    def __init__(
        self,
        name: str = "reloc",
        parameter_overrides: dict[str, Any] | None = None,
        remappings: tuple[tuple[str, str], ...] = (),
        namespace: str = "",
        context: Any = None,
        relocalizer: Any = None,
    ) -> None:
        super().__init__(name, **node_kwargs(parameter_overrides, remappings, namespace, context, SPECS))
        self.p = declare_params(self, SPECS)
        self.service_errors = 0
        self.answered = 0
        self._lock = threading.Lock()
        self.relocalizer = relocalizer if relocalizer is not None else load_relocalizer(self.p)
        self.pub_pose = self.create_publisher(PoseWithCovarianceStamped, "~/pose", 10) if self.p["publish_pose"] else None
        self.create_service(Relocalize, "~/relocalize", self._srv_relocalize)
        self.get_logger().info("reloc_node up")

    @guarded_service("relocalize")
    def _srv_relocalize(self, req: Relocalize.Request, resp: Relocalize.Response) -> Relocalize.Response:
        rgb = cv.rgb_msg_to_numpy(req.image)
        intr = cv.camera_info_to_intrinsics(req.camera_info)
        intr.check_image(rgb.shape, "relocalize image")
        prior = cv.pose_msg_to_matrix(req.prior, "prior") if req.use_prior else None
        with self._lock:
            res = self.relocalizer.locate(rgb, intr, prior=prior)
        self.answered += 1
        resp.inliers = int(max(getattr(res, "inliers", 0), 0))
        resp.confidence = float(getattr(res, "confidence", 0.0))
        resp.message = str(getattr(res, "message", ""))
        ok = bool(res.success) and res.T_world_camera is not None and resp.confidence >= self.p["min_confidence"]
        resp.success = ok
        if not ok:
            if res.success:
                resp.message = f"confidence {resp.confidence:.2f} below min_confidence {self.p['min_confidence']:.2f}"
            return resp
        stamp = cv.stamp_to_ns(req.image.header.stamp) or self.get_clock().now().nanoseconds
        out = PoseWithCovarianceStamped()
        out.header = cv.make_header(stamp, self.p["world_frame"])
        out.pose.pose = cv.matrix_to_pose_msg(np.asarray(res.T_world_camera, dtype=np.float64))
        out.pose.covariance = pose_covariance(resp.confidence)
        resp.pose = out
        if self.pub_pose is not None:
            self.pub_pose.publish(out)
        return resp


def main(args: list[str] | None = None) -> int:
    return spin_main(RelocNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
