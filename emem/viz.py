"""Pictures of what the robot saw and remembered: Rerun ``.rrd`` recordings and PNG figures.

* :class:`RerunRecorder` writes a Rerun recording file (open it later with ``rerun file.rrd``;
  nothing is spawned or served) of frames, trajectories, point clouds, query hits and scalars.
* :func:`contact_sheet` tiles frames (rgb over colourised depth) into one PNG.
* :func:`topdown_map_png` draws a bird's-eye map: points, trajectories, labelled markers.
* :func:`progress` is the project's one progress bar (tqdm, silent when not on a terminal).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, TypeVar

import cv2
import numpy as np

from spatial_memory.types import Frame

T = TypeVar("T")


# ------------------------------------------------------------------------------ progress

def progress(iterable: Iterable[T], desc: str, total: int | None = None, force: bool | None = None) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr.

    The bar shows only when stderr is a terminal, so logs and CI output stay clean; ``force``
    (or the environment variable ``EMEM_PROGRESS=1``/``0``) overrides that.
    """
    from tqdm.auto import tqdm

    if force is None:
        env = os.environ.get("EMEM_PROGRESS")
        force = (env == "1") if env in ("0", "1") else sys.stderr.isatty()
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return iter(tqdm(iterable, desc=desc, total=total, disable=not force, dynamic_ncols=True, leave=False))


# ------------------------------------------------------------------------------ Rerun

def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or mapping key ``name`` of ``obj`` (hits may be dataclasses or dicts)."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


class RerunRecorder:
    """Log frames, maps and query results to a Rerun ``.rrd`` file.

    Entities live under ``world/`` in the z-up world frame; each logged frame advances the
    ``frame`` sequence timeline and sets the ``stamp`` (seconds) timeline. Use as a context
    manager or call :meth:`close` to flush the file.
    """

    def __init__(self, path: str | Path, app_id: str = "embodied_memory") -> None:
        import rerun as rr

        self._rr = rr
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rec = rr.RecordingStream(app_id)
        self.rec.save(self.path)
        self.rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        self._closed = False

    def __enter__(self) -> "RerunRecorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_frame(self, frame: Frame, entity: str = "world/camera", depth: bool = True) -> None:
        """Camera pose, pinhole model, rgb and (if present) depth of one frame.

        A frame without a pose is logged at the identity so its images still show.
        """
        rr, rec = self._rr, self.rec
        rec.set_time("frame", sequence=max(int(frame.index), 0))
        rec.set_time("stamp", duration=frame.stamp_ns * 1e-9)
        T = np.eye(4) if frame.T_world_camera is None else np.asarray(frame.T_world_camera)
        rec.log(entity, rr.Transform3D(translation=T[:3, 3], mat3x3=T[:3, :3]))
        intr = frame.intrinsics
        rec.log(
            entity,
            rr.Pinhole(image_from_camera=intr.K, resolution=[intr.width, intr.height], camera_xyz=rr.ViewCoordinates.RDF),
        )
        rec.log(f"{entity}/rgb", rr.Image(frame.rgb))
        if depth and frame.depth is not None:
            d = np.nan_to_num(frame.depth, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
            rec.log(f"{entity}/depth", rr.DepthImage(d, meter=1.0))

    def log_trajectory(
        self, poses: Sequence[np.ndarray] | np.ndarray, entity: str = "world/trajectory", color: Sequence[int] = (255, 80, 0)
    ) -> None:
        """Camera path: ``poses: [N, 4, 4]`` camera-to-world; drawn as one line strip (static)."""
        P = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
        if len(P) == 0:
            return
        self.rec.log(entity, self._rr.LineStrips3D([P[:, :3, 3]], colors=[list(color)], radii=0.01), static=True)

    def log_points(
        self,
        xyz: np.ndarray,
        colors: np.ndarray | None = None,
        entity: str = "world/points",
        radii: float | np.ndarray = 0.01,
        static: bool = True,
    ) -> None:
        """Point cloud ``xyz: [N, 3]`` metres with optional ``colors: [N, 3]`` uint8 (or float in [0, 1])."""
        xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
        if colors is not None:
            colors = np.asarray(colors)
            if np.issubdtype(colors.dtype, np.floating):
                colors = np.clip(colors * 255.0, 0, 255).astype(np.uint8)
        self.rec.log(entity, self._rr.Points3D(xyz, colors=colors, radii=radii), static=static)

    def log_boxes(
        self,
        centers: np.ndarray,
        sizes: np.ndarray,
        labels: Sequence[str] | None = None,
        colors: np.ndarray | Sequence[int] | None = None,
        entity: str = "world/boxes",
    ) -> None:
        """Axis-aligned boxes: ``centers: [N, 3]``, full ``sizes: [N, 3]`` metres."""
        c = np.asarray(centers, dtype=np.float32).reshape(-1, 3)
        s = np.asarray(sizes, dtype=np.float32).reshape(-1, 3)
        self.rec.log(
            entity,
            self._rr.Boxes3D(centers=c, sizes=s, labels=None if labels is None else list(labels), colors=colors),
        )

    def log_hits(
        self, hits: Iterable[Any], entity: str = "world/hits", color: Sequence[int] = (0, 200, 255), default_extent: float = 0.2
    ) -> None:
        """Query results: each hit has ``position`` ``[3]``, optional ``extent`` (``[3]`` full
        size or a scalar edge length, metres) and ``label`` (attributes or dict keys)."""
        hits = list(hits)
        if not hits:
            return
        centers, sizes, labels = [], [], []
        for h in hits:
            centers.append(np.asarray(_get(h, "position"), dtype=np.float64).reshape(3))
            ext = _get(h, "extent", None)
            ext = default_extent if ext is None else ext
            sizes.append(np.broadcast_to(np.asarray(ext, dtype=np.float64), (3,)))
            labels.append(str(_get(h, "label", "")))
        self.log_boxes(np.stack(centers), np.stack(sizes), labels, colors=[list(color)] * len(hits), entity=entity)

    def log_scalar(self, name: str, value: float, step: int) -> None:
        """One sample of a time series ``name`` on the ``step`` timeline."""
        self.rec.set_time("step", sequence=int(step))
        self.rec.log(name, self._rr.Scalars(float(value)))

    def close(self) -> None:
        """Flush everything to the file and close it (idempotent)."""
        if self._closed:
            return
        self.rec.flush()
        self.rec.disconnect()
        self._closed = True


# ------------------------------------------------------------------------------ PNG figures

def colorize_depth(depth: np.ndarray, d_min: float, d_max: float) -> np.ndarray:
    """``depth: [H, W]`` metres -> ``[H, W, 3] uint8`` rgb (turbo colour map, invalid = black)."""
    valid = np.isfinite(depth) & (depth > 0)
    span = max(d_max - d_min, 1e-6)
    norm = np.clip((np.nan_to_num(depth, nan=0.0) - d_min) / span, 0.0, 1.0)
    bgr = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    rgb = bgr[:, :, ::-1].copy()
    rgb[~valid] = 0
    return rgb


CAPTION_HEIGHT = 18


def contact_sheet(
    frames: Iterable[Frame], path: str | Path, cols: int = 6, tile_width: int = 160, with_depth: bool = True
) -> Path:
    """Tile frames into one PNG: per tile the rgb, below it the depth (turbo, one depth range
    for the whole sheet so colours compare across tiles), and a caption ``#index t=stamp``.

    Tile height is ``h + (h if with_depth) + 18`` with ``h = round(tile_width * H / W)`` of
    the first frame; the sheet is ``min(n, cols)`` tiles wide and ``ceil(n / cols)`` high.
    """
    frames = list(frames)
    if not frames:
        raise ValueError("contact_sheet needs at least one frame")
    if cols <= 0 or tile_width <= 0:
        raise ValueError(f"cols and tile_width must be positive, got {cols}, {tile_width}")
    H0, W0 = frames[0].rgb.shape[:2]
    th = max(1, round(tile_width * H0 / W0))
    depths = [f.depth for f in frames if f.depth is not None and with_depth]
    vals = np.concatenate([d[np.isfinite(d) & (d > 0)] for d in depths]) if depths else np.zeros(0)
    d_min, d_max = (np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0))
    tile_h = th * (2 if with_depth else 1) + CAPTION_HEIGHT
    ncols = min(len(frames), cols)
    nrows = math.ceil(len(frames) / cols)
    sheet = np.full((nrows * tile_h, ncols * tile_width, 3), 255, dtype=np.uint8)
    for k, f in enumerate(frames):
        y0, x0 = (k // cols) * tile_h, (k % cols) * tile_width
        sheet[y0 : y0 + th, x0 : x0 + tile_width] = cv2.resize(f.rgb, (tile_width, th), interpolation=cv2.INTER_AREA)
        if with_depth:
            if f.depth is not None:
                dz = cv2.resize(f.depth.astype(np.float32), (tile_width, th), interpolation=cv2.INTER_NEAREST)
                sheet[y0 + th : y0 + 2 * th, x0 : x0 + tile_width] = colorize_depth(dz, float(d_min), float(d_max))
            else:
                sheet[y0 + th : y0 + 2 * th, x0 : x0 + tile_width] = 128
        caption = f"#{f.index} t={f.stamp_ns * 1e-9:.2f}s"
        cv2.putText(
            sheet, caption, (x0 + 3, y0 + tile_h - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet[:, :, ::-1]):
        raise OSError(f"could not write contact sheet {path}")
    return path


def rasterize_topdown(
    points_xyz: np.ndarray, colors: np.ndarray | None, resolution: float
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Bird's-eye image of a point cloud: per ``resolution``-metre cell the colour of its highest point.

    Args:
        points_xyz: ``[N, 3]`` world metres (z up); colors: ``[N, 3]`` uint8 or float [0, 1],
            None colours by height.

    Returns:
        ``[rows, cols, 4]`` float RGBA image (row 0 = max y; empty cells transparent) and its
        extent ``(x_min, x_max, y_min, y_max)`` for ``imshow``.
    """
    import matplotlib

    xyz = np.asarray(points_xyz, dtype=np.float64).reshape(-1, 3)
    xyz_ok = np.all(np.isfinite(xyz), axis=1)
    xyz = xyz[xyz_ok]
    if colors is None:
        z = xyz[:, 2]
        zn = (z - z.min()) / max(float(np.ptp(z)), 1e-6) if len(z) else z
        rgb = matplotlib.colormaps["viridis"](zn)[:, :3]
    else:
        rgb = np.asarray(colors).reshape(-1, 3)[xyz_ok]
        rgb = rgb / 255.0 if not np.issubdtype(rgb.dtype, np.floating) else np.clip(rgb, 0, 1)
    lo = xyz[:, :2].min(axis=0)
    hi = xyz[:, :2].max(axis=0)
    ncol, nrow = (np.floor((hi - lo) / resolution).astype(int) + 1).tolist()
    ix = np.floor((xyz[:, 0] - lo[0]) / resolution).astype(int)
    iy = nrow - 1 - np.floor((xyz[:, 1] - lo[1]) / resolution).astype(int)
    img = np.zeros((nrow, ncol, 4))
    order = np.argsort(xyz[:, 2], kind="stable")  # later (higher) points overwrite lower ones
    img[iy[order], ix[order], :3] = rgb[order]
    img[iy[order], ix[order], 3] = 1.0
    extent = (float(lo[0]), float(lo[0] + ncol * resolution), float(lo[1]), float(lo[1] + nrow * resolution))
    return img, extent


def topdown_map_png(
    path: str | Path,
    points_xyz: np.ndarray | None,
    colors: np.ndarray | None = None,
    trajectories: Mapping[str, Sequence[np.ndarray] | np.ndarray] | None = None,
    markers: Sequence[tuple[Sequence[float], str, Any]] | None = None,
    resolution: float = 0.02,
    title: str | None = None,
    max_pixels: int = 4_000_000,
) -> Path:
    """Top-down PNG (x right, y up, equal aspect, metres): the point cloud rasterised at
    ``resolution`` m, each trajectory (``[N, 4, 4]`` camera-to-world poses) as a labelled line
    with its start dot, and markers ``(xy, label, colour)`` as labelled stars; with a legend.

    ``resolution`` is coarsened if the raster would exceed ``max_pixels``.
    """
    import matplotlib
    from matplotlib.figure import Figure

    # a bare Figure renders with Agg and touches no pyplot global state (safe in nodes/threads)
    fig = Figure(figsize=(8, 8), dpi=120)
    ax = fig.subplots()
    if points_xyz is not None and len(points_xyz):
        pts = np.asarray(points_xyz, dtype=np.float64).reshape(-1, 3)
        span = np.ptp(pts[np.all(np.isfinite(pts), axis=1), :2], axis=0)
        res = max(resolution, float(np.sqrt(max(span[0] * span[1], 0.0) / max_pixels)))
        img, extent = rasterize_topdown(pts, colors, res)
        ax.imshow(img, extent=extent, origin="upper", interpolation="nearest")
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, poses) in enumerate((trajectories or {}).items()):
        P = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
        if len(P) == 0:
            continue
        c = cycle[k % len(cycle)]
        ax.plot(P[:, 0, 3], P[:, 1, 3], "-", color=c, lw=1.5, label=name)
        ax.plot(P[0, 0, 3], P[0, 1, 3], "o", color=c, ms=5)
    for xy, label, colour in markers or []:
        ax.plot(xy[0], xy[1], "*", color=colour, ms=12, markeredgecolor="k", label=label)
        ax.annotate(label, (xy[0], xy[1]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
