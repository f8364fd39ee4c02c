"""rosbag2 recording and playback of posed RGB-D frames (MCAP or SQLite3 storage), via ``rosbags``.

:func:`write_bag` records frames as a robot driver would publish them: ``sensor_msgs/Image``
(rgb8 colour; depth 32FC1 metres or 16UC1 millimetres), ``sensor_msgs/CameraInfo``,
``geometry_msgs/PoseStamped`` and a ``tf2_msgs/TFMessage`` (world -> camera) per frame.
:class:`BagFrameSource` reads such a bag (or one from a real robot with the same topics) back
into :class:`Frame` s with approximate time synchronisation: the rgb stream is the reference,
each rgb image takes the depth image and pose nearest in header stamp within ``slop_s`` and
the latest camera info. Messages are serialised with the ROS 2 Jazzy type store.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.errors import ReaderError
from rosbags.typesys import Stores, get_typestore

from spatial_memory.errors import (
    DatasetFormatError,
    ImageDecodeError,
    InvalidFrameError,
    InvalidIntrinsicsError,
    InvalidPoseError,
    MissingTopicError,
)
from spatial_memory.geometry import pose_from_tq, tq_from_pose
from spatial_memory.types import CameraIntrinsics, Frame

from .image_codec import decode_image, encode_image, is_depth_encoding
from .source import SourceStats

log = logging.getLogger(__name__)

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)

IMAGE_T = "sensor_msgs/msg/Image"
CAMERA_INFO_T = "sensor_msgs/msg/CameraInfo"
POSE_T = "geometry_msgs/msg/PoseStamped"
TF_T = "tf2_msgs/msg/TFMessage"

_STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


@dataclass(frozen=True)
class BagTopics:
    """Topic and frame names of a recorded RGB-D stream (RealSense-style defaults)."""

    rgb: str = "/camera/color/image_raw"
    depth: str = "/camera/depth/image_raw"
    camera_info: str = "/camera/color/camera_info"
    pose: str = "/camera/pose"
    tf: str = "/tf"
    world_frame: str = "map"
    camera_frame: str = "camera_color_optical_frame"


@dataclass
class BagWriteSummary:
    """What :func:`write_bag` wrote: message counts per topic and frames it had to skip."""

    path: Path
    storage: str
    depth_encoding: str
    frames: int = 0
    messages: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ message building

def _header(stamp_ns: int, frame_id: str) -> Any:
    T = TYPESTORE.types
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame_id)


def stamp_ns_of(header: Any) -> int:
    """Nanoseconds of a ``std_msgs/Header`` stamp."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def image_msg(img: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    """``sensor_msgs/Image`` of ``img`` (rgb ``[H, W, 3] uint8`` or depth ``[H, W]`` metres)."""
    data, step = encode_image(img, encoding)
    return TYPESTORE.types[IMAGE_T](
        header=_header(stamp_ns, frame_id),
        height=int(img.shape[0]),
        width=int(img.shape[1]),
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=np.frombuffer(data, dtype=np.uint8),
    )


def camera_info_msg(intr: CameraIntrinsics, stamp_ns: int, frame_id: str) -> Any:
    """``sensor_msgs/CameraInfo`` of a distortion-free pinhole camera (plumb_bob, zero D)."""
    T = TYPESTORE.types
    P = np.zeros((3, 4))
    P[:, :3] = intr.K
    return T[CAMERA_INFO_T](
        header=_header(stamp_ns, frame_id),
        height=intr.height,
        width=intr.width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=intr.K.reshape(9).astype(np.float64),
        r=np.eye(3).reshape(9),
        p=P.reshape(12),
        binning_x=0,
        binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def intrinsics_from_camera_info(msg: Any) -> CameraIntrinsics:
    """Pinhole intrinsics of a ``sensor_msgs/CameraInfo`` (distortion ignored: rectified input expected)."""
    return CameraIntrinsics.from_K(np.asarray(msg.k, dtype=np.float64).reshape(3, 3), int(msg.width), int(msg.height))


def pose_stamped_msg(T_world_camera: np.ndarray, stamp_ns: int, world_frame: str) -> Any:
    T = TYPESTORE.types
    t, q = tq_from_pose(T_world_camera)
    pose = T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=t[0], y=t[1], z=t[2]),
        orientation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
    )
    return T[POSE_T](header=_header(stamp_ns, world_frame), pose=pose)


def tf_msg(T_world_camera: np.ndarray, stamp_ns: int, world_frame: str, camera_frame: str) -> Any:
    T = TYPESTORE.types
    t, q = tq_from_pose(T_world_camera)
    tr = T["geometry_msgs/msg/Transform"](
        translation=T["geometry_msgs/msg/Vector3"](x=t[0], y=t[1], z=t[2]),
        rotation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
    )
    ts = T["geometry_msgs/msg/TransformStamped"](
        header=_header(stamp_ns, world_frame), child_frame_id=camera_frame, transform=tr
    )
    return T[TF_T](transforms=[ts])


def pose_from_msg(p: Any) -> np.ndarray:
    """``[4, 4]`` of a ``geometry_msgs/Pose`` (position + orientation)."""
    o = p.orientation
    return pose_from_tq([p.position.x, p.position.y, p.position.z], [o.x, o.y, o.z, o.w])


def pose_from_transform(tr: Any) -> np.ndarray:
    """``[4, 4]`` of a ``geometry_msgs/Transform`` (translation + rotation)."""
    r = tr.rotation
    return pose_from_tq([tr.translation.x, tr.translation.y, tr.translation.z], [r.x, r.y, r.z, r.w])


# ------------------------------------------------------------------------------ writing

def write_bag(
    frames: Iterable[Frame],
    path: str | Path,
    storage: Literal["mcap", "sqlite3"] = "mcap",
    depth_encoding: Literal["32FC1", "16UC1"] = "32FC1",
    topics: BagTopics = BagTopics(),
) -> BagWriteSummary:
    """Record ``frames`` into a new rosbag2 directory ``path`` (must not exist).

    Per frame: rgb8 image, depth image (if the frame has depth), camera info, and, if the
    frame has a pose, a PoseStamped and a TF message world -> camera, all stamped
    ``frame.stamp_ns`` (also the bag's record time). Invalid frames are skipped and counted.

    Raises:
        ValueError: unknown storage or depth encoding; FileExistsError: ``path`` exists.
    """
    path = Path(path)
    if storage not in _STORAGE:
        raise ValueError(f"storage must be one of {sorted(_STORAGE)}, got {storage!r}")
    if depth_encoding not in ("32FC1", "16UC1"):
        raise ValueError(f"depth_encoding must be '32FC1' or '16UC1', got {depth_encoding!r}")
    if path.exists():
        raise FileExistsError(f"{path} exists; rosbag2 writers only create new bags")
    summary = BagWriteSummary(path=path, storage=storage, depth_encoding=depth_encoding)
    counts = summary.messages
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=_STORAGE[storage]) as writer:
        conns = {
            topics.rgb: writer.add_connection(topics.rgb, IMAGE_T, typestore=TYPESTORE),
            topics.depth: writer.add_connection(topics.depth, IMAGE_T, typestore=TYPESTORE),
            topics.camera_info: writer.add_connection(topics.camera_info, CAMERA_INFO_T, typestore=TYPESTORE),
            topics.pose: writer.add_connection(topics.pose, POSE_T, typestore=TYPESTORE),
            topics.tf: writer.add_connection(topics.tf, TF_T, typestore=TYPESTORE),
        }

        def put(topic: str, msg: Any, stamp: int) -> None:
            writer.write(conns[topic], stamp, TYPESTORE.serialize_cdr(msg, conns[topic].msgtype))
            counts[topic] = counts.get(topic, 0) + 1

        for frame in frames:
            try:
                frame.validate()
            except (InvalidFrameError, InvalidPoseError) as e:
                summary.skipped += 1
                summary.skip_reasons.append(str(e))
                log.warning("write_bag: skipping frame: %s", e)
                continue
            s = int(frame.stamp_ns)
            put(topics.rgb, image_msg(frame.rgb, "rgb8", s, topics.camera_frame), s)
            if frame.depth is not None:
                put(topics.depth, image_msg(frame.depth, depth_encoding, s, topics.camera_frame), s)
            put(topics.camera_info, camera_info_msg(frame.intrinsics, s, topics.camera_frame), s)
            if frame.T_world_camera is not None:
                put(topics.pose, pose_stamped_msg(frame.T_world_camera, s, topics.world_frame), s)
                put(topics.tf, tf_msg(frame.T_world_camera, s, topics.world_frame, topics.camera_frame), s)
            summary.frames += 1
    return summary


# ------------------------------------------------------------------------------ reading

class _Timed:
    """Values sorted by stamp with nearest-within-slop and latest-at-or-before lookups."""

    def __init__(self, items: list[tuple[int, Any]]) -> None:
        items.sort(key=lambda x: x[0])
        self.stamps = [s for s, _ in items]
        self.values = [v for _, v in items]

    def nearest(self, stamp: int, slop_ns: int) -> Any | None:
        k = bisect.bisect_left(self.stamps, stamp)
        best = None
        for j in (k - 1, k):
            if 0 <= j < len(self.stamps):
                dt = abs(self.stamps[j] - stamp)
                if dt <= slop_ns and (best is None or dt < best[0]):
                    best = (dt, self.values[j])
        return None if best is None else best[1]

    def latest(self, stamp: int) -> Any | None:
        k = bisect.bisect_right(self.stamps, stamp)
        if k > 0:
            return self.values[k - 1]
        return self.values[0] if self.values else None


class BagFrameSource:
    """Frames from a rosbag2 directory (MCAP or SQLite3), synchronised on the rgb stream.

    Args:
        path: the bag directory (with ``metadata.yaml``).
        topics: topic and frame names; ``pose_from="tf"`` uses ``/tf`` transforms
            ``topics.world_frame -> topics.camera_frame`` (direct edge only, no chaining).
        slop_s: largest |stamp difference| between an rgb image and its depth/pose.

    ``len()`` is the number of rgb messages (an upper bound of what is yielded);
    :meth:`subset` restricts the stream to a slice of them. Messages that
    fail to deserialise or decode, and rgb images without depth/pose within ``slop_s``, are
    skipped and counted in ``stats``; an unsupported image encoding raises
    :class:`UnsupportedEncodingError` (a recording problem, not a bad message).

    Raises:
        DatasetFormatError: not a readable rosbag2 directory.
        MissingTopicError: a required topic is absent (rgb, depth, camera info, pose or tf).
    """

    def __init__(
        self,
        path: str | Path,
        topics: BagTopics = BagTopics(),
        slop_s: float = 0.02,
        pose_from: Literal["pose", "tf"] = "pose",
    ) -> None:
        if pose_from not in ("pose", "tf"):
            raise ValueError(f"pose_from must be 'pose' or 'tf', got {pose_from!r}")
        self.path = Path(path)
        self.topics = topics
        self.slop_ns = int(round(slop_s * 1e9))
        self.pose_from = pose_from
        self.name = f"bag:{self.path.name}"
        self.stats = SourceStats()
        pose_topic = topics.pose if pose_from == "pose" else topics.tf
        with self._open() as reader:
            present = {t: info for t, info in reader.topics.items()}
            for topic in (topics.rgb, topics.depth, topics.camera_info, pose_topic):
                if topic not in present:
                    raise MissingTopicError(
                        f"{self.path}: bag has no topic {topic!r}; topics present: {sorted(present) or 'none'}"
                    )
            self._n_rgb = int(present[topics.rgb].msgcount)
            infos, poses = self._read_small(reader, pose_topic)
        self._infos = _Timed(infos)
        self._poses = _Timed(poses)
        first = self._infos.values[0] if self._infos.values else None
        if first is None:
            raise DatasetFormatError(f"{self.path}: no valid message on {topics.camera_info}")
        self._intrinsics: CameraIntrinsics = first
        self._keep: range = range(self._n_rgb)  # rgb indices this source yields (see subset)

    @contextmanager
    def _open(self) -> Iterator[Reader]:
        """An open reader; unreadable bags (no metadata, corrupt storage) become DatasetFormatError."""
        try:
            reader = Reader(self.path)
            reader.open()
        except (ReaderError, FileNotFoundError, OSError) as e:
            raise DatasetFormatError(f"{self.path}: not a readable rosbag2 directory ({e})") from None
        try:
            yield reader
        finally:
            reader.close()

    def _deserialize(self, raw: bytes, conn: Any, topic: str, bag_ns: int) -> Any | None:
        try:
            return TYPESTORE.deserialize_cdr(raw, conn.msgtype)
        except Exception as e:  # rosbags raises assorted errors on corrupt CDR
            self.stats.skip(f"{topic} message at {bag_ns} ns does not deserialise as {conn.msgtype}: {e}")
            return None

    def _read_small(self, reader: Reader, pose_topic: str) -> tuple[list, list]:
        """Load every camera info and pose (small messages) into memory."""
        conns = [c for c in reader.connections if c.topic in (self.topics.camera_info, pose_topic)]
        infos: list[tuple[int, CameraIntrinsics]] = []
        poses: list[tuple[int, np.ndarray]] = []
        for conn, bag_ns, raw in reader.messages(connections=conns):
            msg = self._deserialize(raw, conn, conn.topic, bag_ns)
            if msg is None:
                continue
            try:
                if conn.topic == self.topics.camera_info:
                    infos.append((stamp_ns_of(msg.header), intrinsics_from_camera_info(msg)))
                elif self.pose_from == "pose":
                    poses.append((stamp_ns_of(msg.header), pose_from_msg(msg.pose)))
                else:
                    for ts in msg.transforms:
                        if ts.header.frame_id.lstrip("/") == self.topics.world_frame.lstrip("/") and (
                            ts.child_frame_id.lstrip("/") == self.topics.camera_frame.lstrip("/")
                        ):
                            poses.append((stamp_ns_of(ts.header), pose_from_transform(ts.transform)))
            except (InvalidIntrinsicsError, InvalidPoseError, AttributeError) as e:
                self.stats.skip(f"{conn.topic} message at {bag_ns} ns is unusable: {e}")
        return infos, poses

    @property
    def intrinsics(self) -> CameraIntrinsics:
        return self._intrinsics

    def __len__(self) -> int:
        return len(self._keep)

    def subset(self, start: int = 0, stop: int | None = None, step: int = 1) -> "BagFrameSource":
        """A source over rgb messages ``[start:stop:step]`` of this one (fresh stats; same bag)."""
        if step <= 0:
            raise ValueError(f"subset step must be positive, got {step}")
        sub = object.__new__(BagFrameSource)
        sub.__dict__.update(self.__dict__)
        sub._keep = self._keep[start:stop:step]
        sub.stats = SourceStats()
        return sub

    def __repr__(self) -> str:
        return f"BagFrameSource({str(self.path)!r}, rgb messages={self._n_rgb}, pose_from={self.pose_from!r})"

    def __iter__(self) -> Iterator[Frame]:
        """Stream frames in rgb order, holding only the depth images within the slop window."""
        pending: deque[tuple[int, int, Any]] = deque()  # (stamp, rgb index, rgb msg)
        depths: deque[tuple[int, Any]] = deque()  # (stamp, depth msg), roughly stamp-ordered
        newest_depth = -(2**62)
        n_rgb = 0
        with self._open() as reader:
            conns = [c for c in reader.connections if c.topic in (self.topics.rgb, self.topics.depth)]
            for conn, bag_ns, raw in reader.messages(connections=conns):
                msg = self._deserialize(raw, conn, conn.topic, bag_ns)
                if msg is None:
                    continue
                stamp = stamp_ns_of(msg.header)
                if conn.topic == self.topics.rgb:
                    pending.append((stamp, n_rgb, msg))
                    n_rgb += 1
                else:
                    depths.append((stamp, msg))
                    newest_depth = max(newest_depth, stamp)
                # an rgb image is decided once a depth image newer than its slop window arrived
                while pending and pending[0][0] + self.slop_ns < newest_depth:
                    frame = self._assemble(*pending.popleft(), depths)
                    if frame is not None:
                        yield frame
                if n_rgb > self._keep.stop and not pending and self._keep.step > 0:
                    break  # past the requested part of the bag
                oldest = pending[0][0] if pending else newest_depth
                while depths and depths[0][0] < oldest - self.slop_ns:
                    depths.popleft()
            while pending:
                frame = self._assemble(*pending.popleft(), depths)
                if frame is not None:
                    yield frame

    def _assemble(self, stamp: int, index: int, rgb_msg: Any, depths: deque) -> Frame | None:
        if index not in self._keep:
            return None
        where = f"rgb message {index} ({stamp} ns)"
        best = min(depths, key=lambda d: abs(d[0] - stamp), default=None)
        if best is None or abs(best[0] - stamp) > self.slop_ns:
            self.stats.skip(f"{where}: no {self.topics.depth} message within {self.slop_ns * 1e-9:.3f} s")
            return None
        pose = self._poses.nearest(stamp, self.slop_ns)
        if pose is None:
            src = self.topics.pose if self.pose_from == "pose" else self.topics.tf
            self.stats.skip(f"{where}: no pose on {src} within {self.slop_ns * 1e-9:.3f} s")
            return None
        try:
            rgb = self._decode(rgb_msg, self.topics.rgb, want_depth=False)
            depth = self._decode(best[1], self.topics.depth, want_depth=True)
            frame = Frame(
                stamp_ns=stamp,
                rgb=rgb,
                depth=depth,
                intrinsics=self._infos.latest(stamp),
                T_world_camera=pose,
                frame_id=rgb_msg.header.frame_id or self.topics.camera_frame,
                index=index,
            ).validate()
        except (ImageDecodeError, InvalidFrameError, InvalidPoseError) as e:
            self.stats.skip(f"{where}: {e}")
            return None
        self.stats.yielded += 1
        return frame

    @staticmethod
    def _decode(msg: Any, topic: str, want_depth: bool) -> np.ndarray:
        if is_depth_encoding(msg.encoding) != want_depth:
            kind = "depth" if want_depth else "colour"
            raise ImageDecodeError(f"{topic}: expected a {kind} image, got encoding {msg.encoding!r}")
        try:
            return decode_image(msg.data, msg.width, msg.height, msg.encoding, msg.step, msg.is_bigendian)
        except ImageDecodeError as e:
            raise ImageDecodeError(f"{topic}: {e}") from None
