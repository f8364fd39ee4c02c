"""The end-to-end experiment: one robot, one scene, all three memories, two sessions.

``emem experiment run --config config/experiments/demo.yaml --out runs/demo`` does, in order
(each stage isolated: a failing stage is recorded as ``{"status": "failed", "error": ...}`` in
``metrics.json`` and the run goes on with what it has):

1. ``scene``, ``render``  load the scene, plan an exploration trajectory, render the RGB-D stream;
2. ``reloc_build``  build the FaVoR map and the keyframe baseline from the same frames;
3. ``episodic_init``, ``stream``  feed the stream to the M3 and episodic memories, through the ROS 2
                  graph (``sim_node`` -> topics -> ``memory_node``, in-process bring-up on a
                  private DDS domain) or, with ``ros: false``, straight into the libraries;
4. ``queries``    a text query per object category, scored in 3D (top hit within
                  ``success_radius_m`` of an object of that category);
5. ``views``      M3 render vs simulator image at a held-out pose, and a text heat map;
6. ``kidnap``     held-out viewpoints (mapping lighting and a changed lighting) relocalized
                  by FaVoR and by the baseline, without a prior;
7. ``episodic``   the four episodic tasks on the recorded episode, per write strategy and budget;
8. ``save``       all maps to ``<out>/maps``;
9. ``session2``   a fresh process (``python -m emem.cli experiment resume``) loads the maps,
                  relocalizes the robot's restart views, maps a second (loop) episode and asks
                  the same questions again (``<out>/session2.json``);
10. ``bag``, ``rerun``, report: the rosbag2 of the stream, ``run.rrd``, ``report.html``,
                  ``metrics.json``.

Configuration: :class:`ExperimentConfig` (dataclasses with defaults) from YAML plus
``--set key.sub=value`` overrides.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import yaml

from spatial_memory.errors import ConfigError
from spatial_memory.geometry import pose_error
from spatial_memory.types import CameraIntrinsics, Frame

log = logging.getLogger("emem.experiment")

METRICS_VERSION = 1


# =============================================================================== configuration


@dataclass
class StreamConfig:
    """The robot's camera stream (session 1)."""

    frames: int = 200
    width: int = 320
    height: int = 240
    hfov_deg: float = 70.0
    camera_height: float = 1.0
    trajectory: str = "explore"
    rate_hz: float = 5.0  # stamps of the stream (the ROS graph is paced by the memory, not by this)
    look_around_deg: float = 0.0  # head-tilt sweep (up and back every 24 frames) so ceiling lights are seen


@dataclass
class M3Section:
    """The M3 memory and how text queries are scored."""

    extractors: list[str] = field(default_factory=lambda: ["labels"])
    iters_per_keyframe: int | None = None  # None: the mapper's default
    keyframe_translation_m: float | None = None
    keyframe_rotation_deg: float | None = None
    top_k: int = 3
    success_radius_m: float = 0.5


@dataclass
class RelocSection:
    """FaVoR, the keyframe baseline and the kidnapped-robot queries."""

    map_every: int = 2  # every k-th stream frame goes into the relocalization maps
    queries: int = 12
    trans_range: tuple[float, float] = (0.2, 0.8)
    rot_range_deg: tuple[float, float] = (5.0, 30.0)
    lighting_change: bool = True
    baseline: bool = True
    voxel_iterations: int | None = None  # None: FaVoR's default
    max_landmarks: int | None = None
    success_cm: float = 25.0  # a relocalization "works" below these errors
    success_deg: float = 5.0


@dataclass
class EpisodicSection:
    """The episodic memory during the stream and the strategy x budget evaluation."""

    budget: int = 32  # of the memory that runs online (in memory_node)
    strategy: str = "sat_pm"
    budgets: list[int] = field(default_factory=lambda: [8, 16, 32])
    strategies: list[str] = field(default_factory=lambda: ["fifo", "lifo", "mvfo", "lvfo", "sat_pm"])
    queries_per_task: int = 8
    place_radius: float = 2.0


@dataclass
class Session2Section:
    """The restart: a fresh process loads the maps and maps a second episode."""

    enabled: bool = True
    frames: int = 100
    trajectory: str = "loop"
    reloc_views: int = 5  # first frames of session 2 relocalized against the loaded FaVoR map
    tolerance: float = 0.15  # query success may drop by at most this much
    timeout_s: float = 900.0


@dataclass
class OutputSection:
    rerun: bool = True
    rerun_every: int = 5  # log every k-th frame's images into the .rrd
    bag: bool = True
    bag_storage: str = "mcap"


@dataclass
class ExperimentConfig:
    """Everything one run needs; ``emem experiment run --set a.b=v`` overrides any field."""

    name: str = "experiment"
    scene: str = "drake_living_room"
    seed: int = 0
    ros: bool = True
    domain_id: int | None = None  # None: derived from the process id
    stream: StreamConfig = field(default_factory=StreamConfig)
    m3: M3Section = field(default_factory=M3Section)
    reloc: RelocSection = field(default_factory=RelocSection)
    episodic: EpisodicSection = field(default_factory=EpisodicSection)
    session2: Session2Section = field(default_factory=Session2Section)
    output: OutputSection = field(default_factory=OutputSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        """Build from a (partial) nested dict; unknown keys raise :class:`ConfigError`."""
        return _build_dataclass(cls, d, "experiment")

    def validate(self) -> "ExperimentConfig":
        s = self.stream
        if s.frames < 4:
            raise ConfigError(f"stream.frames must be >= 4, got {s.frames}")
        if s.width < 32 or s.height < 24:
            raise ConfigError(f"stream resolution {s.width}x{s.height} is too small (>= 32x24)")
        if s.trajectory not in ("explore", "loop") or self.session2.trajectory not in ("explore", "loop"):
            raise ConfigError("trajectories must be 'explore' or 'loop'")
        if self.reloc.map_every < 1:
            raise ConfigError(f"reloc.map_every must be >= 1, got {self.reloc.map_every}")
        if any(int(b) < 1 for b in self.episodic.budgets) or self.episodic.budget < 1:
            raise ConfigError(f"episodic budgets must be >= 1, got {self.episodic.budgets}")
        if not self.m3.extractors:
            raise ConfigError("m3.extractors needs at least one extractor")
        if not 0.0 <= self.session2.tolerance <= 1.0:
            raise ConfigError(f"session2.tolerance must be in [0, 1], got {self.session2.tolerance}")
        return self


def _build_dataclass(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(fields)}")
    kw = {}
    for name, value in d.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            kw[name] = _build_dataclass(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise ConfigError(f"{where}.{name}: expected {len(default)} values, got {value!r}")
            kw[name] = tuple(type(x)(v) for x, v in zip(default, value))
        else:
            kw[name] = _coerce(value, default, f"{where}.{name}")
    return cls(**kw)


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Check ``value`` against the type of the field's default (ints may stand for floats)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    return value


def apply_overrides(d: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``["stream.frames=40", "ros=false"]`` applied to a nested dict (values parsed as YAML)."""
    out = copy.deepcopy(d)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """YAML file (or defaults when None) + ``key=value`` overrides -> validated config."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"experiment config {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
    return ExperimentConfig.from_dict(apply_overrides(data, overrides)).validate()


# =============================================================================== stages


class Stages:
    """Runs named stages, timing each and turning an exception into a recorded failure."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def run(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        log.info("stage %s ...", name)
        try:
            out = fn(*args, **kwargs)
        except Exception as e:  # one stage must not take the run down; the failure is reported
            dt = time.perf_counter() - t0
            self.records[name] = {"status": "failed", "seconds": dt, "error": f"{type(e).__name__}: {e}",
                                  "traceback": traceback.format_exc()[-3000:]}
            log.error("stage %s failed after %.1f s: %s: %s", name, dt, type(e).__name__, e)
            return None
        dt = time.perf_counter() - t0
        self.records[name] = {"status": "ok", "seconds": dt}
        log.info("stage %s done in %.1f s", name, dt)
        return out

    def skip(self, name: str, reason: str) -> None:
        self.records[name] = {"status": "skipped", "seconds": 0.0, "error": reason}

    def ok(self, name: str) -> bool:
        return self.records.get(name, {}).get("status") == "ok"


# =============================================================================== memories


def make_m3(cfg: ExperimentConfig) -> Any:
    """A fresh :class:`M3Memory` configured by the ``m3`` section."""
    from spatial_memory.m3 import ExtractorSpec, M3Config, M3Memory

    mc = M3Config(extractors=[ExtractorSpec(name) for name in cfg.m3.extractors])
    mc.mapper.seed = int(cfg.seed)
    if cfg.m3.iters_per_keyframe is not None:
        mc.mapper.iters_per_keyframe = int(cfg.m3.iters_per_keyframe)
    if cfg.m3.keyframe_translation_m is not None:
        mc.mapper.keyframe_translation_m = float(cfg.m3.keyframe_translation_m)
    if cfg.m3.keyframe_rotation_deg is not None:
        mc.mapper.keyframe_rotation_deg = float(cfg.m3.keyframe_rotation_deg)
    return M3Memory(mc)


def make_episodic(cfg: ExperimentConfig, budget: int | None = None, strategy: str | None = None,
                  models: Any = None) -> Any:
    from spatial_memory.episodic.memory import EpisodicConfig, EpisodicMemory

    ec = EpisodicConfig(budget=int(budget or cfg.episodic.budget), strategy=strategy or cfg.episodic.strategy,
                        place_radius=float(cfg.episodic.place_radius))
    return EpisodicMemory(ec, models=models)


class GroundTruthSegmentation:
    """Re-attaches the simulator's instance-id image to frames that arrived over ROS.

    The ROS graph carries rgb, depth, camera info and pose; the ``labels`` extractor of M3 and
    the episodic memory's "seen" labels read a per-pixel segmentation that, on a robot, a
    segmentation node would publish. Here the simulator is that node: frames are matched by
    stamp (the graph runs with ``restamp: false``) to the rendered frame they came from.
    """

    def __init__(self, frames: Sequence[Frame]) -> None:
        self._by_stamp = {int(f.stamp_ns): f for f in frames}
        self.matched = 0
        self.unmatched = 0

    def annotate(self, frame: Any) -> Any:
        if not isinstance(frame, Frame) or frame.instance_ids is not None:
            return frame
        src = self._by_stamp.get(int(frame.stamp_ns))
        if src is None or src.instance_ids is None or src.instance_ids.shape != frame.rgb.shape[:2]:
            self.unmatched += 1
            return frame
        self.matched += 1
        return dataclasses.replace(frame, instance_ids=src.instance_ids, id_to_label=dict(src.id_to_label))


class Annotated:
    """A memory whose ``ingest`` first passes the frame through a :class:`GroundTruthSegmentation`;
    every other attribute is the wrapped memory's."""

    def __init__(self, memory: Any, segmentation: GroundTruthSegmentation) -> None:
        object.__setattr__(self, "_memory", memory)
        object.__setattr__(self, "_seg", segmentation)

    def ingest(self, frame: Any) -> Any:
        return self._memory.ingest(self._seg.annotate(frame))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._memory, name)

    def __len__(self) -> int:
        return len(self._memory)


# =============================================================================== sessions


def _hit_dict(h: Any) -> dict[str, Any]:
    return {"label": str(h.label), "position": [float(x) for x in np.asarray(h.position).reshape(3)],
            "extent": [float(x) for x in np.asarray(h.extent).reshape(3)], "score": float(h.score),
            "support": int(h.support)}


class DirectSession:
    """The memories called as libraries (``ros: false``)."""

    transport = "direct"

    def __init__(self, m3: Any, episodic: Any, relocalizers: dict[str, Any] | None = None) -> None:
        self.m3, self.episodic = m3, episodic
        self.relocalizers = dict(relocalizers or {})

    def __enter__(self) -> "DirectSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ingest(self, frames: Sequence[Frame], desc: str = "ingest") -> dict[str, Any]:
        from emem.viz import progress

        n_kf = 0
        t0 = time.perf_counter()
        for f in progress(frames, desc):
            r = self.m3.ingest(f)
            n_kf += int(bool(r.integrated))
            if self.episodic is not None:
                self.episodic.ingest(f)
        return {"frames_sent": len(frames), "frames_received": len(frames), "integrated": n_kf,
                "seconds": time.perf_counter() - t0}

    def query_text(self, text: str, top_k: int) -> list[dict[str, Any]]:
        return [_hit_dict(h) for h in self.m3.query_text(text, top_k=top_k)]

    def render(self, intr: CameraIntrinsics, T: np.ndarray, text: str | None) -> tuple[np.ndarray, np.ndarray | None]:
        v = self.m3.render(intr, T, text=text, decode=False)
        return v.rgb, v.heatmap

    def relocalize(self, method: str, frame: Frame) -> tuple[bool, np.ndarray | None, int]:
        r = self.relocalizers[method].locate(frame.rgb, frame.intrinsics)
        return bool(r.success), r.T_world_camera, int(r.inliers)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.m3.save(directory / "m3")
        if self.episodic is not None:
            self.episodic.save(directory / "episodic")

    def close(self) -> None:
        pass


def ros_available() -> tuple[bool, str]:
    """Whether rclpy and the built ``embodied_memory`` interfaces import (and why not)."""
    try:
        import rclpy  # noqa: F401

        import embodied_memory.srv  # noqa: F401
    except ImportError as e:
        return False, (f"ROS 2 interfaces not importable ({e}); build them with `bash scripts/build_ros_interfaces.sh` "
                       "and run through `bash scripts/with_env.sh`")
    return True, ""


class RosSession:
    """The same operations through a ROS 2 graph started in this process.

    ``sim_node`` publishes the rendered frames on the camera topics (real DDS on loopback, a
    private domain), ``memory_node`` integrates them into the injected memories, and queries,
    renders, map saves and relocalizations are service calls from a separate client node on
    its own rclpy context. Publishing is paced by the memory: frame ``i + 1`` leaves only once
    ``memory_node`` has received and processed frame ``i`` (or after ``frame_timeout_s``), so
    the run is reproducible instead of depending on how loaded the machine is.
    """

    transport = "ros"

    def __init__(self, frames: Sequence[Frame], m3: Any, episodic: Any, relocalizers: dict[str, Any] | None = None,
                 domain_id: int | None = None, frame_timeout_s: float = 120.0, rate_hz: float = 100.0) -> None:
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        os.environ.pop("ROS_LOCALHOST_ONLY", None)
        self.frames = list(frames)
        self.segmentation = GroundTruthSegmentation(self.frames)
        self.m3 = m3
        self.episodic = episodic
        self.relocalizers = dict(relocalizers or {})
        self.domain_id = int(domain_id) if domain_id is not None else 100 + os.getpid() % 100
        self.frame_timeout_s = frame_timeout_s
        self.arrival_timeout_s = 10.0
        self.rate_hz = rate_hz
        self.up: Any = None
        self._client: Any = None
        self.sent = 0
        self.gate_timeouts = 0
        self._t_stream = 0.0
        self._go = threading.Event()  # set by ingest(): nothing is published before
        self._closing = False

    # -- graph --------------------------------------------------------------------------------
    def _gated(self) -> Iterator[Frame]:
        """The frames, each released only after memory_node finished the previous one."""
        from emem.viz import progress

        self._go.wait()
        for i, f in enumerate(progress(self.frames, "ros stream")):
            if self._closing:
                return
            if i > 0:
                self._wait_processed(i)
            self.sent = i + 1
            yield f
        self._wait_processed(len(self.frames))

    def _wait_processed(self, n: int) -> None:
        """Block until memory_node has received ``n`` frame groups and has none pending.

        A group that never arrives (lost or not synchronised) releases the gate after
        ``arrival_timeout_s``; a slow integration is waited for up to ``frame_timeout_s``.
        """
        mem = self.up.nodes.get("memory") if self.up is not None else None
        if mem is None:
            return
        t0 = time.monotonic()
        while True:
            st = mem.stats()
            if st["pending"] == 0 and (st["received"] >= n or time.monotonic() - t0 > self.arrival_timeout_s):
                if st["received"] < n:
                    self.gate_timeouts += 1
                return
            if time.monotonic() - t0 > self.frame_timeout_s:
                self.gate_timeouts += 1
                return
            time.sleep(0.002)

    def start(self) -> "RosSession":
        from ros_nodes.bringup import Bringup
        from ros_nodes.graph import NodeDescription

        nodes = [
            NodeDescription("sim", "sim_node", parameters={
                "mode": "trajectory", "rate": float(self.rate_hz), "restamp": False, "publish_clock": False,
                "publish_tf": False, "wait_for_subscribers": 1, "qos.reliability": "reliable", "qos.depth": 5}),
            NodeDescription("memory", "memory_node", parameters={
                "pose_source": "pose", "slop": 0.001, "cloud_period": 0.0, "diagnostics_period": 2.0,
                "qos.image_reliability": "reliable"}),
        ]
        inject: dict[str, dict[str, Any]] = {
            "sim": {"source": self._gated()},
            "memory": {"m3": Annotated(self.m3, self.segmentation),
                       "episodic": Annotated(self.episodic, self.segmentation) if self.episodic is not None else None},
        }
        if "favor" in self.relocalizers:
            nodes.append(NodeDescription("reloc", "reloc_node", parameters={"build_from": "none", "publish_pose": False}))
            inject["reloc"] = {"relocalizer": self.relocalizers["favor"]}
        self.up = Bringup(nodes, inject=inject, num_threads=6, domain_id=self.domain_id).start()
        self._client = _ServiceClient(self.domain_id)
        return self

    def __enter__(self) -> "RosSession":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ingest(self, frames: Sequence[Frame] | None = None, desc: str = "") -> dict[str, Any]:
        """Release the stream and wait until sim_node has published every frame and memory_node
        has processed them. The graph streams the frames it was started with; ``frames``, if
        given, must be those (it is accepted for interface parity with :class:`DirectSession`)."""
        if frames is not None and len(frames) != len(self.frames):
            raise ConfigError(f"this ROS session streams its {len(self.frames)} frames, not {len(frames)} others")
        sim, mem = self.up.node("sim"), self.up.node("memory")
        self._t_stream = time.perf_counter()
        self._go.set()
        limit = self.frame_timeout_s * (len(self.frames) + 2)
        if not self.up.spin_until(lambda: sim.done, timeout_s=limit):
            raise TimeoutError(f"sim_node published {sim.published}/{len(self.frames)} frames in {limit:.0f} s")
        self.up.spin_until(lambda: mem.stats()["pending"] == 0, timeout_s=self.frame_timeout_s)
        st = mem.stats()
        return {"frames_sent": sim.published, "frames_received": st["received"], "integrated": st["integrated"],
                "not_integrated": st["not_integrated"], "dropped": st["dropped"], "skipped": st["skipped"],
                "errors": st["errors"], "gate_timeouts": self.gate_timeouts,
                "segmentation_matched": self.segmentation.matched,
                "segmentation_unmatched": self.segmentation.unmatched,
                "mean_integration_s": st["mean_integration_s"], "seconds": time.perf_counter() - self._t_stream}

    def query_text(self, text: str, top_k: int) -> list[dict[str, Any]]:
        from embodied_memory.srv import QueryText

        resp = self._client.call(QueryText, "/memory/query_text", QueryText.Request(text=text, top_k=int(top_k)))
        if not resp.success:
            raise RuntimeError(f"query_text {text!r} failed: {resp.message}")
        return [{"label": h.label, "position": [h.position.x, h.position.y, h.position.z],
                 "extent": [h.extent.x, h.extent.y, h.extent.z], "score": float(h.score), "support": int(h.support)}
                for h in resp.hits]

    def render(self, intr: CameraIntrinsics, T: np.ndarray, text: str | None) -> tuple[np.ndarray, np.ndarray | None]:
        from embodied_memory.srv import RenderView
        from ros_nodes import conversions as cv

        req = RenderView.Request(pose=cv.matrix_to_pose_msg(T), camera_info=cv.intrinsics_to_camera_info(intr),
                                 query_text=text or "")
        resp = self._client.call(RenderView, "/memory/render_view", req)
        if not resp.success:
            raise RuntimeError(f"render_view failed: {resp.message}")
        heat = cv.image_msg_to_numpy(resp.heatmap) if resp.heatmap.width else None
        return cv.rgb_msg_to_numpy(resp.rgb), heat

    def relocalize(self, method: str, frame: Frame) -> tuple[bool, np.ndarray | None, int]:
        if method != "favor":  # the baseline has no node; it is called as a library
            r = self.relocalizers[method].locate(frame.rgb, frame.intrinsics)
            return bool(r.success), r.T_world_camera, int(r.inliers)
        from embodied_memory.srv import Relocalize
        from ros_nodes import conversions as cv

        req = Relocalize.Request(image=cv.numpy_to_image_msg(frame.rgb, "rgb8", int(frame.stamp_ns), frame.frame_id),
                                 camera_info=cv.intrinsics_to_camera_info(frame.intrinsics), use_prior=False)
        resp = self._client.call(Relocalize, "/reloc/relocalize", req)
        T = cv.pose_msg_to_matrix(resp.pose.pose.pose) if resp.success else None
        return bool(resp.success), T, int(resp.inliers)

    def save(self, directory: Path) -> None:
        from embodied_memory.srv import FilePath

        resp = self._client.call(FilePath, "/memory/save_map", FilePath.Request(path=str(directory)))
        if not resp.success:
            raise RuntimeError(f"save_map failed: {resp.message}")

    def close(self) -> None:
        self._closing = True
        self._go.set()
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.up is not None:
            self.up.stop()
            self.up = None


class _ServiceClient:
    """A client node on its own rclpy context (so calls cross DDS like any other process's)."""

    def __init__(self, domain_id: int) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.ctx = rclpy.Context()
        rclpy.init(args=[], context=self.ctx, domain_id=domain_id)
        self.node = Node("experiment_client", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._clients: dict[str, Any] = {}

    def call(self, srv_type: Any, name: str, request: Any, timeout_s: float = 300.0) -> Any:
        cli = self._clients.get(name)
        if cli is None:
            cli = self._clients[name] = self.node.create_client(srv_type, name)
        if not cli.wait_for_service(timeout_sec=30.0):
            raise TimeoutError(f"service {name} is not available")
        fut = cli.call_async(request)
        self.executor.spin_until_future_complete(fut, timeout_sec=timeout_s)
        if not fut.done():
            raise TimeoutError(f"service {name} did not answer within {timeout_s:.0f} s")
        return fut.result()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        if self.ctx.ok():
            rclpy.shutdown(context=self.ctx)


# =============================================================================== evaluation pieces


def render_stream(scene: Any, cfg: ExperimentConfig, frames: int, trajectory: str, seed: int,
                  start_ns: int = 0, name: str = "stream") -> list[Frame]:
    """Render ``frames`` views along a seeded ``trajectory`` through ``scene`` (a Scene object)."""
    from sim.simulator import make_sim_source

    s = cfg.stream
    src = make_sim_source(scene, seed=seed, frames=frames, width=s.width, height=s.height, hfov_deg=s.hfov_deg,
                          trajectory=trajectory, camera_height=s.camera_height, rate_hz=s.rate_hz, progress=False,
                          look_around_deg=s.look_around_deg)
    src.start_ns = int(start_ns)
    from emem.viz import progress
    from spatial_memory.errors import EmemError

    out = []
    for i in progress(range(len(src)), f"render {name}"):
        try:
            out.append(src.frame(i))
        except (EmemError, ValueError) as e:  # a pose the renderer rejects: skip it, as a stream would
            src.stats.skip(f"frame {i}: {e}")
            log.warning("render %s: skipping frame %d: %s", name, i, e)
    if not out:
        raise ConfigError(f"the {trajectory} trajectory through {scene.name} yielded no frames")
    return out


def score_text_queries(session: Any, scene: Any, top_k: int, radius_m: float) -> dict[str, Any]:
    """One query per object category; success = the top hit lies within ``radius_m`` of an object
    of that category (distance to its axis-aligned box, 0 inside)."""
    from emem.viz import progress
    from emem.m3_eval import aabb_distance

    per: dict[str, Any] = {}
    times = []
    for label in progress(scene.labels(), "text queries"):
        t0 = time.perf_counter()
        hits = session.query_text(label, top_k)
        times.append(time.perf_counter() - t0)
        objs = [o for o in scene.objects if o.label == label]
        if not hits:
            per[label] = {"success": False, "distance_m": None, "hits": []}
            continue
        p = np.asarray(hits[0]["position"], np.float64)
        d = min(aabb_distance(p, np.asarray(o.aabb_min), np.asarray(o.aabb_max)) for o in objs)
        per[label] = {"success": bool(d <= radius_m), "distance_m": float(d), "score": hits[0]["score"], "hits": hits}
    rate = float(np.mean([v["success"] for v in per.values()])) if per else 0.0
    dists = [v["distance_m"] for v in per.values() if v["distance_m"] is not None]
    return {"success_rate": rate, "categories": len(per), "median_distance_m": float(np.median(dists)) if dists else None,
            "query_ms": 1000.0 * float(np.mean(times)) if times else None, "radius_m": radius_m, "per_label": per}


def _memo_xfeat(top_k: int) -> Any:
    """An XFeat extractor that remembers each image's result, so the keyframe baseline reuses the
    network pass FaVoR already made on the same mapping frames (halves the map-building time)."""
    from relocalization.features import XFeatFeatures

    class MemoXFeat(XFeatFeatures):
        def __init__(self) -> None:
            super().__init__(top_k=top_k)
            self.memo: dict[tuple[int, int], Any] = {}
            self.hits = 0
            self.enabled = True  # switched off after the build: query images must never hit the memo

        def detect_and_dense(self, rgb: np.ndarray) -> Any:
            if not self.enabled:
                return super().detect_and_dense(rgb)
            key = (id(rgb), int(rgb.ctypes.data))  # the mapping frames stay alive while both maps build
            if key in self.memo:
                self.hits += 1
                return self.memo[key]
            out = self.memo[key] = super().detect_and_dense(rgb)
            return out

    return MemoXFeat()


def build_relocalizers(frames: Sequence[Frame], cfg: ExperimentConfig) -> dict[str, Any]:
    """FaVoR map (+ relocalizer) and, if enabled, the keyframe baseline, from every k-th frame."""
    from relocalization.favor import FavorConfig, FavorMap, FavorRelocalizer

    mapping = list(frames[:: cfg.reloc.map_every])
    fc = FavorConfig()
    if cfg.reloc.voxel_iterations is not None:
        fc.voxel.iterations = int(cfg.reloc.voxel_iterations)
    if cfg.reloc.max_landmarks is not None:
        fc.voxel.max_landmarks = int(cfg.reloc.max_landmarks)
    ex = _memo_xfeat(fc.map.top_k) if fc.map.features == "xfeat" else None
    fmap = FavorMap.build(mapping, fc, progress=_show_progress(), extractor=ex)
    out: dict[str, Any] = {"favor": FavorRelocalizer(fmap)}
    if cfg.reloc.baseline:
        from relocalization.baseline import BaselineConfig, KeyframeBaseline

        bc = BaselineConfig(top_k=fc.map.top_k)
        out["baseline"] = KeyframeBaseline.build(mapping, bc, progress=_show_progress(),
                                                 extractor=ex if ex is not None and bc.features == "xfeat" else None)
    if ex is not None:
        log.info("relocalization maps: %d of %d feature extractions reused", ex.hits, 2 * len(mapping))
        ex.memo.clear()
        ex.enabled = False
    return out


def _show_progress() -> bool:
    env = os.environ.get("EMEM_PROGRESS")
    return (env == "1") if env in ("0", "1") else sys.stderr.isatty()


def reloc_map_stats(relocalizers: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, r in relocalizers.items():
        m = getattr(r, "map", r)
        out[name] = {"map_bytes": int(getattr(m, "nbytes", 0)), "size": int(len(m)),
                     **{k: v for k, v in (getattr(m, "stats", {}) or {}).items() if isinstance(v, (int, float))}}
    return out


def relocalize_frames(session: Any, methods: Sequence[str], frames: Sequence[Frame], desc: str) -> dict[str, Any]:
    """Relocalize every frame (no prior) with each method; errors against the frames' true poses."""
    from emem.viz import progress
    from relocalization.evaluate import summarize

    out = {}
    for m in methods:
        em, ed, ts, est = [], [], [], []
        for f in progress(frames, f"{desc} {m}"):
            t0 = time.perf_counter()
            ok, T, _ = session.relocalize(m, f)
            ts.append(time.perf_counter() - t0)
            if ok and T is not None:
                dt, dr = pose_error(T, f.T_world_camera)
                est.append(np.asarray(T).tolist())
            else:
                dt, dr = float("inf"), float("inf")
                est.append(None)
            em.append(dt)
            ed.append(dr)
        r = summarize(np.array(em), np.array(ed), np.array(ts))
        r["errors_cm"] = [e * 100.0 for e in em]
        r["errors_deg"] = list(ed)
        r["estimates"] = est
        out[m] = r
    return out


def kidnap(session: Any, scene: Any, poses: Sequence[np.ndarray], intr: CameraIntrinsics,
           cfg: ExperimentConfig) -> dict[str, Any]:
    """Held-out viewpoints (and the same views under changed lighting), relocalized by every method."""
    from sim.simulator import SimFrameSource
    from sim.trajectories import heldout_query_viewpoints

    rc = cfg.reloc
    Ts = heldout_query_viewpoints(scene, list(poses), rc.queries, seed=cfg.seed + 1000, trans_range=rc.trans_range,
                                  rot_range_deg=rc.rot_range_deg, intrinsics=intr)
    conditions = {"mapping_lighting": None}
    if rc.lighting_change:
        conditions["changed_lighting"] = "changed"
    results: dict[str, Any] = {}
    methods = sorted(session.relocalizers)
    for cond, light in conditions.items():
        src = SimFrameSource.from_poses(scene, Ts, intr, lighting=light, seed=cfg.seed)
        src.progress = False
        queries = [src.frame(i) for i in range(len(src))]
        for m, r in relocalize_frames(session, methods, queries, f"kidnap {cond}").items():
            results[f"{m}/{cond}"] = r
    for key, r in results.items():
        ok = np.isfinite(r["errors_cm"]) & (np.asarray(r["errors_cm"]) <= rc.success_cm) & \
            (np.asarray(r["errors_deg"]) <= rc.success_deg)
        r["success_rate"] = float(np.mean(ok))
    return {"queries": len(Ts), "poses": [np.asarray(T).tolist() for T in Ts], "methods": methods,
            "conditions": list(conditions), "success_cm": rc.success_cm, "success_deg": rc.success_deg,
            "results": results}


def render_views(session: Any, scene: Any, poses: Sequence[np.ndarray], intr: CameraIntrinsics,
                 cfg: ExperimentConfig, out_dir: Path) -> dict[str, Any]:
    """M3 render vs simulator image at a held-out pose, plus a text heat map of a visible object."""
    from emem import experiment_figures as figs
    from sim.simulator import SimFrameSource
    from sim.trajectories import heldout_query_viewpoints
    from emem.m3_eval import psnr

    cands = heldout_query_viewpoints(scene, list(poses), 6, seed=cfg.seed + 2000, trans_range=(0.1, 0.5),
                                     rot_range_deg=(5.0, 20.0), intrinsics=intr)
    src = SimFrameSource.from_poses(scene, cands, intr, seed=cfg.seed)
    src.progress = False
    # the candidate in which one object category covers the most pixels: a heat map worth looking at
    best = max((_dominant_label(src.frame(i), set(scene.labels())) + (i,) for i in range(len(cands))),
               key=lambda x: x[1])
    T = cands[best[2]]
    real = src.frame(best[2])
    text = best[0]
    rgb, heat = session.render(intr, T, text)
    path = figs.render_vs_real(out_dir / "render_vs_real.png", real.rgb, rgb, heat, text)
    return {"psnr_db": psnr(rgb, real.rgb), "heatmap_text": text, "pose": np.asarray(T).tolist(),
            "heatmap_max": float(np.max(heat)) if heat is not None else None, "figure": path.name}


def _dominant_label(frame: Frame, allowed: set[str]) -> tuple[str | None, int]:
    """The object category covering most pixels of a rendered frame, and its pixel count
    (``(None, 0)`` if none is visible)."""
    if frame.instance_ids is None:
        return None, 0
    ids, counts = np.unique(frame.instance_ids, return_counts=True)
    per: dict[str, int] = {}
    for i, n in zip(ids.tolist(), counts.tolist()):
        lab = frame.id_to_label.get(int(i))
        if i > 0 and lab in allowed:
            per[lab] = per.get(lab, 0) + int(n)
    if not per:
        return None, 0
    lab = max(per, key=per.get)
    return lab, per[lab]


# -------------------------------------------------------------------------------- episodic


def frame_labels(frame: Frame, min_pixels: int) -> list[str]:
    """Object categories (structure such as walls excluded, as the episodic memory does) covering
    at least ``min_pixels`` pixels of a frame: the episode's ground truth."""
    from spatial_memory.episodic.tasks import STRUCTURE

    if frame.instance_ids is None:
        return []
    ids, counts = np.unique(frame.instance_ids, return_counts=True)
    labs = {frame.id_to_label.get(int(i)) for i, c in zip(ids.tolist(), counts.tolist()) if i > 0 and c >= min_pixels}
    return sorted(lab for lab in labs if lab and lab not in STRUCTURE)


def episode_record(frames: Sequence[Frame], min_pixels: int) -> dict[str, Any]:
    """What the episodic tasks are scored against: positions ``[T, 3]`` and labels seen per step."""
    return {"positions": [np.asarray(f.T_world_camera)[:3, 3].tolist() for f in frames],
            "labels": [frame_labels(f, min_pixels) for f in frames]}


def make_task_queries(record: dict[str, Any], vocab: list[str], place_radius: float, q: int,
                      seed: int) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """Places ``[T]`` (leader clustering of the positions, as the memory does) and ``q`` queries
    per task with their answers (:func:`spatial_memory.episodic.tasks.make_queries`)."""
    from spatial_memory.episodic.store import PlaceClusterer
    from spatial_memory.episodic.tasks import make_queries

    pos = np.asarray(record["positions"], np.float64).reshape(-1, 3)
    places = PlaceClusterer(place_radius).assign_many(pos)
    vi = {v: i for i, v in enumerate(vocab)}
    seen = np.zeros((len(pos), len(vocab)), bool)
    for t, labs in enumerate(record["labels"]):
        for lab in labs:
            if lab in vi:
                seen[t, vi[lab]] = True
    if not seen.any():
        raise ConfigError("no category of the reader's vocabulary was seen in this episode")
    rng = np.random.default_rng(seed)
    qs = make_queries(places, seen, np.zeros(len(pos), np.int64), rng, q, [])
    if len(np.unique(places)) < 2:
        qs.pop("order", None)  # one place: "which place came first" has no question
    return places, qs


def answer_accuracy(memory: Any, queries: dict[str, dict[str, np.ndarray]], vocab: list[str]) -> dict[str, float]:
    """Mean score per task of the memory's reader (F1 for label sets, exact match otherwise) and
    of the exact ``last_seen`` index."""
    from spatial_memory.episodic.tasks import score_predictions

    out: dict[str, float] = {}
    for task, q in queries.items():
        preds = []
        for a in q["args"]:
            if task in ("what_was_there", "first_visit"):
                ans = memory.answer(task, {"place_id": int(a[0])})
                labs = set(ans.prediction or [])
                preds.append([v in labs for v in vocab])
            elif task == "last_seen":
                ans = memory.answer(task, {"label": vocab[int(a[0])]})
                preds.append(-1 if ans.prediction is None else int(ans.prediction))
            else:
                ans = memory.answer(task, {"place_a": int(a[0]), "place_b": int(a[1])})
                preds.append(int(ans.prediction == int(a[0])) if ans.prediction is not None else -1)
        out[task] = float(np.mean(score_predictions(task, np.asarray(preds), q)))
    if "last_seen" in queries:
        q = queries["last_seen"]
        exact = []
        for a, c in zip(q["args"], q["cls"]):
            ls = memory.last_seen(vocab[int(a[0])])
            exact.append(float(ls is not None and int(ls.place_id) == int(c)))
        out["last_seen_exact_index"] = float(np.mean(exact))
    tasks = [t for t in queries]
    out["mean"] = float(np.mean([out[t] for t in tasks]))
    return out


def episodic_eval(frames: Sequence[Frame], online: Any, cfg: ExperimentConfig) -> dict[str, Any]:
    """Every (strategy, budget) memory replays the recorded episode; each answers the same queries."""
    from emem.viz import progress
    from spatial_memory.episodic.memory import Models

    ec = cfg.episodic
    models = Models.load()
    vocab = list(models.vocab)
    record = episode_record(frames, make_episodic_min_pixels())
    places, queries = make_task_queries(record, vocab, ec.place_radius, ec.queries_per_task, cfg.seed + 3000)
    grid: dict[str, dict[str, Any]] = {}
    combos = [(s, int(b)) for s in ec.strategies for b in ec.budgets]
    for strategy, budget in progress(combos, "episodic strategies x budgets"):
        mem = make_episodic(cfg, budget, strategy, models)
        for f in frames:
            mem.ingest(f)
        grid.setdefault(strategy, {})[str(budget)] = answer_accuracy(mem, queries, vocab)
    scene_labels = sorted({lab for labs in record["labels"] for lab in labs})
    res = {"places": int(len(np.unique(places))), "steps": len(frames), "queries_per_task": ec.queries_per_task,
           "tasks": sorted(queries), "vocab_size": len(vocab),
           "labels_seen": scene_labels, "labels_in_vocab": [lab for lab in scene_labels if lab in vocab],
           "per_strategy": grid}
    if online is not None:
        res["online"] = {"budget": ec.budget, "strategy": ec.strategy, "entries": len(online),
                         **answer_accuracy(online, queries, vocab)}
    return res


def make_episodic_min_pixels() -> int:
    from spatial_memory.episodic.memory import EpisodicConfig

    return int(EpisodicConfig().min_pixels)


# =============================================================================== the run


def open_session(cfg: ExperimentConfig, frames: Sequence[Frame], m3: Any, episodic: Any,
                 relocalizers: dict[str, Any]) -> Any:
    """A :class:`RosSession` when ``cfg.ros`` (raises if ROS is not importable), else direct."""
    if cfg.ros:
        ok, why = ros_available()
        if not ok:
            raise ConfigError(why)
        return RosSession(frames, m3, episodic, relocalizers, domain_id=cfg.domain_id).start()
    return DirectSession(m3, episodic, relocalizers)


def machine_info() -> dict[str, Any]:
    """Where the run happened (CPU model, cores, load) so timings can be read in context."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu_model": model, "nproc": os.cpu_count(), "load_avg_1_5_15": [round(x, 2) for x in load],
            "python": platform.python_version(), "platform": platform.platform()}


def run_experiment(cfg: ExperimentConfig, out: str | Path, resume_in_subprocess: bool = True) -> dict[str, Any]:
    """Run every stage, write the report; return the metrics (also in ``<out>/metrics.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    st = Stages()
    metrics: dict[str, Any] = {"version": METRICS_VERSION, "name": cfg.name, "pid": os.getpid(), "config": cfg.to_dict(),
                               "machine_start": machine_info(), "transport": "ros" if cfg.ros else "direct"}
    if cfg.ros:
        ok, why = ros_available()
        if not ok:
            log.warning("ros: true but %s; the run fails its stream stage (use --no-ros)", why)

    from sim.scenes import load_scene

    scene = st.run("scene", load_scene, cfg.scene, cfg.seed)
    frames = st.run("render", render_stream, scene, cfg, cfg.stream.frames, cfg.stream.trajectory, cfg.seed,
                    0, "session 1") if scene is not None else None
    if frames:
        metrics["scene"] = {"name": scene.name, "objects": len(scene.objects), "categories": scene.labels(),
                            "frames": len(frames), "resolution": [cfg.stream.width, cfg.stream.height]}
        (out / "episode1.json").write_text(json.dumps(episode_record(frames, make_episodic_min_pixels())))
    relocs = st.run("reloc_build", build_relocalizers, frames, cfg) if frames else None
    if relocs:
        metrics["reloc_maps"] = reloc_map_stats(relocs)

    session = None
    m3 = episodic = None
    if frames:
        episodic = st.run("episodic_init", make_episodic, cfg)  # the stream goes on without it if it fails

        def stream() -> dict[str, Any]:
            nonlocal session, m3
            m3 = make_m3(cfg)
            session = open_session(cfg, frames, m3, episodic, relocs or {})
            return session.ingest(frames, "session 1")

        res = st.run("stream", stream)
        if res is not None:
            metrics["stream"] = {**res, "m3": _m3_stats(m3),
                                 "episodic_entries": len(episodic) if episodic is not None else None}
    try:
        if session is not None and st.ok("stream"):
            q = st.run("queries", score_text_queries, session, scene, cfg.m3.top_k, cfg.m3.success_radius_m)
            if q is not None:
                metrics["queries"] = q
            v = st.run("views", render_views, session, scene, [f.T_world_camera for f in frames], frames[0].intrinsics,
                       cfg, out)
            if v is not None:
                metrics["views"] = v
            if relocs:
                k = st.run("kidnap", kidnap, session, scene, [f.T_world_camera for f in frames], frames[0].intrinsics, cfg)
                if k is not None:
                    metrics["kidnap"] = k
            if episodic is not None:
                e = st.run("episodic", episodic_eval, frames, episodic, cfg)
                if e is not None:
                    metrics["episodic"] = e
            else:
                st.skip("episodic", "the episodic memory could not be created (see stage episodic_init)")
            st.run("save", save_maps, session, relocs or {}, out / "maps")
    finally:
        if session is not None:
            session.close()

    if cfg.session2.enabled and st.ok("save"):
        s2 = st.run("session2", run_session2_subprocess if resume_in_subprocess else resume_session, out, cfg)
        if s2 is not None:
            metrics["session2"] = s2
            metrics["multi_session"] = compare_sessions(metrics, s2, cfg.session2.tolerance)
    elif cfg.session2.enabled:
        st.skip("session2", "maps were not saved")

    if frames and cfg.output.bag:
        st.run("bag", write_stream_bag, frames, out / "bag", cfg.output.bag_storage)
    if frames and cfg.output.rerun:
        st.run("rerun", write_rerun, out / "run.rrd", frames, m3, scene, metrics, cfg.output.rerun_every)

    metrics["stages"] = st.records
    metrics["timing_s"] = {k: v["seconds"] for k, v in st.records.items()}
    metrics["machine_end"] = machine_info()
    metrics["wall_seconds"] = time.perf_counter() - t_start
    metrics["all_stages_ok"] = all(r["status"] == "ok" for r in st.records.values())
    metrics["headline"] = headline(metrics)
    from emem import experiment_figures as figs

    t0 = time.perf_counter()
    try:
        figs.write_report(out, metrics, scene, frames, m3)
        metrics["stages"]["report"] = {"status": "ok", "seconds": time.perf_counter() - t0}
    except Exception as e:  # the metrics must be written even if a figure breaks
        metrics["stages"]["report"] = {"status": "failed", "seconds": time.perf_counter() - t0,
                                       "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        metrics["all_stages_ok"] = False
        log.error("report failed: %s", e)
    metrics["wall_seconds"] = time.perf_counter() - t_start
    write_json(out / "metrics.json", metrics)
    return metrics


def _m3_stats(m3: Any) -> dict[str, Any]:
    s = m3.stats()
    return {"gaussians": int(s["gaussians"]), "keyframes": int(s.get("keyframes", 0)), "frames": int(s.get("frames", 0)),
            "psc_bank_sizes": s.get("psc_bank_sizes", {})}


def save_maps(session: Any, relocs: dict[str, Any], directory: Path) -> dict[str, Any]:
    """M3 + episodic (through the session: a service call under ROS) and the relocalization maps."""
    directory.mkdir(parents=True, exist_ok=True)
    session.save(directory)
    for name, r in relocs.items():
        getattr(r, "map", r).save(directory / name)
    return {p.name: _dir_bytes(p) for p in sorted(directory.iterdir()) if p.is_dir()}


def _dir_bytes(p: Path) -> int:
    return int(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()))


def write_stream_bag(frames: Sequence[Frame], path: Path, storage: str) -> dict[str, Any]:
    from sim.bags import write_bag

    if path.exists():
        import shutil

        shutil.rmtree(path)
    s = write_bag(frames, path, storage=storage)
    return {"frames": s.frames, "skipped": s.skipped, "bytes": _dir_bytes(path)}


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON, written atomically: NaN and infinities (failed relocalizations, medians over
    mostly failed queries) become ``null``."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False))
    tmp.replace(path)


def _finite(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def headline(m: dict[str, Any]) -> dict[str, Any]:
    """The numbers a reader looks at first."""
    h: dict[str, Any] = {}
    if "queries" in m:
        h["query_success"] = m["queries"]["success_rate"]
    for key, r in m.get("kidnap", {}).get("results", {}).items():
        h[f"reloc_{key}_median_cm"] = r["median_cm"]
        h[f"reloc_{key}_recall_5cm_5deg"] = r["recall_5cm_5deg"]
        h[f"reloc_{key}_success"] = r["success_rate"]
    ep = m.get("episodic", {})
    if "online" in ep:
        h["episodic_online_accuracy"] = ep["online"]["mean"]
    if ep.get("per_strategy"):
        best = max(((s, b, v["mean"]) for s, d in ep["per_strategy"].items() for b, v in d.items()), key=lambda x: x[2])
        h["episodic_best"] = f"{best[0]}@{best[1]}: {best[2]:.3f}"
    if "views" in m:
        h["render_psnr_db"] = m["views"]["psnr_db"]
    s2 = m.get("session2", {})
    if s2:
        h["session2_query_success_loaded"] = s2.get("queries_loaded", {}).get("success_rate")
        h["session2_query_success_after"] = s2.get("queries_after", {}).get("success_rate")
        h["session2_reloc_favor_success"] = s2.get("restart_reloc", {}).get("favor", {}).get("success_rate")
    if "multi_session" in m:
        h["multi_session_ok"] = m["multi_session"]["ok"]
    h["wall_seconds"] = m.get("wall_seconds")
    return h


def compare_sessions(m: dict[str, Any], s2: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """Session 2 (loaded maps, more mapping) against session 1."""
    q1 = m.get("queries", {}).get("success_rate")
    ql = s2.get("queries_loaded", {}).get("success_rate")
    qa = s2.get("queries_after", {}).get("success_rate")
    e1 = m.get("episodic", {}).get("online", {}).get("mean")
    e2 = s2.get("episodic_online", {}).get("mean")
    rr = s2.get("restart_reloc", {}).get("favor", {})
    checks = {
        "loaded_map_answers_like_saved": q1 is not None and ql is not None and abs(ql - q1) < 1e-9,
        "query_success_kept": q1 is not None and qa is not None and qa >= q1 - tolerance,
        "reloc_against_loaded_map": bool(rr) and rr.get("success_rate", 0.0) > 0.0,
        "session2_in_separate_process": s2.get("pid") is not None and s2.get("pid") != os.getpid(),
    }
    return {"session1_query_success": q1, "session2_query_success_loaded": ql, "session2_query_success_after": qa,
            "session1_episodic_online": e1, "session2_episodic_online": e2, "tolerance": tolerance,
            "checks": checks, "ok": all(checks.values())}


# =============================================================================== session 2


def run_session2_subprocess(out: Path, cfg: ExperimentConfig) -> dict[str, Any]:
    """Run :func:`resume_session` in a fresh interpreter (``python -m emem.cli experiment resume``)."""
    cmd = [sys.executable, "-m", "emem.cli", "experiment", "resume", "--run", str(out)]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log.info("session 2: %s", " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=root, timeout=cfg.session2.timeout_s, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    (out / "session2.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        raise RuntimeError(f"session 2 process exited with {proc.returncode}: {' | '.join(tail)}")
    s2 = json.loads((out / "session2.json").read_text())
    s2["process_seconds"] = time.perf_counter() - t0
    return s2


def resume_session(out: str | Path, cfg: ExperimentConfig | None = None) -> dict[str, Any]:
    """Session 2: load the maps of ``out/maps``, relocalize the restart views, map a second episode
    and answer the session-1 questions again. Writes ``out/session2.json`` and ``out/maps_session2``."""
    from relocalization.favor import FavorMap, FavorRelocalizer
    from sim.scenes import load_scene
    from spatial_memory.episodic.memory import EpisodicMemory
    from spatial_memory.m3 import M3Memory

    out = Path(out)
    if cfg is None:
        cfg = ExperimentConfig.from_dict(json.loads((out / "config.json").read_text())).validate()
    maps = out / "maps"
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    m3 = M3Memory.load(maps / "m3")
    episodic = EpisodicMemory.load(maps / "episodic") if (maps / "episodic").exists() else None
    relocs: dict[str, Any] = {}
    if (maps / "favor").exists():
        relocs["favor"] = FavorRelocalizer(FavorMap.load(maps / "favor"))
    if (maps / "baseline").exists():
        from relocalization.baseline import KeyframeBaseline

        relocs["baseline"] = KeyframeBaseline.load(maps / "baseline")
    t["load_maps"] = time.perf_counter() - t0
    loaded_stats = {"m3": _m3_stats(m3), "episodic_entries": len(episodic) if episodic is not None else None}

    t0 = time.perf_counter()
    scene = load_scene(cfg.scene, cfg.seed)
    ep1 = json.loads((out / "episode1.json").read_text())
    start_ns = int(round(len(ep1["positions"]) * 1e9 / cfg.stream.rate_hz)) + 10 * 10**9
    frames = render_stream(scene, cfg, cfg.session2.frames, cfg.session2.trajectory, cfg.seed + 1, start_ns, "session 2")
    t["render"] = time.perf_counter() - t0

    session = (RosSession(frames, m3, episodic, relocs, domain_id=(cfg.domain_id or 100 + os.getpid() % 100),
                          ).start()
               if cfg.ros else DirectSession(m3, episodic, relocs))
    res: dict[str, Any] = {"pid": os.getpid(), "transport": session.transport, "loaded": loaded_stats,
                           "frames": len(frames)}
    try:
        t0 = time.perf_counter()
        res["queries_loaded"] = score_text_queries(session, scene, cfg.m3.top_k, cfg.m3.success_radius_m)
        t["queries_loaded"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        restart = frames[: max(1, cfg.session2.reloc_views)]
        res["restart_reloc"] = relocalize_frames(session, sorted(relocs), restart, "restart reloc")
        for r in res["restart_reloc"].values():
            ok = np.isfinite(r["errors_cm"]) & (np.asarray(r["errors_cm"]) <= cfg.reloc.success_cm) & \
                (np.asarray(r["errors_deg"]) <= cfg.reloc.success_deg)
            r["success_rate"] = float(np.mean(ok))
        t["restart_reloc"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res["stream"] = session.ingest(frames, "session 2")
        t["stream"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res["queries_after"] = score_text_queries(session, scene, cfg.m3.top_k, cfg.m3.success_radius_m)
        t["queries_after"] = time.perf_counter() - t0
        if episodic is not None:
            t0 = time.perf_counter()
            vocab = list(episodic.models.vocab)
            ep2 = episode_record(frames, make_episodic_min_pixels())
            both = {"positions": ep1["positions"] + ep2["positions"], "labels": ep1["labels"] + ep2["labels"]}
            _, queries = make_task_queries(both, vocab, cfg.episodic.place_radius, cfg.episodic.queries_per_task,
                                           cfg.seed + 4000)
            res["episodic_online"] = {"entries": len(episodic), **answer_accuracy(episodic, queries, vocab)}
            t["episodic"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        session.save(out / "maps_session2")
        t["save"] = time.perf_counter() - t0
    finally:
        session.close()
    res["m3_after"] = _m3_stats(m3)
    res["poses"] = [np.asarray(f.T_world_camera).tolist() for f in frames]
    res["timing_s"] = t
    write_json(out / "session2.json", res)
    return res


# =============================================================================== rerun


def write_rerun(path: Path, frames: Sequence[Frame], m3: Any, scene: Any, metrics: dict[str, Any],
                every: int) -> dict[str, Any]:
    """``run.rrd``: trajectories, every ``every``-th frame, the Gaussians as points, query hits and
    ground-truth object boxes."""
    from emem.viz import RerunRecorder

    every = max(1, int(every))
    with RerunRecorder(path) as rec:
        rec.log_trajectory([f.T_world_camera for f in frames], "world/trajectory/session1")
        s2 = metrics.get("session2", {})
        if s2.get("poses"):
            rec.log_trajectory(s2["poses"], "world/trajectory/session2", color=(0, 160, 60))
        for f in frames[::every]:
            rec.log_frame(f)
        if m3 is not None and m3.num_gaussians:
            xyz, rgb = m3.gaussian_points()
            keep = np.linspace(0, len(xyz) - 1, min(len(xyz), 100_000)).astype(np.int64)
            rec.log_points(xyz[keep], rgb[keep], "world/gaussians", radii=0.01)
        objs = [o for o in scene.objects if o.label in set(scene.labels())]
        if objs:
            c = np.stack([o.center for o in objs])
            sz = np.stack([np.asarray(o.aabb_max) - np.asarray(o.aabb_min) for o in objs])
            rec.log_boxes(c, sz, [o.label for o in objs], colors=[[200, 200, 200]] * len(objs), entity="world/objects")
        hits = [v["hits"][0] for v in metrics.get("queries", {}).get("per_label", {}).values() if v.get("hits")]
        rec.log_hits(hits, "world/hits")
        for i, (key, r) in enumerate(sorted(metrics.get("kidnap", {}).get("results", {}).items())):
            ests = [T for T in r.get("estimates", []) if T is not None]
            if ests:
                P = np.asarray(ests)[:, :3, 3]
                rec.log_points(P, np.tile(np.array([[255, 0, 0]], np.uint8), (len(P), 1)),
                               f"world/reloc/{key.replace('/', '_')}", radii=0.04)
    return {"bytes": path.stat().st_size, "frames_logged": len(frames[::every])}


# =============================================================================== sweeps

SWEEP_METRICS = ("query_success", "render_psnr_db", "reloc_favor/mapping_lighting_median_cm",
                 "reloc_favor/mapping_lighting_success", "reloc_baseline/mapping_lighting_median_cm",
                 "reloc_baseline/mapping_lighting_success", "reloc_favor/changed_lighting_success",
                 "reloc_baseline/changed_lighting_success", "episodic_online_accuracy",
                 "session2_query_success_after", "wall_seconds")


def sweep_jobs(config: str, seeds: Sequence[int], scenes: Sequence[str] | None, budgets: Sequence[int] | None,
               out: Path, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One job per (scene, seed, budget): its run directory and ``--set`` overrides."""
    jobs = []
    for scene in scenes or [None]:
        for budget in budgets or [None]:
            for seed in seeds:
                sets = list(extra) + [f"seed={int(seed)}"]
                parts = [f"seed{seed}"]
                if scene is not None:
                    sets.append(f"scene={scene}")
                    parts.insert(0, scene)
                if budget is not None:
                    sets += [f"episodic.budget={int(budget)}", f"episodic.budgets=[{int(budget)}]"]
                    parts.insert(-1, f"b{budget}")
                jobs.append({"group": {"scene": scene, "budget": budget}, "seed": int(seed),
                             "out": str(out / "_".join(parts)), "sets": sets, "config": config})
    return jobs


def _run_job(job: dict[str, Any], no_ros: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "emem.cli", "experiment", "run", "--config", job["config"], "--out", job["out"]]
    for s in job["sets"]:
        cmd += ["--set", s]
    if no_ros:
        cmd.append("--no-ros")
    Path(job["out"]).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(Path(job["out"]) / "run.log", "w") as logf:
        rc = subprocess.call(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=str(Path(__file__).resolve().parents[1]))
    res = {**job, "returncode": rc, "seconds": time.perf_counter() - t0}
    mp = Path(job["out"]) / "metrics.json"
    if mp.is_file():
        m = json.loads(mp.read_text())
        res["headline"] = m.get("headline", {})
        res["all_stages_ok"] = m.get("all_stages_ok")
    return res


def aggregate(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group (scene, budget): mean, standard deviation, min and max of each headline metric
    across seeds, plus how many runs finished every stage."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        key = json.dumps(r["group"], sort_keys=True)
        groups.setdefault(key, []).append(r)
    rows = []
    for key, rs in groups.items():
        row: dict[str, Any] = {**json.loads(key), "seeds": sorted(r["seed"] for r in rs),
                               "runs_ok": sum(bool(r.get("all_stages_ok")) for r in rs), "runs": len(rs)}
        for m in SWEEP_METRICS:
            vals = [r.get("headline", {}).get(m) for r in rs]
            vals = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if vals:
                row[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                          "min": float(np.min(vals)), "max": float(np.max(vals)), "n": len(vals)}
        rows.append(row)
    return rows


def summary_markdown(rows: Sequence[dict[str, Any]]) -> str:
    metrics = [m for m in SWEEP_METRICS if any(m in r for r in rows)]
    head = ["scene", "budget", "runs ok"] + metrics
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r.get("scene") or "(config)"), str(r.get("budget") or "(config)"), f"{r['runs_ok']}/{r['runs']}"]
        for m in metrics:
            v = r.get(m)
            cells.append(f"{v['mean']:.3g} ± {v['std']:.2g}" if v else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nmean ± standard deviation across seeds.\n"


def run_sweep(config: str, seeds: Sequence[int], out: str | Path, scenes: Sequence[str] | None = None,
              budgets: Sequence[int] | None = None, jobs: int = 2, no_ros: bool = False,
              extra: Sequence[str] = ()) -> dict[str, Any]:
    """Run one experiment per (scene, budget, seed) in ``jobs`` parallel processes and aggregate
    into ``summary.json``, ``summary.md`` and ``summary.html``."""
    from concurrent.futures import ThreadPoolExecutor

    load_config(config, extra)  # fail early on a bad config
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = sweep_jobs(config, seeds, scenes, budgets, out, extra)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:  # threads only wait on child processes
        results = list(pool.map(lambda j: _run_job(j, no_ros), todo))
    rows = aggregate(results)
    summary = {"config": config, "seeds": list(seeds), "scenes": scenes, "budgets": budgets, "jobs": jobs,
               "wall_seconds": time.perf_counter() - t0, "runs": results, "table": rows, "machine": machine_info()}
    write_json(out / "summary.json", summary)
    md = summary_markdown(rows)
    (out / "summary.md").write_text(md)
    from emem.report import HtmlReport

    rep = HtmlReport(f"sweep of {config}", f"{len(results)} runs, {jobs} in parallel")
    sec = rep.section("Mean and spread across seeds")
    flat = []
    for r in rows:
        base = {"scene": r.get("scene") or "(config)", "budget": r.get("budget") or "(config)",
                "runs ok": f"{r['runs_ok']}/{r['runs']}"}
        for m in SWEEP_METRICS:
            if m in r:
                base[m] = f"{r[m]['mean']:.3g} ± {r[m]['std']:.2g}"
        flat.append(base)
    sec.table(flat)
    rep.section("Runs").table([{"out": Path(r["out"]).name, "seed": r["seed"], "returncode": r["returncode"],
                                "all stages ok": r.get("all_stages_ok"), "seconds": r["seconds"]} for r in results])
    rep.write(out / "summary.html")
    return summary

