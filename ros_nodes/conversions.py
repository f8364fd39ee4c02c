"""ROS message <-> numpy conversions: our replacement for cv_bridge and tf2 geometry helpers.

cv_bridge, tf2_geometry_msgs and sensor_msgs_py are not available as wheels, so the nodes use
these small functions instead. Image payloads go through :mod:`sim.image_codec` (one codec for
datasets, bags and topics). Conventions: rgb ``[H, W, 3] uint8``; depth ``[H, W] float32``
metres (0/NaN invalid); poses ``[4, 4] float64`` ``T_parent_child``; quaternions ``[x, y, z, w]``.

Every function raises a typed error (``ImageDecodeError``, ``UnsupportedEncodingError``,
``InvalidIntrinsicsError``, ``InvalidPoseError``, ``InvalidFrameError``) naming what is wrong, so a
node can count and skip a bad message.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, Transform, TransformStamped, Vector3
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from sim.image_codec import COLOR_ENCODINGS, DEPTH_ENCODINGS, decode_image, encode_image
from spatial_memory.errors import (
    ImageDecodeError,
    InvalidFrameError,
    InvalidIntrinsicsError,
    InvalidPoseError,
    UnsupportedEncodingError,
)
from spatial_memory.geometry import pose_from_tq, tq_from_pose, validate_pose
from spatial_memory.types import CameraIntrinsics, Frame

# ---------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------


def stamp_to_ns(stamp: Time) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds (>= 0) -> ``builtin_interfaces/Time``."""
    ns = int(ns)
    if ns < 0:
        raise ValueError(f"ROS time cannot be negative, got {ns} ns")
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def make_header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


# ---------------------------------------------------------------------------------------------
# Images (cv_bridge replacement)
# ---------------------------------------------------------------------------------------------


def image_msg_to_numpy(msg: Image) -> np.ndarray:
    """Decode a ``sensor_msgs/Image``.

    Returns:
        colour encodings: ``[H, W, 3] uint8`` rgb; depth encodings (16UC1 mm, 32FC1 m): ``[H, W] float32`` metres.

    Raises:
        UnsupportedEncodingError, ImageDecodeError
    """
    return decode_image(bytes(msg.data), int(msg.width), int(msg.height), msg.encoding, int(msg.step), int(msg.is_bigendian))


def rgb_msg_to_numpy(msg: Image) -> np.ndarray:
    """Decode a colour image to ``[H, W, 3] uint8`` rgb; a depth encoding here is an error
    (ImageDecodeError), an unknown one an UnsupportedEncodingError."""
    if msg.encoding in DEPTH_ENCODINGS:
        raise ImageDecodeError(
            f"colour topic carries encoding {msg.encoding!r}; expected one of {', '.join(COLOR_ENCODINGS)}"
        )
    return image_msg_to_numpy(msg)


def depth_msg_to_numpy(msg: Image) -> np.ndarray:
    """Decode a depth image to ``[H, W] float32`` metres; a colour encoding here is an error
    (ImageDecodeError), an unknown one an UnsupportedEncodingError."""
    if msg.encoding in COLOR_ENCODINGS:
        raise ImageDecodeError(
            f"depth topic carries encoding {msg.encoding!r}; expected one of {', '.join(DEPTH_ENCODINGS)}"
        )
    return image_msg_to_numpy(msg)


def numpy_to_image_msg(arr: np.ndarray, encoding: str, stamp_ns: int = 0, frame_id: str = "") -> Image:
    """Encode ``arr`` (rgb ``[H, W, 3] uint8`` for colour encodings, ``[H, W]`` metres for depth) as an Image."""
    data, step = encode_image(arr, encoding)
    msg = Image()
    msg.header = make_header(stamp_ns, frame_id)
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(step)
    msg.data = data
    return msg


def instances_to_image_msg(ids: np.ndarray, stamp_ns: int = 0, frame_id: str = "") -> Image:
    """Instance-id image ``[H, W]`` (0 = background) as ``16UC1`` (ids < 65536) or ``32SC1``.

    The raw integer ids are carried unscaled (unlike 16UC1 depth, which means millimetres).
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise InvalidFrameError(f"instance ids must be an HxW integer image, got {ids.shape} {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.int32).max):
        raise InvalidFrameError(f"instance ids must be in [0, 2^31), got [{ids.min()}, {ids.max()}]")
    small = ids.size == 0 or ids.max() < 65536
    arr = np.ascontiguousarray(ids.astype("<u2" if small else "<i4"))
    msg = Image()
    msg.header = make_header(stamp_ns, frame_id)
    msg.height, msg.width = int(ids.shape[0]), int(ids.shape[1])
    msg.encoding = "16UC1" if small else "32SC1"
    msg.is_bigendian = 0
    msg.step = int(arr.shape[1] * arr.itemsize)
    msg.data = arr.tobytes()
    return msg


def instance_msg_to_numpy(msg: Image) -> np.ndarray:
    """Decode an instance-id image (``16UC1`` or ``32SC1``, raw ids) to ``[H, W] int32``."""
    dtypes = {"16UC1": np.dtype(np.uint16), "32SC1": np.dtype(np.int32)}
    if msg.encoding not in dtypes:
        raise UnsupportedEncodingError(f"instance image encoding {msg.encoding!r}; expected 16UC1 or 32SC1")
    dt = dtypes[msg.encoding].newbyteorder(">" if msg.is_bigendian else "<")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if buf.size == 0 or h <= 0 or w <= 0:
        raise ImageDecodeError(f"instance image {w}x{h}: empty")
    if step < w * dt.itemsize or buf.size != step * h:
        raise ImageDecodeError(f"instance image {w}x{h}: {buf.size} bytes with step {step} is inconsistent")
    rows = np.ascontiguousarray(buf.reshape(h, step)[:, : w * dt.itemsize])
    return rows.view(dt).reshape(h, w).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Camera calibration
# ---------------------------------------------------------------------------------------------


def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    """Pinhole intrinsics from ``CameraInfo.k`` (row-major 3x3). Distortion is ignored: rectified or
    aligned streams (RealSense ``aligned_depth_to_color``) are expected.

    Raises:
        InvalidIntrinsicsError: all-zero / non-finite K, or zero size (an uncalibrated camera).
    """
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.any(K):
        raise InvalidIntrinsicsError(f"CameraInfo (frame {msg.header.frame_id!r}) has an all-zero K: camera not calibrated")
    return CameraIntrinsics.from_K(K, int(msg.width), int(msg.height))


def intrinsics_to_camera_info(intr: CameraIntrinsics, stamp_ns: int = 0, frame_id: str = "") -> CameraInfo:
    """``CameraInfo`` of an undistorted pinhole camera (K, P = [K | 0], R = I, plumb_bob with zero D)."""
    msg = CameraInfo()
    msg.header = make_header(stamp_ns, frame_id)
    msg.width, msg.height = intr.width, intr.height
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = intr.K.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    P = np.zeros((3, 4))
    P[:, :3] = intr.K
    msg.p = P.reshape(-1).tolist()
    return msg


# ---------------------------------------------------------------------------------------------
# Poses and transforms
# ---------------------------------------------------------------------------------------------


def _quat_array(q: Quaternion) -> np.ndarray:
    return np.array([q.x, q.y, q.z, q.w], dtype=np.float64)


def _tq_to_matrix(t: np.ndarray, q: np.ndarray, name: str) -> np.ndarray:
    """Translation ``[3]`` + quaternion xyzw ``[4]`` -> ``[4, 4]``; InvalidPoseError names ``name``."""
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise InvalidPoseError(f"{name}: contains NaN or inf (t={t.tolist()}, q={q.tolist()})")
    try:
        return pose_from_tq(t, q)
    except InvalidPoseError as e:
        raise InvalidPoseError(f"{name}: {e}") from None


def pose_msg_to_matrix(pose: Pose, name: str = "pose") -> np.ndarray:
    """``geometry_msgs/Pose`` -> ``[4, 4]``. Raises InvalidPoseError on NaN/inf or a zero quaternion."""
    t = np.array([pose.position.x, pose.position.y, pose.position.z], dtype=np.float64)
    return _tq_to_matrix(t, _quat_array(pose.orientation), name)


def matrix_to_pose_msg(T: np.ndarray) -> Pose:
    """``[4, 4]`` rigid transform -> ``geometry_msgs/Pose`` (validated first)."""
    t, q = tq_from_pose(validate_pose(T))
    return Pose(
        position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def transform_msg_to_matrix(tf: Transform, name: str = "transform") -> np.ndarray:
    """``geometry_msgs/Transform`` -> ``[4, 4]``."""
    t = np.array([tf.translation.x, tf.translation.y, tf.translation.z], dtype=np.float64)
    return _tq_to_matrix(t, _quat_array(tf.rotation), name)


def matrix_to_transform_msg(T: np.ndarray) -> Transform:
    """``[4, 4]`` -> ``geometry_msgs/Transform``."""
    t, q = tq_from_pose(validate_pose(T))
    return Transform(
        translation=Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def pose_stamped_to_matrix(msg: PoseStamped) -> np.ndarray:
    return pose_msg_to_matrix(msg.pose, f"PoseStamped in {msg.header.frame_id!r}")


def matrix_to_pose_stamped(T: np.ndarray, stamp_ns: int, frame_id: str) -> PoseStamped:
    return PoseStamped(header=make_header(stamp_ns, frame_id), pose=matrix_to_pose_msg(T))


def odometry_to_matrix(msg: Odometry) -> np.ndarray:
    """``T_{header.frame_id}_{child_frame_id}`` of an Odometry message."""
    return pose_msg_to_matrix(msg.pose.pose, f"Odometry {msg.header.frame_id!r}->{msg.child_frame_id!r}")


def matrix_to_transform_stamped(T: np.ndarray, stamp_ns: int, parent: str, child: str) -> TransformStamped:
    return TransformStamped(header=make_header(stamp_ns, parent), child_frame_id=child, transform=matrix_to_transform_msg(T))


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------


def frame_from_messages(
    rgb_msg: Image,
    depth_msg: Image | None,
    intrinsics: CameraIntrinsics,
    T_world_camera: np.ndarray | None,
    index: int = -1,
    instances_msg: Image | None = None,
    id_to_label: dict[int, str] | None = None,
) -> Frame:
    """Assemble and validate a :class:`Frame` from synchronised messages.

    The colour image must match the ``CameraInfo`` size and the depth image the colour image
    (depth registered to colour, e.g. RealSense ``aligned_depth_to_color``). An optional
    instance-id image (simulator ground truth, or a segmentation node) with its ``id_to_label``
    becomes ``Frame.instance_ids`` / ``Frame.id_to_label``.

    Raises:
        ImageDecodeError, UnsupportedEncodingError, InvalidFrameError, InvalidPoseError
    """
    rgb = rgb_msg_to_numpy(rgb_msg)
    depth = depth_msg_to_numpy(depth_msg) if depth_msg is not None else None
    if depth is not None and depth.shape != rgb.shape[:2]:
        raise InvalidFrameError(
            f"rgb is {rgb.shape[1]}x{rgb.shape[0]} but depth is {depth.shape[1]}x{depth.shape[0]}; "
            "publish depth registered to colour (e.g. aligned_depth_to_color)"
        )
    ids = instance_msg_to_numpy(instances_msg) if instances_msg is not None else None
    frame = Frame(
        stamp_ns=stamp_to_ns(rgb_msg.header.stamp),
        rgb=rgb,
        depth=depth,
        intrinsics=intrinsics,
        T_world_camera=T_world_camera,
        instance_ids=ids,
        id_to_label=dict(id_to_label or {}),
        frame_id=rgb_msg.header.frame_id or "camera_color_optical_frame",
        index=index,
    )
    return frame.validate()


def labels_to_json(id_to_label: dict[int, str]) -> str:
    """``{id: label}`` as the JSON text of the ``camera/instances/labels`` String message."""
    import json

    return json.dumps({str(int(k)): str(v) for k, v in sorted(id_to_label.items())}, sort_keys=True)


def labels_from_json(text: str) -> dict[int, str]:
    """Inverse of :func:`labels_to_json`; raises InvalidFrameError on malformed JSON."""
    import json

    try:
        d = json.loads(text)
        return {int(k): str(v) for k, v in d.items()}
    except (ValueError, AttributeError, TypeError) as e:
        raise InvalidFrameError(f"instance label map is not a JSON object of id -> label: {e}") from None


# ---------------------------------------------------------------------------------------------
# Point clouds and markers (sensor_msgs_py replacement)
# ---------------------------------------------------------------------------------------------

_XYZRGB_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])


def points_to_pointcloud2(xyz: np.ndarray, rgb: np.ndarray | None, stamp_ns: int, frame_id: str) -> PointCloud2:
    """Pack ``xyz: [N, 3]`` and optional ``rgb: [N, 3] uint8`` into an unorganised PointCloud2.

    The colour is the packed ``0x00RRGGBB`` uint32 field named ``rgb`` (RViz's convention, UINT32
    datatype so the bits survive untouched).
    """
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    n = xyz.shape[0]
    rec = np.zeros(n, dtype=_XYZRGB_DTYPE)
    rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if rgb is not None:
        c = np.asarray(rgb, dtype=np.uint32).reshape(-1, 3)
        if c.shape[0] != n:
            raise ValueError(f"rgb has {c.shape[0]} rows but xyz has {n}")
        rec["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    msg = PointCloud2()
    msg.header = make_header(stamp_ns, frame_id)
    msg.height, msg.width = 1, n
    msg.fields = [
        PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name="rgb", offset=12, datatype=PointField.UINT32, count=1),
    ]
    msg.is_bigendian = False
    msg.point_step = _XYZRGB_DTYPE.itemsize
    msg.row_step = msg.point_step * n
    msg.is_dense = bool(np.all(np.isfinite(xyz)))
    msg.data = rec.tobytes()
    return msg


def pointcloud2_to_points(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`points_to_pointcloud2`: ``xyz [N, 3] float32``, ``rgb [N, 3] uint8``."""
    names = [f.name for f in msg.fields]
    if names[:4] != ["x", "y", "z", "rgb"] or msg.point_step != _XYZRGB_DTYPE.itemsize:
        raise ImageDecodeError(f"PointCloud2 layout {names} / point_step {msg.point_step} is not x,y,z,rgb(uint32)")
    rec = np.frombuffer(bytes(msg.data), dtype=_XYZRGB_DTYPE)
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], axis=1)
    c = rec["rgb"]
    rgb = np.stack([(c >> 16) & 255, (c >> 8) & 255, c & 255], axis=1).astype(np.uint8)
    return xyz, rgb


def hits_to_marker_array(
    hits: Sequence, stamp_ns: int, frame_id: str, namespace: str = "query", lifetime_s: float = 0.0
) -> MarkerArray:
    """One translucent box (at ``position``, size ``extent``) and one text label per query hit.

    ``hits`` are objects with ``label``, ``position [3]``, ``extent [3]``, ``score``. A leading
    DELETEALL clears the markers of the previous query.
    """
    out = MarkerArray()
    header = make_header(stamp_ns, frame_id)
    out.markers.append(Marker(header=header, ns=namespace, action=Marker.DELETEALL))
    life = ns_to_stamp(int(lifetime_s * 1e9))
    for i, h in enumerate(hits):
        p = np.asarray(h.position, dtype=np.float64).reshape(3)
        e = np.maximum(np.asarray(h.extent, dtype=np.float64).reshape(3), 0.02)
        box = Marker(header=header, ns=namespace, id=2 * i, type=Marker.CUBE, action=Marker.ADD)
        box.pose.position = Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
        box.pose.orientation.w = 1.0
        box.scale = Vector3(x=float(e[0]), y=float(e[1]), z=float(e[2]))
        s = float(np.clip(h.score, 0.0, 1.0))
        box.color.r, box.color.g, box.color.b, box.color.a = 1.0 - s, s, 0.2, 0.5
        box.lifetime = life
        text = Marker(header=header, ns=namespace, id=2 * i + 1, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.pose.position = Point(x=float(p[0]), y=float(p[1]), z=float(p[2] + e[2] / 2 + 0.1))
        text.pose.orientation.w = 1.0
        text.scale.z = 0.15
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.text = f"{h.label} {s:.2f}"
        text.lifetime = life
        out.markers.extend([box, text])
    return out


def vector3(v: Iterable[float]) -> Vector3:
    x, y, z = (float(a) for a in v)
    return Vector3(x=x, y=y, z=z)


def point(v: Iterable[float]) -> Point:
    x, y, z = (float(a) for a in v)
    return Point(x=x, y=y, z=z)
