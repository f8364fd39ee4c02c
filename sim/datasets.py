"""Frame sources over recorded RGB-D datasets on disk: 7-Scenes, TUM RGB-D, ICL-NUIM/Redwood.

Every source follows :class:`sim.source.FrameSource` and yields validated :class:`Frame` s with
depth in float32 metres (0 invalid) and ``T_world_camera`` camera-to-world poses (OpenCV
optical frame, as all three datasets store them). Construction only reads the index files
(lists, trajectories); images are decoded lazily while streaming, and a bad frame (corrupt or
truncated image, missing depth file, rgb/depth size mismatch, non-rigid pose) is skipped,
counted in ``stats`` with a reason naming the file, and the stream goes on.

Sources can be cut into parts with :meth:`DatasetSource.subset` or :meth:`DatasetSource.frames`
(e.g. map on frames 0-99 and query on 100-199); ``Frame.index`` always keeps the frame's
position in the full sequence.
"""

from __future__ import annotations

import json
import logging
import re
from decimal import Decimal, InvalidOperation
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from spatial_memory.errors import (
    DatasetFormatError,
    ImageDecodeError,
    InvalidFrameError,
    InvalidIntrinsicsError,
    InvalidPoseError,
)
from spatial_memory.geometry import pose_from_tq, validate_pose
from spatial_memory.types import CameraIntrinsics, Frame

from .image_codec import read_depth_png, read_image_file
from .source import FrameSource, SourceStats

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")

# Re-expresses a y-up dataset world (the ICL-NUIM ground-truth world of open3d_rgbd_samples)
# in the project's z-up world: +90 deg about x, so dataset +y becomes world +z. Use with
# DatasetSource.aligned(). (The 211-frame ICL estimate's world is its first camera, y down:
# align it with make_pose(R_BODY_OPTICAL, 0) from spatial_memory.geometry instead.)
Y_UP_TO_Z_UP = np.array([[1.0, 0, 0, 0], [0, 0, -1.0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])

# Open3D's PrimeSense default, which the ICL-NUIM/Redwood data vendored by Open3D is used with.
PRIMESENSE_DEFAULT = CameraIntrinsics(640, 480, 525.0, 525.0, 319.5, 239.5)
# 7-Scenes (Kinect v1) nominal calibration from the dataset's page.
SEVEN_SCENES_DEFAULT = CameraIntrinsics(640, 480, 585.0, 585.0, 320.0, 240.0)
# TUM RGB-D calibrations (https://cvg.cit.tum.de/data/datasets/rgbd-dataset/file_formats);
# "ros_default" is what TUM recommends for the registered depth of any sequence.
TUM_INTRINSICS: dict[str, CameraIntrinsics] = {
    "ros_default": CameraIntrinsics(640, 480, 525.0, 525.0, 319.5, 239.5),
    "freiburg1": CameraIntrinsics(640, 480, 517.3, 516.5, 318.6, 255.3),
    "freiburg2": CameraIntrinsics(640, 480, 520.9, 521.0, 325.1, 249.7),
    "freiburg3": CameraIntrinsics(640, 480, 535.4, 539.2, 320.1, 247.6),
}


@dataclass(frozen=True)
class FrameEntry:
    """Where one frame's data lives; decoded only when streamed.

    ``index`` is the frame's position in the full sequence; ``T_world_camera`` is the raw
    (unvalidated) ``[4, 4]`` pose or None when the dataset has none for this frame.
    """

    index: int
    stamp_ns: int
    rgb_path: Path
    depth_path: Path | None
    T_world_camera: np.ndarray | None = None
    pose_path: Path | None = None  # per-frame pose file (7-Scenes), read while streaming
    instance_path: Path | None = None  # uint16 instance-id PNG (folders written by sim.export)


class DatasetSource:
    """Shared streaming logic of the dataset readers: a list of :class:`FrameEntry` plus
    how to decode depth. Subclasses only parse their layout into entries."""

    name: str
    stats: SourceStats

    def __init__(
        self,
        name: str,
        entries: Sequence[FrameEntry],
        intrinsics: CameraIntrinsics,
        depth_scale: float,
        depth_invalid_values: tuple[int, ...] = (0,),
    ) -> None:
        self.name = name
        self.stats = SourceStats()
        self._entries = list(entries)
        self._intrinsics = intrinsics
        self.depth_scale = float(depth_scale)
        self.depth_invalid_values = tuple(depth_invalid_values)
        self.T_world_dataset: np.ndarray | None = None
        self.id_to_label: dict[int, str] = {}  # semantics of instance-id images, when present

    @property
    def intrinsics(self) -> CameraIntrinsics:
        return self._intrinsics

    @property
    def entries(self) -> list[FrameEntry]:
        return list(self._entries)

    @property
    def indices(self) -> list[int]:
        """Sequence indices of the frames this source streams, in order."""
        return [e.index for e in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, frames={len(self)})"

    def _with_entries(self, entries: Sequence[FrameEntry], suffix: str) -> "DatasetSource":
        sub = object.__new__(type(self))
        sub.__dict__.update(self.__dict__)
        sub._entries = list(entries)
        sub.stats = SourceStats()
        sub.name = f"{self.name}{suffix}"
        return sub

    def subset(self, start: int = 0, stop: int | None = None, step: int = 1) -> "DatasetSource":
        """A source over ``entries[start:stop:step]`` (positions in this source) with fresh stats."""
        if step <= 0:
            raise ValueError(f"subset step must be positive, got {step}")
        picked = self._entries[start:stop:step]
        return self._with_entries(picked, f"[{start}:{'' if stop is None else stop}:{step}]")

    def frames(self, indices: Iterable[int]) -> "DatasetSource":
        """A source over the frames whose sequence index (``Frame.index``) is in ``indices``,
        in the given order. Unknown indices raise ``IndexError`` naming them."""
        by_index = {e.index: e for e in self._entries}
        wanted = [int(i) for i in indices]
        missing = [i for i in wanted if i not in by_index]
        if missing:
            raise IndexError(f"{self.name}: no frames with index {missing[:10]} (has {len(by_index)} frames)")
        return self._with_entries([by_index[i] for i in wanted], f"[{len(wanted)} frames]")

    def aligned(self, T_world_dataset: np.ndarray) -> "DatasetSource":
        """A source whose poses are ``T_world_dataset @ T_dataset_camera``: re-expresses the
        dataset's own world frame (e.g. y-up, see :data:`Y_UP_TO_Z_UP`) in the caller's."""
        T = validate_pose(T_world_dataset, "T_world_dataset")
        sub = self._with_entries(self._entries, "")
        sub.T_world_dataset = T if self.T_world_dataset is None else T @ self.T_world_dataset
        return sub

    def __getitem__(self, pos: int) -> Frame:
        """Load the frame at position ``pos`` of this source; raises instead of skipping."""
        return self._load(self._entries[pos])

    def __iter__(self) -> Iterator[Frame]:
        for entry in self._entries:
            try:
                frame = self._load(entry)
            except (ImageDecodeError, InvalidFrameError, InvalidPoseError, DatasetFormatError) as e:
                self.stats.skip(f"{self.name} frame {entry.index}: {e}")
                continue
            self.stats.yielded += 1
            yield frame

    def _pose(self, entry: FrameEntry) -> np.ndarray | None:
        T = entry.T_world_camera if entry.pose_path is None else _read_matrix4(entry.pose_path)
        if T is None or self.T_world_dataset is None:
            return T
        return self.T_world_dataset @ T

    def _load(self, entry: FrameEntry) -> Frame:
        rgb = read_image_file(entry.rgb_path)
        depth = None
        if entry.depth_path is not None:
            depth = read_depth_png(entry.depth_path, self.depth_scale, self.depth_invalid_values)
        ids = None
        if entry.instance_path is not None:
            ids = read_instance_png(entry.instance_path)
        frame = Frame(
            stamp_ns=entry.stamp_ns,
            rgb=rgb,
            depth=depth,
            intrinsics=self._intrinsics,
            T_world_camera=self._pose(entry),
            instance_ids=ids,
            id_to_label=dict(self.id_to_label) if ids is not None else {},
            index=entry.index,
        )
        try:
            return frame.validate()
        except (InvalidFrameError, InvalidPoseError) as e:
            raise type(e)(f"{entry.rgb_path}: {e}") from None


# ---------------------------------------------------------------------------- parsing helpers

def read_instance_png(path: Path) -> np.ndarray:
    """``[H, W] int32`` instance ids from a single-channel 8/16-bit PNG (0 = background)."""
    data = path.read_bytes() if path.is_file() else b""
    if not data:
        raise ImageDecodeError(f"{path}: instance-id image missing or empty")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 2 or img.dtype not in (np.uint8, np.uint16):
        raise ImageDecodeError(f"{path}: not a single-channel 8/16-bit instance-id PNG")
    return img.astype(np.int32)


def read_label_map(path: Path) -> dict[int, str]:
    """``labels.json`` (``{"instance id": "label"}``) as ``{int: str}``."""
    try:
        return {int(k): str(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError) as e:
        raise DatasetFormatError(f"{path}: not a label map {{id: label}} ({e})") from None


def _read_matrix4(path: Path) -> np.ndarray:
    """A 4x4 matrix from a whitespace-separated text file (7-Scenes ``.pose.txt``)."""
    try:
        vals = np.array(path.read_text().split(), dtype=np.float64)
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: pose file not found") from None
    except ValueError as e:
        raise DatasetFormatError(f"{path}: pose file has non-numeric values ({e})") from None
    if vals.size != 16:
        raise DatasetFormatError(f"{path}: expected 16 numbers (a 4x4 pose), found {vals.size}")
    return vals.reshape(4, 4)


def read_redwood_log(path: str | Path) -> dict[int, np.ndarray]:
    """Parse a Redwood/Open3D ``.log`` trajectory: per frame a line ``id id n`` and 4 matrix rows.

    Returns:
        frame id (first number of the metadata line) -> ``[4, 4]`` camera-to-world matrix
        (unvalidated: a corrupt pose is caught when its frame is streamed).

    Raises:
        DatasetFormatError: naming the file and the line when the layout is broken.
    """
    path = Path(path)
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except OSError as e:
        raise DatasetFormatError(f"{path}: cannot read trajectory ({e})") from None
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if len(lines) % 5 != 0 or not lines:
        raise DatasetFormatError(f"{path}: a .log trajectory needs 5 lines per frame, found {len(lines)} lines")
    poses: dict[int, np.ndarray] = {}
    for k in range(0, len(lines), 5):
        try:
            meta = [int(x) for x in lines[k].split()]
            mat = np.array([[float(x) for x in lines[k + r].split()] for r in range(1, 5)], dtype=np.float64)
        except ValueError as e:
            raise DatasetFormatError(f"{path}: line {k + 1}: {e}") from None
        if len(meta) < 1 or mat.shape != (4, 4):
            raise DatasetFormatError(f"{path}: line {k + 1}: expected 'id id n' and a 4x4 matrix")
        poses[meta[0]] = mat
    return poses


def read_open3d_intrinsics(path: str | Path) -> CameraIntrinsics:
    """Open3D ``PinholeCameraIntrinsic`` JSON (``width``, ``height``, column-major ``intrinsic_matrix``)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
        K = np.array(d["intrinsic_matrix"], dtype=np.float64).reshape(3, 3).T  # stored column-major
        return CameraIntrinsics.from_K(K, int(d["width"]), int(d["height"]))
    except (OSError, ValueError, KeyError, TypeError, InvalidIntrinsicsError) as e:
        raise DatasetFormatError(f"{path}: not an Open3D intrinsics JSON ({type(e).__name__}: {e})") from None


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _intrinsics_for_size(intr: CameraIntrinsics, rgb_path: Path) -> CameraIntrinsics:
    """Rescale default intrinsics when the dataset's images have another resolution."""
    w, h = _image_size(rgb_path, (intr.width, intr.height))
    return intr if (w, h) == (intr.width, intr.height) else intr.scaled(w, h)


# ---------------------------------------------------------------------------- 7-Scenes

_SEVEN_RE = re.compile(r"^frame-(\d+)\.color\.(png|jpg)$")


def read_seven_scenes_intrinsics(path: Path, size: tuple[int, int] = (640, 480)) -> CameraIntrinsics:
    """``camera-intrinsics.txt``: a 3x3 K (9 numbers; image ``size`` = (width, height) given
    separately) or ``fx fy cx cy [width height]``."""
    try:
        vals = [float(x) for x in path.read_text().split()]
    except (OSError, ValueError) as e:
        raise DatasetFormatError(f"{path}: unreadable intrinsics ({e})") from None
    try:
        if len(vals) == 9:
            return CameraIntrinsics.from_K(np.array(vals).reshape(3, 3), size[0], size[1])
        if len(vals) in (4, 6):
            w, h = (int(vals[4]), int(vals[5])) if len(vals) == 6 else size
            return CameraIntrinsics(w, h, vals[0], vals[1], vals[2], vals[3])
    except InvalidIntrinsicsError as e:
        raise DatasetFormatError(f"{path}: {e}") from None
    raise DatasetFormatError(f"{path}: expected 9 numbers (K) or 'fx fy cx cy [w h]', found {len(vals)}")


def _read_intrinsics_json(path: Path) -> CameraIntrinsics:
    """The project's own ``intrinsics.json`` (``CameraIntrinsics.to_dict``)."""
    try:
        return CameraIntrinsics.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, InvalidIntrinsicsError) as e:
        raise DatasetFormatError(f"{path}: not an intrinsics JSON ({type(e).__name__}: {e})") from None


def _image_size(rgb_path: Path, default: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = read_image_file(rgb_path).shape[:2]
    except ImageDecodeError:
        return default  # the bad first frame is skipped while streaming
    return w, h


class SevenScenesSource(DatasetSource):
    """One 7-Scenes sequence folder (``seq-01``): ``frame-XXXXXX.color.png|jpg``,
    ``frame-XXXXXX.depth.png`` (mm, 0 and 65535 invalid), ``frame-XXXXXX.pose.txt`` (4x4
    camera-to-world). Intrinsics: argument, else ``camera-intrinsics.txt`` in the folder or its
    parent, else the dataset default (fx=fy=585, cx=320, cy=240). 7-Scenes has no timestamps:
    stamps are ``index / fps``.
    """

    def __init__(self, seq_dir: str | Path, intrinsics: CameraIntrinsics | None = None, fps: float = 30.0) -> None:
        seq_dir = Path(seq_dir)
        if not seq_dir.is_dir():
            raise DatasetFormatError(f"{seq_dir}: not a directory (expected a 7-Scenes sequence folder)")
        found = []
        for p in seq_dir.iterdir():
            m = _SEVEN_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        if not found:
            raise DatasetFormatError(f"{seq_dir}: no 7-Scenes frames (frame-XXXXXX.color.png|jpg) found")
        found.sort()
        entries = [
            FrameEntry(
                index=m,
                stamp_ns=int(round(m * 1e9 / fps)),
                rgb_path=p,
                depth_path=seq_dir / f"frame-{m:06d}.depth.png",
                pose_path=seq_dir / f"frame-{m:06d}.pose.txt",
                instance_path=inst if (inst := seq_dir / f"frame-{m:06d}.instance.png").is_file() else None,
            )
            for m, p in found
        ]
        if intrinsics is None:
            intrinsics = self._find_intrinsics(seq_dir, entries[0].rgb_path)
        super().__init__(f"7scenes:{seq_dir.name}", entries, intrinsics, 1000.0, (0, 65535))
        if (seq_dir / "labels.json").is_file():
            self.id_to_label = read_label_map(seq_dir / "labels.json")

    @staticmethod
    def _find_intrinsics(seq_dir: Path, first_rgb: Path) -> CameraIntrinsics:
        if (seq_dir / "intrinsics.json").is_file():  # written by sim.export with the image size
            return _read_intrinsics_json(seq_dir / "intrinsics.json")
        for cand in (seq_dir / "camera-intrinsics.txt", seq_dir.parent / "camera-intrinsics.txt"):
            if cand.is_file():
                return read_seven_scenes_intrinsics(cand, _image_size(first_rgb, (640, 480)))
        return _intrinsics_for_size(SEVEN_SCENES_DEFAULT, first_rgb)


# ---------------------------------------------------------------------------- TUM RGB-D

def stamp_ns_from_text(text: str) -> int:
    """Exact nanoseconds of a decimal seconds string (floats lose ns at epoch magnitudes)."""
    return int((Decimal(text) * 1_000_000_000).to_integral_value())


def read_tum_list(path: Path) -> list[tuple[float, list[str]]]:
    """A TUM list file (``# comments``, then ``timestamp value...`` per line).

    Returns:
        ``(seconds, [timestamp text, value, ...])`` per line.
    """
    if not path.is_file():
        raise DatasetFormatError(f"{path.parent}: TUM RGB-D folder lacks {path.name}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            rows.append((float(parts[0]), parts))
            stamp_ns_from_text(parts[0])
        except (ValueError, IndexError, InvalidOperation):
            raise DatasetFormatError(f"{path}: line {n} does not start with a timestamp: {line[:60]!r}") from None
    return rows


def associate_nearest(ref: np.ndarray, other: np.ndarray, max_dt: float) -> np.ndarray:
    """For each reference timestamp the index of the nearest ``other`` timestamp, or -1.

    Args:
        ref: ``[N]`` seconds; other: ``[M]`` seconds, sorted ascending.
        max_dt: largest accepted |difference|, seconds.

    Returns:
        ``[N] int64`` indices into ``other`` (-1 where nothing lies within ``max_dt``).
    """
    out = np.full(len(ref), -1, dtype=np.int64)
    if len(other) == 0 or len(ref) == 0:
        return out
    hi = np.clip(np.searchsorted(other, ref), 1, len(other) - 1) if len(other) > 1 else np.zeros(len(ref), int)
    lo = np.maximum(hi - 1, 0)
    best = np.where(np.abs(other[lo] - ref) <= np.abs(other[hi] - ref), lo, hi)
    ok = np.abs(other[best] - ref) <= max_dt
    out[ok] = best[ok]
    return out


def _second(row: tuple[float, list[str]], path: Path) -> str:
    if len(row[1]) < 2:
        raise DatasetFormatError(f"{path}: line for t={row[0]} names no file")
    return row[1][1]


class TumRgbdSource(DatasetSource):
    """A TUM RGB-D sequence: ``rgb.txt``, ``depth.txt``, ``groundtruth.txt`` (``t tx ty tz qx
    qy qz qw``, camera-to-world of the colour optical centre), depth PNGs at 5000 units/metre.

    Each rgb image is associated with the nearest depth image and ground-truth pose within
    ``max_dt`` seconds; rgb images without a depth match (or without a pose when
    ``require_pose``) are left out of the sequence and counted in ``unassociated``.
    Intrinsics: argument, else by sequence name (``freiburg1/2/3``), else TUM's ROS default.
    """

    def __init__(
        self,
        root: str | Path,
        intrinsics: CameraIntrinsics | None = None,
        max_dt: float = 0.02,
        require_pose: bool = True,
        depth_scale: float = 5000.0,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetFormatError(f"{root}: not a directory (expected a TUM RGB-D sequence)")
        rgb_rows = read_tum_list(root / "rgb.txt")
        depth_rows = read_tum_list(root / "depth.txt")
        gt_path = root / "groundtruth.txt"
        gt_rows = read_tum_list(gt_path) if gt_path.is_file() else []
        if not gt_rows and require_pose:
            raise DatasetFormatError(f"{root}: TUM RGB-D folder lacks groundtruth.txt (pass require_pose=False)")
        if not rgb_rows:
            raise DatasetFormatError(f"{root / 'rgb.txt'}: lists no images")
        d_t = np.array([r[0] for r in depth_rows])
        d_order = np.argsort(d_t, kind="stable")
        g_t = np.array([r[0] for r in gt_rows])
        g_order = np.argsort(g_t, kind="stable")
        r_t = np.array([r[0] for r in rgb_rows])
        d_idx = associate_nearest(r_t, d_t[d_order], max_dt)
        g_idx = associate_nearest(r_t, g_t[g_order], max_dt)
        entries: list[FrameEntry] = []
        self.unassociated = 0
        for k, (_, (t_text, *vals)) in enumerate(rgb_rows):
            if d_idx[k] < 0 or (require_pose and g_idx[k] < 0) or not vals:
                self.unassociated += 1
                continue
            pose = None
            if g_idx[k] >= 0:
                pose = self._gt_pose(gt_path, gt_rows[g_order[g_idx[k]]])
            entries.append(
                FrameEntry(
                    index=k,
                    stamp_ns=stamp_ns_from_text(t_text),
                    rgb_path=root / vals[0],
                    depth_path=root / _second(depth_rows[d_order[d_idx[k]]], root / "depth.txt"),
                    T_world_camera=pose,
                )
            )
        if not entries:
            raise DatasetFormatError(
                f"{root}: no rgb image has a depth image{' and a pose' if require_pose else ''} within {max_dt} s"
            )
        if intrinsics is None:
            key = next((k for k in ("freiburg1", "freiburg2", "freiburg3") if k in root.name), "ros_default")
            intrinsics = TUM_INTRINSICS[key]
        super().__init__(f"tum:{root.name}", entries, intrinsics, depth_scale)

    @staticmethod
    def _gt_pose(path: Path, row: tuple[float, list[str]]) -> np.ndarray:
        t, (_, *vals) = row
        if len(vals) != 7:
            raise DatasetFormatError(f"{path}: pose at t={t} has {len(vals)} values, expected 'tx ty tz qx qy qz qw'")
        try:
            v = [float(x) for x in vals]
            return pose_from_tq(v[:3], v[3:])
        except (ValueError, InvalidPoseError):
            # unusable pose: keep a NaN matrix so the frame is skipped (and counted) when streamed
            return np.full((4, 4), np.nan)


# ---------------------------------------------------------------------------- ICL-NUIM / Redwood

class RedwoodSource(DatasetSource):
    """ICL-NUIM / Redwood / Open3D layout: colour in ``image/`` or ``color/``, depth in
    ``depth/`` (16-bit, ``depth_scale`` units per metre), a ``.log`` camera-to-world trajectory.

    Colour and depth are paired through ``rgbd.match`` when present, else by file stem, else
    (equal counts, no common stems) by sorted order. The trajectory is ``trajectory_log`` or
    the first ``trajectory.log`` in ``root`` or one folder below (frames without a pose in it
    are left out); without any, frames carry no pose. Intrinsics: argument, else an Open3D
    JSON (``camera_*.json``/``intrinsic*.json``) in ``root``, else Open3D's PrimeSense default
    (fx=fy=525, cx=319.5, cy=239.5), the calibration the Open3D-vendored ICL-NUIM data uses.
    Redwood has no timestamps: stamps are ``index / fps``.
    """

    def __init__(
        self,
        root: str | Path,
        trajectory_log: str | Path | None = None,
        intrinsics: CameraIntrinsics | None = None,
        depth_scale: float = 1000.0,
        fps: float = 30.0,
    ) -> None:
        root = Path(root)
        color_dir = next((root / d for d in ("image", "color", "rgb") if (root / d).is_dir()), None)
        depth_dir = root / "depth"
        if color_dir is None or not depth_dir.is_dir():
            lacks = [n for n, ok in (("image/ or color/", color_dir is not None), ("depth/", depth_dir.is_dir())) if not ok]
            raise DatasetFormatError(f"{root}: not an ICL-NUIM/Redwood folder (lacks {' and '.join(lacks)})")
        colors = _image_files(color_dir)
        if not colors:
            raise DatasetFormatError(f"{color_dir}: no colour images ({', '.join(IMAGE_SUFFIXES)})")
        pairs = self._pair(root, colors, depth_dir)
        self.trajectory_path = self._find_trajectory(root, trajectory_log)
        poses = read_redwood_log(self.trajectory_path) if self.trajectory_path is not None else None
        entries = []
        for i, (rgb_path, depth_path) in enumerate(pairs):
            if poses is not None and i not in poses:
                continue
            entries.append(
                FrameEntry(
                    index=i,
                    stamp_ns=int(round(i * 1e9 / fps)),
                    rgb_path=rgb_path,
                    depth_path=depth_path,
                    T_world_camera=None if poses is None else poses[i],
                )
            )
        if not entries:
            raise DatasetFormatError(f"{root}: none of the {len(pairs)} frames has a pose in {self.trajectory_path}")
        if poses is not None and len(poses) > len(pairs):
            log.warning("%s: trajectory has %d poses for %d images", root, len(poses), len(pairs))
        if intrinsics is None:
            jsons = sorted(root.glob("camera*.json")) + sorted(root.glob("intrinsic*.json"))
            if jsons:
                intrinsics = read_open3d_intrinsics(jsons[0])
            else:
                intrinsics = _intrinsics_for_size(PRIMESENSE_DEFAULT, entries[0].rgb_path)
        super().__init__(f"redwood:{root.name}", entries, intrinsics, depth_scale)

    @staticmethod
    def _pair(root: Path, colors: list[Path], depth_dir: Path) -> list[tuple[Path, Path]]:
        match = root / "rgbd.match"
        if match.is_file():
            pairs = []
            for n, line in enumerate(match.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise DatasetFormatError(f"{match}: line {n}: expected 'depth_path color_path'")
                pairs.append((root / parts[1], root / parts[0]))
            return pairs
        depths = {p.stem: p for p in _image_files(depth_dir)}
        if any(c.stem in depths for c in colors):
            # a colour image whose depth file is missing keeps its expected path: skipped while streaming
            return [(c, depths.get(c.stem, depth_dir / f"{c.stem}.png")) for c in colors]
        ordered = sorted(depths.values())
        if len(ordered) != len(colors):
            raise DatasetFormatError(
                f"{root}: cannot pair {len(colors)} colour with {len(ordered)} depth images (no common names)"
            )
        return list(zip(colors, ordered))

    @staticmethod
    def _find_trajectory(root: Path, trajectory_log: str | Path | None) -> Path | None:
        if trajectory_log is not None:
            p = Path(trajectory_log)
            if not p.is_file():
                raise DatasetFormatError(f"{p}: trajectory file not found")
            return p
        if (root / "trajectory.log").is_file():
            return root / "trajectory.log"
        below = sorted(root.glob("*/trajectory.log"))
        return below[0] if below else None


# ---------------------------------------------------------------------------- auto-detection

def detect_format(path: str | Path) -> str:
    """Name the layout of ``path``: ``"bag"``, ``"tum"``, ``"7scenes"`` or ``"redwood"``.

    Raises:
        DatasetFormatError: naming the folder and what each layout would need.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetFormatError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix in (".mcap", ".db3") and (path.parent / "metadata.yaml").is_file():
            return "bag"
        raise DatasetFormatError(f"{path}: a dataset is a folder (or a rosbag2 .mcap/.db3 next to metadata.yaml)")
    if (path / "metadata.yaml").is_file():
        return "bag"
    if (path / "rgb.txt").is_file() and (path / "depth.txt").is_file():
        return "tum"
    if any(_SEVEN_RE.match(p.name) for p in path.iterdir()):
        return "7scenes"
    if any((path / d).is_dir() for d in ("image", "color", "rgb")) and (path / "depth").is_dir():
        return "redwood"
    raise DatasetFormatError(
        f"{path}: no known dataset layout: expected metadata.yaml (rosbag2), rgb.txt + depth.txt (TUM RGB-D), "
        "frame-XXXXXX.color.png (7-Scenes sequence) or image/|color/ + depth/ (ICL-NUIM/Redwood)"
    )


def open_dataset(path: str | Path, **kwargs) -> FrameSource:
    """Open the frame source matching the layout of ``path`` (see :func:`detect_format`);
    ``kwargs`` go to that source's constructor."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "bag":
        from .bags import BagFrameSource  # bags pull in rosbags; import only when needed

        return BagFrameSource(path.parent if path.is_file() else path, **kwargs)
    if fmt == "tum":
        return TumRgbdSource(path, **kwargs)
    if fmt == "7scenes":
        return SevenScenesSource(path, **kwargs)
    return RedwoodSource(path, **kwargs)
