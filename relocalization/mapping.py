"""FaVoR map building: tracks of local features over a posed sequence, triangulated landmarks.

Pipeline (FaVoR section of docs/papers.md; choices documented in docs/relocalization.md):

1. Local features (+ dense descriptor map) for every mapping frame.
2. With depth in every frame (default): projection-guided tracking (``build_tracks_depth``),
   every landmark projected into every frame and matched to the nearest keypoint. Otherwise:
   frame-to-frame mutual-nearest-neighbour matching with a cosine threshold, filtered by an
   essential-matrix RANSAC (``cv2.findEssentialMat`` with the known K) and by the epipolar
   constraint of the *known* relative pose (the sequence is posed, so this check is free).
3. Tracks = connected components of the match graph (a track holding two keypoints of one
   frame loses both observations of that frame).
4. Triangulation: initialised from depth where the frames have it (median of the
   back-projected observations), else DLT over the widest-baseline pair; then batched
   Gauss-Newton with a Huber loss on all observations. Observations with a large
   reprojection error or a depth that disagrees with the landmark are rejected.
5. Track merging: tracks whose median descriptors have cosine > 0.9 and whose points lie
   within a few pixels' footprint are merged and refined again; tracks with >= ``min_observations`` survive.
6. Per observation the 7x7 dense descriptor patch, frame index (pose) and pixel are stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from tqdm import tqdm

from spatial_memory.errors import ConfigError, EmptyMapError, InvalidFrameError
from spatial_memory.geometry import invert_pose
from spatial_memory.types import CameraIntrinsics, Frame

from .features import DenseDescriptors, Keypoints, LocalFeatures, mutual_nn
from .retrieval import VladIndex

log = logging.getLogger(__name__)


@dataclass
class MapConfig:
    """Map-building parameters (defaults follow the FaVoR paper where it gives one)."""

    features: str = "xfeat"
    top_k: int = 1024
    match_min_cos: float = 0.8
    match_span: int = 2
    min_baseline_m: float = 0.02
    essential_px: float = 1.5
    epipolar_px: float = 3.0
    min_observations: int = 3  # depth-validated tracks; the paper's > 5 is for tracks without depth
    merge_cos: float = 0.9
    merge_footprint_px: float = 7.0
    max_reproj_px: float = 3.0
    huber_px: float = 2.0
    # Depth residuals in the point refinement (RGB-D bundle term), sigma = rel * depth + abs metres
    # per 1 px of keypoint error. 2 % + 1 cm: loose enough for real sensors (on ICL-NUIM's noisy
    # depth tighter values cost accuracy), tight enough to pin points that two-view rays do not.
    depth_in_refinement: bool = True
    depth_sigma_rel: float = 0.02
    depth_sigma_abs: float = 0.01
    depth_rel_tol: float = 0.05
    depth_abs_tol: float = 0.03
    min_parallax_deg: float = 2.0
    patch_size: int = 7
    max_obs_per_landmark: int = 16
    keyframe_depth_wh: tuple[int, int] = (80, 60)
    retrieval_words: int = 16
    # Depth-guided tracking (used when every mapping frame has depth): landmarks lifted with
    # depth are projected into every later frame and matched to the nearest keypoint.
    depth_tracking: bool = True
    track_radius_px: float = 3.0
    track_min_cos: float = 0.7
    track_depth_rel_tol: float = 0.05
    track_depth_abs_tol: float = 0.03

    def validate(self) -> "MapConfig":
        if not 0.0 < self.match_min_cos <= 1.0:
            raise ConfigError(f"match_min_cos must be in (0, 1], got {self.match_min_cos}")
        if self.min_observations < 2:
            raise ConfigError(f"min_observations must be >= 2, got {self.min_observations}")
        if self.patch_size % 2 != 1 or self.patch_size < 1:
            raise ConfigError(f"patch_size must be odd and positive, got {self.patch_size}")
        if self.depth_sigma_rel < 0 or self.depth_sigma_abs <= 0:
            raise ConfigError(f"depth sigma needs rel >= 0 and abs > 0, got {self.depth_sigma_rel} / {self.depth_sigma_abs}")
        return self


@dataclass
class FrameFeatures:
    """Features of one mapping frame (the dense map is kept in float16 to halve memory)."""

    keypoints: Keypoints
    dense: DenseDescriptors | None
    T_world_camera: np.ndarray
    depth: np.ndarray | None


@dataclass
class LandmarkSet:
    """Triangulated landmarks and their observations.

    Attributes:
        points: ``[L, 3] float64`` world positions.
        descriptors: ``[L, C] float32`` median observation descriptor (L2-normalised).
        n_obs: ``[L] int64`` observations after filtering.
        mean_dist: ``[L] float32`` mean camera distance of the observations (metres).
        reproj_rmse: ``[L] float32`` pixels.
        obs_landmark: ``[O] int64`` landmark of each stored observation.
        obs_frame: ``[O] int64`` mapping-frame index (pose in the keyframe set).
        obs_xy: ``[O, 2] float32`` pixel of the observation.
        obs_patches: ``[O, P, P, C] float16`` dense descriptor patch around the pixel.
    """

    points: np.ndarray
    descriptors: np.ndarray
    n_obs: np.ndarray
    mean_dist: np.ndarray
    reproj_rmse: np.ndarray
    obs_landmark: np.ndarray
    obs_frame: np.ndarray
    obs_xy: np.ndarray
    obs_patches: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])


@dataclass
class KeyframeSet:
    """Mapping keyframes: poses, retrieval index and low-resolution depth for occlusion tests.

    Attributes:
        poses: ``[F, 4, 4] float64`` camera-to-world.
        depth_small: ``[F, h, w] float32`` metres, 0 = unknown.
        index: VLAD retrieval index over the keyframes.
        intrinsics: full-resolution camera.
    """

    poses: np.ndarray
    depth_small: np.ndarray
    index: VladIndex
    intrinsics: CameraIntrinsics
    frame_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def small_intrinsics(self) -> CameraIntrinsics:
        h, w = self.depth_small.shape[1:]
        return self.intrinsics.scaled(w, h)


def check_mapping_frames(frames: list[Frame]) -> CameraIntrinsics:
    """All frames posed, valid and from one camera; returns that camera."""
    if len(frames) < 2:
        raise EmptyMapError(f"map building needs at least 2 posed frames, got {len(frames)}")
    intr = frames[0].intrinsics
    for f in frames:
        f.validate()
        if f.T_world_camera is None:
            raise InvalidFrameError(f"frame {f.index} has no pose; map building needs posed frames")
        if f.intrinsics != intr:
            raise InvalidFrameError(f"frame {f.index} has intrinsics {f.intrinsics} but frame 0 has {intr}")
    return intr


def extract_sequence(frames: list[Frame], extractor: LocalFeatures, dense: bool, progress: bool = True) -> list[FrameFeatures]:
    """Run the extractor over the frames (dense map too when ``dense``)."""
    out = []
    for f in tqdm(frames, desc="features", disable=not progress, leave=False):
        if dense:
            kp, dm = extractor.detect_and_dense(f.rgb)
            dm = DenseDescriptors(dm.map.half(), dm.stride, dm.scale_xy, dm.net_size)
        else:
            kp, dm = extractor.detect(f.rgb), None
        out.append(FrameFeatures(kp, dm, np.asarray(f.T_world_camera, np.float64), f.depth))
    return out


def _skew(t: np.ndarray) -> np.ndarray:
    return np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])


def sampson_px(xa: np.ndarray, xb: np.ndarray, T_wa: np.ndarray, T_wb: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Sampson epipolar distance (pixels) of pixel pairs ``xa, xb: [N, 2]`` under the known poses."""
    T_ba = invert_pose(T_wb) @ T_wa
    E = _skew(T_ba[:3, 3]) @ T_ba[:3, :3]
    Ki = np.linalg.inv(K)
    Fm = Ki.T @ E @ Ki
    ha = np.c_[xa, np.ones(len(xa))]
    hb = np.c_[xb, np.ones(len(xb))]
    Fa = ha @ Fm.T
    Ftb = hb @ Fm
    num = np.sum(hb * Fa, axis=1) ** 2
    den = Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Ftb[:, 0] ** 2 + Ftb[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-12))


def rotation_transfer_px(xa: np.ndarray, xb: np.ndarray, T_wa: np.ndarray, T_wb: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel error of mapping ``xa -> xb: [N, 2]`` by the infinite homography ``K R_ba K^-1`` (pure rotation)."""
    R_ba = T_wb[:3, :3].T @ T_wa[:3, :3]
    H = K @ R_ba @ np.linalg.inv(K)
    h = np.c_[xa, np.ones(len(xa))] @ H.T
    return np.linalg.norm(h[:, :2] / h[:, 2:3] - xb, axis=1)


def match_pair(a: FrameFeatures, b: FrameFeatures, K: np.ndarray, cfg: MapConfig) -> tuple[np.ndarray, np.ndarray]:
    """Geometrically verified mutual-NN matches between two frames -> ``(idx_a [M], idx_b [M])``.

    With a real baseline: essential-matrix RANSAC (``cv2.findEssentialMat``, known K) and the
    epipolar constraint of the known relative pose. Under (near) pure rotation the essential
    matrix is undefined, so the known rotation's homography transfer is checked instead.
    """
    ia, ib, _ = mutual_nn(a.keypoints.descriptors, b.keypoints.descriptors, cfg.match_min_cos)
    if len(ia) < 8:
        return ia[:0], ib[:0]
    xa, xb = a.keypoints.xy[ia].astype(np.float64), b.keypoints.xy[ib].astype(np.float64)
    baseline = np.linalg.norm(a.T_world_camera[:3, 3] - b.T_world_camera[:3, 3])
    if baseline < cfg.min_baseline_m:
        keep = rotation_transfer_px(xa, xb, a.T_world_camera, b.T_world_camera, K) < cfg.epipolar_px
        return ia[keep], ib[keep]
    keep = sampson_px(xa, xb, a.T_world_camera, b.T_world_camera, K) < cfg.epipolar_px
    E, mask = cv2.findEssentialMat(xa, xb, K, method=cv2.RANSAC, prob=0.999, threshold=cfg.essential_px)
    if E is not None and mask is not None and E.shape == (3, 3):
        keep &= mask.reshape(-1).astype(bool)
    return ia[keep], ib[keep]


def build_tracks(feats: list[FrameFeatures], K: np.ndarray, cfg: MapConfig, progress: bool = True):
    """Chain pairwise matches of nearby frames (``i`` with ``i+1 .. i+match_span``) into tracks.

    Matching a frame with the next *two* bridges single missed detections, which matters on
    trajectories that turn ~10 deg per frame (a point stays in view for only a few frames).

    Returns:
        ``(track [O], frame [O], kp [O])`` observation arrays with tracks numbered 0..T-1,
        keeping tracks with at least 2 observations.
    """
    offs = np.cumsum([0] + [len(f.keypoints) for f in feats])
    rows, cols = [], []
    pairs = [(i, i + s) for i in range(len(feats)) for s in range(1, cfg.match_span + 1) if i + s < len(feats)]
    for i, j in tqdm(pairs, desc="tracking", disable=not progress, leave=False):
        ia, ib = match_pair(feats[i], feats[j], K, cfg)
        rows.append(ia + offs[i])
        cols.append(ib + offs[j])
    n = int(offs[-1])
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    g = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    node_frame = np.searchsorted(offs, np.arange(n), side="right") - 1
    node_kp = np.arange(n) - offs[node_frame]
    # Drop (component, frame) pairs that hold two keypoints: the chain went wrong there.
    key = comp.astype(np.int64) * len(feats) + node_frame
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    ok = cnt[inv] == 1
    comp, node_frame, node_kp = comp[ok], node_frame[ok], node_kp[ok]
    size = np.bincount(comp)
    ok = size[comp] >= 2
    comp, node_frame, node_kp = comp[ok], node_frame[ok], node_kp[ok]
    _, track = np.unique(comp, return_inverse=True)
    order = np.argsort(track, kind="stable")
    return track[order], node_frame[order], node_kp[order]


def _lift(ff: FrameFeatures, Ki: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points ``[N, 3]`` of the keypoints with valid depth and their indices ``[N]``."""
    d = _depth_at(ff.depth, ff.keypoints.xy)
    ok = np.flatnonzero(d > 0)
    rays = np.c_[ff.keypoints.xy[ok], np.ones(len(ok))] @ Ki.T * d[ok, None]
    T = ff.T_world_camera
    return rays @ T[:3, :3].T + T[:3, 3], ok


def build_tracks_depth(feats: list[FrameFeatures], K: np.ndarray, cfg: MapConfig, progress: bool = True):
    """Projection-guided tracking for posed RGB-D sequences.

    Every keypoint with depth that no landmark claims starts a landmark at its back-projected
    point. Each frame, *all* landmarks (not only the previous frame's) are projected with the
    known pose; one is visible when the frame's depth at its pixel agrees with its depth
    (not occluded), and it claims the nearest keypoint within ``track_radius_px`` whose
    descriptor has cosine >= ``track_min_cos`` with the landmark's latest descriptor (greedy,
    one keypoint per landmark, most similar first). Compared with chaining pairwise mutual-NN
    matches this (a) re-finds landmarks after missed detections or when the camera returns,
    giving long tracks over wide viewpoint ranges, and (b) cannot chain two surfaces together.

    Returns:
        ``(track [O], frame [O], kp [O])`` sorted by track, tracks with >= 2 observations.
    """
    Ki = np.linalg.inv(K)
    pos = np.zeros((0, 3))
    desc = np.zeros((0, feats[0].keypoints.descriptors.shape[1]), np.float32)
    o_t, o_f, o_k = [], [], []
    for f, ff in enumerate(tqdm(feats, desc="tracking", disable=not progress, leave=False)):
        kp = ff.keypoints
        claimed = np.zeros(len(kp), bool)
        if len(pos) and len(kp):
            T_cw = invert_pose(ff.T_world_camera)
            pc = pos @ T_cw[:3, :3].T + T_cw[:3, 3]
            z = pc[:, 2]
            zs = np.where(z > 1e-6, z, 1.0)
            uv = np.stack([K[0, 0] * pc[:, 0] / zs + K[0, 2], K[1, 1] * pc[:, 1] / zs + K[1, 2]], 1)
            h, w = ff.depth.shape
            vis = np.flatnonzero((z > 0.05) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h))
            dz = _depth_at(ff.depth, uv[vis])
            vis = vis[(dz > 0) & (np.abs(z[vis] - dz) <= np.maximum(cfg.track_depth_abs_tol, cfg.track_depth_rel_tol * dz))]
            if len(vis):
                dist, j = cKDTree(kp.xy).query(uv[vis], k=1, distance_upper_bound=cfg.track_radius_px)
                hit = np.isfinite(dist)
                lm, j = vis[hit], j[hit]
                cos = np.sum(desc[lm] * kp.descriptors[j], axis=1)
                ok = cos >= cfg.track_min_cos
                lm, j, cos = lm[ok], j[ok], cos[ok]
                order = np.argsort(-cos, kind="stable")
                lm, j = lm[order], j[order]
                _, first = np.unique(j, return_index=True)  # one landmark per keypoint: the most similar
                lm, j = lm[first], j[first]
                claimed[j] = True
                desc[lm] = kp.descriptors[j]  # follow slow appearance change along the track
                o_t.append(lm)
                o_f.append(np.full(len(lm), f))
                o_k.append(j)
        pts, idx = _lift(ff, Ki)
        new = ~claimed[idx]
        n0 = len(pos)
        pos = np.concatenate([pos, pts[new]])
        desc = np.concatenate([desc, kp.descriptors[idx[new]]])
        o_t.append(np.arange(n0, len(pos)))
        o_f.append(np.full(int(new.sum()), f))
        o_k.append(idx[new])
    track = np.concatenate(o_t).astype(np.int64)
    frame = np.concatenate(o_f).astype(np.int64)
    kpi = np.concatenate(o_k).astype(np.int64)
    size = np.bincount(track, minlength=len(pos))
    ok = size[track] >= 2
    track, frame, kpi = track[ok], frame[ok], kpi[ok]
    _, track = np.unique(track, return_inverse=True)
    order = np.lexsort((frame, track))
    return track[order], frame[order], kpi[order]


def triangulate_dlt(xa: np.ndarray, xb: np.ndarray, Pa: np.ndarray, Pb: np.ndarray) -> np.ndarray:
    """Batched two-view DLT. ``xa, xb: [T, 2]`` pixels, ``Pa, Pb: [T, 3, 4]`` projections -> ``[T, 3]``."""
    A = np.stack(
        [
            xa[:, 0:1] * Pa[:, 2] - Pa[:, 0],
            xa[:, 1:2] * Pa[:, 2] - Pa[:, 1],
            xb[:, 0:1] * Pb[:, 2] - Pb[:, 0],
            xb[:, 1:2] * Pb[:, 2] - Pb[:, 1],
        ],
        axis=1,
    )
    _, _, vt = np.linalg.svd(A)
    X = vt[:, -1]
    w = X[:, 3:4]
    w = np.where(np.abs(w) < 1e-12, 1e-12, w)
    return X[:, :3] / w


def project_obs(X: np.ndarray, R_cw: np.ndarray, t_cw: np.ndarray, K: np.ndarray):
    """Project per-observation points ``X: [O, 3]`` with ``R_cw: [O, 3, 3]``, ``t_cw: [O, 3]``.

    Returns pixels ``[O, 2]``, camera-frame points ``[O, 3]``.
    """
    pc = np.einsum("oij,oj->oi", R_cw, X) + t_cw
    z = np.where(np.abs(pc[:, 2]) < 1e-9, 1e-9, pc[:, 2])
    uv = np.stack([K[0, 0] * pc[:, 0] / z + K[0, 2], K[1, 1] * pc[:, 1] / z + K[1, 2]], axis=1)
    return uv, pc


def refine_points(
    X: np.ndarray, obs_track: np.ndarray, obs_xy: np.ndarray, R_cw: np.ndarray, t_cw: np.ndarray, K: np.ndarray,
    huber_px: float = 2.0, iters: int = 10, obs_depth: np.ndarray | None = None,
    depth_sigma: tuple[float, float] = (0.02, 0.01),
) -> np.ndarray:
    """Batched Levenberg-Marquardt of all points on all their observations with a Huber loss.

    With ``obs_depth`` each observation that has a depth adds a residual ``(z - d) / sigma(d)``
    (``sigma(d) = rel * d + abs`` from ``depth_sigma``, in units of a 1 px keypoint error), an
    RGB-D bundle term: two-view rays of nearby mapping frames pin a point's depth poorly, and the
    reprojection-only optimum follows the viewpoint-dependent keypoint offsets along the ray,
    while a depth sensor measures it directly.

    Args:
        X: ``[T, 3]`` initial points; obs_track ``[O]``; obs_xy ``[O, 2]``; R_cw ``[O, 3, 3]``; t_cw ``[O, 3]``.
        obs_depth: optional ``[O]`` measured depth (metres along the optical axis, 0 = none).

    Returns:
        refined ``[T, 3]``.
    """
    T = len(X)
    X = X.copy()
    lam = np.full(T, 1e-3)
    fx, fy = K[0, 0], K[1, 1]
    has_d = np.zeros(len(obs_track), bool) if obs_depth is None else np.asarray(obs_depth) > 0
    d_obs = np.zeros(len(obs_track)) if obs_depth is None else np.where(has_d, obs_depth, 0.0)
    inv_sigma = np.where(has_d, 1.0 / (depth_sigma[0] * d_obs + depth_sigma[1]), 0.0)

    def huber(e):
        return np.where(e <= huber_px, 0.5 * e**2, huber_px * (e - 0.5 * huber_px))

    def cost_of(Xc):
        uv, pc = project_obs(Xc[obs_track], R_cw, t_cw, K)
        r = uv - obs_xy
        e = np.linalg.norm(r, axis=1)
        rd = (pc[:, 2] - d_obs) * inv_sigma  # 0 where there is no depth
        return np.bincount(obs_track, huber(e) + huber(np.abs(rd)), minlength=T), r, e, rd, pc

    cost, r, e, rd, pc = cost_of(X)
    for _ in range(iters):
        w = np.where(e <= huber_px, 1.0, huber_px / np.maximum(e, 1e-9))
        wd = np.where(np.abs(rd) <= huber_px, 1.0, huber_px / np.maximum(np.abs(rd), 1e-9))
        z = pc[:, 2]
        J = np.zeros((len(obs_track), 2, 3))
        J[:, 0, 0] = fx / z
        J[:, 0, 2] = -fx * pc[:, 0] / z**2
        J[:, 1, 1] = fy / z
        J[:, 1, 2] = -fy * pc[:, 1] / z**2
        J = J @ R_cw  # d(uv)/dX_world
        Jd = R_cw[:, 2, :] * inv_sigma[:, None]  # d(rd)/dX_world
        H = np.zeros((T, 3, 3))
        g = np.zeros((T, 3))
        np.add.at(H, obs_track, w[:, None, None] * np.einsum("oki,okj->oij", J, J)
                  + wd[:, None, None] * Jd[:, :, None] * Jd[:, None, :])
        np.add.at(g, obs_track, w[:, None] * np.einsum("oki,ok->oi", J, r) + (wd * rd)[:, None] * Jd)
        Hd = H + lam[:, None, None] * (np.eye(3) * (np.diagonal(H, axis1=1, axis2=2)[:, None, :] + 1e-9))
        step = -np.linalg.solve(Hd, g[..., None])[..., 0]
        Xn = X + step
        cn, rn, en, rdn, pcn = cost_of(Xn)
        better = cn < cost
        X = np.where(better[:, None], Xn, X)
        lam = np.where(better, lam * 0.3, lam * 10.0)
        ob = better[obs_track]
        cost = np.where(better, cn, cost)
        r = np.where(ob[:, None], rn, r)
        e = np.where(ob, en, e)
        rd = np.where(ob, rdn, rd)
        pc = np.where(ob[:, None], pcn, pc)
    return X


def _depth_at(depth: np.ndarray | None, xy: np.ndarray) -> np.ndarray:
    """Depth at rounded pixels ``xy: [N, 2]`` (0 where unknown)."""
    if depth is None:
        return np.zeros(len(xy), np.float32)
    h, w = depth.shape
    u = np.clip(np.round(xy[:, 0]).astype(int), 0, w - 1)
    v = np.clip(np.round(xy[:, 1]).astype(int), 0, h - 1)
    d = depth[v, u]
    return np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)


def _group_median(values: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    """Per-group coordinate-wise median of ``values: [O, D]`` (groups sorted or not) -> ``[n, D]`` (NaN if empty)."""
    out = np.full((n, values.shape[1]), np.nan)
    order = np.argsort(groups, kind="stable")
    g, v = groups[order], values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    for s, e in zip(starts, np.r_[starts[1:], len(g)]):
        out[g[s]] = np.median(v[s:e], axis=0)
    return out


class _Obs:
    """Flat observation table used while triangulating and filtering."""

    def __init__(self, track, frame, kp, feats: list[FrameFeatures]):
        self.track, self.frame, self.kp = track, frame, kp
        self.xy = np.array([feats[f].keypoints.xy[k] for f, k in zip(frame, kp)], np.float64).reshape(-1, 2)
        self.depth = np.array(
            [_depth_at(feats[f].depth, feats[f].keypoints.xy[k : k + 1])[0] for f, k in zip(frame, kp)], np.float32
        )

    def subset(self, m: np.ndarray) -> None:
        self.track, self.frame, self.kp, self.xy, self.depth = (
            self.track[m], self.frame[m], self.kp[m], self.xy[m], self.depth[m]
        )

    def renumber(self) -> int:
        uniq, self.track = np.unique(self.track, return_inverse=True)
        return len(uniq)


def _initial_points(obs: _Obs, n_tracks: int, T_cw: np.ndarray, T_wc: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Depth-based initialisation where >= 2 observations have depth, else widest-baseline DLT."""
    X = np.full((n_tracks, 3), np.nan)
    has = obs.depth > 0
    if has.any():
        Ki = np.linalg.inv(K)
        rays = np.c_[obs.xy[has], np.ones(int(has.sum()))] @ Ki.T * obs.depth[has, None]
        Tw = T_wc[obs.frame[has]]
        pw = np.einsum("oij,oj->oi", Tw[:, :3, :3], rays) + Tw[:, :3, 3]
        cnt = np.bincount(obs.track[has], minlength=n_tracks)
        med = _group_median(pw, obs.track[has], n_tracks)
        X[cnt >= 2] = med[cnt >= 2]
    todo = np.flatnonzero(~np.isfinite(X[:, 0]))
    if len(todo):
        centres = T_wc[obs.frame][:, :3, 3]
        pa, pb = np.zeros(len(todo), np.int64), np.zeros(len(todo), np.int64)
        starts = np.searchsorted(obs.track, todo)
        ends = np.searchsorted(obs.track, todo, side="right")
        for j, (s, e) in enumerate(zip(starts, ends)):
            c = centres[s:e]
            d = np.linalg.norm(c[:, None] - c[None], axis=-1)
            a, b = np.unravel_index(np.argmax(d), d.shape)
            pa[j], pb[j] = s + a, s + b
        P = K[None] @ T_cw[:, :3, :]
        X[todo] = triangulate_dlt(obs.xy[pa], obs.xy[pb], P[obs.frame[pa]], P[obs.frame[pb]])
    return X


def _filter_observations(obs: _Obs, X: np.ndarray, T_cw: np.ndarray, K: np.ndarray, cfg: MapConfig) -> np.ndarray:
    """``[O] bool``: reprojection within ``max_reproj_px``, in front, depth consistent."""
    R, t = T_cw[obs.frame, :3, :3], T_cw[obs.frame, :3, 3]
    uv, pc = project_obs(X[obs.track], R, t, K)
    err = np.linalg.norm(uv - obs.xy, axis=1)
    ok = np.isfinite(err) & (err < cfg.max_reproj_px) & (pc[:, 2] > 0.05)
    d = obs.depth
    bad_depth = (d > 0) & (np.abs(pc[:, 2] - d) > np.maximum(cfg.depth_abs_tol, cfg.depth_rel_tol * d))
    return ok & ~bad_depth


def _parallax_ok(obs: _Obs, X: np.ndarray, T_wc: np.ndarray, n: int, min_deg: float) -> np.ndarray:
    """``[n] bool``: widest angle between observation rays of a track >= ``min_deg``."""
    rays = T_wc[obs.frame][:, :3, 3] - X[obs.track]
    rays /= np.maximum(np.linalg.norm(rays, axis=1, keepdims=True), 1e-12)
    mean = np.zeros((n, 3))
    np.add.at(mean, obs.track, rays)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    cosang = np.sum(rays * mean[obs.track], axis=1)
    worst = np.ones(n)
    np.minimum.at(worst, obs.track, cosang)
    return np.degrees(np.arccos(np.clip(worst, -1, 1))) * 2 >= min_deg


def _triangulate_and_filter(obs: _Obs, T_cw, T_wc, K, cfg: MapConfig, min_obs: int, X0: np.ndarray | None = None):
    n = obs.renumber()
    X = _initial_points(obs, n, T_cw, T_wc, K) if X0 is None else X0
    for _ in range(2):  # refine, drop outlier observations, refine again on the survivors
        finite = np.isfinite(X).all(1)
        m = finite[obs.track]
        obs.subset(m)
        X = X[finite]
        n = obs.renumber()
        X = refine_points(X, obs.track, obs.xy, T_cw[obs.frame, :3, :3], T_cw[obs.frame, :3, 3], K, cfg.huber_px,
                          obs_depth=obs.depth if cfg.depth_in_refinement else None,
                          depth_sigma=(cfg.depth_sigma_rel, cfg.depth_sigma_abs))
        keep = _filter_observations(obs, X, T_cw, K, cfg)
        obs.subset(keep)
        cnt = np.bincount(obs.track, minlength=n)
        good = cnt >= min_obs
        obs.subset(good[obs.track])
        X = X[good]
        n = obs.renumber()
    has_depth = np.bincount(obs.track, obs.depth > 0, minlength=n) >= 2
    ok = has_depth | _parallax_ok(obs, X, T_wc, n, cfg.min_parallax_deg)
    obs.subset(ok[obs.track])
    X = X[ok]
    obs.renumber()
    return X


def _median_descriptors(obs: _Obs, feats: list[FrameFeatures], n: int) -> np.ndarray:
    d = np.stack([feats[f].keypoints.descriptors[k] for f, k in zip(obs.frame, obs.kp)])
    med = _group_median(d, obs.track, n).astype(np.float32)
    return med / np.maximum(np.linalg.norm(med, axis=1, keepdims=True), 1e-9)


def _merge_tracks(obs: _Obs, X: np.ndarray, feats, K, cfg: MapConfig) -> tuple[_Obs, np.ndarray]:
    """Merge tracks with similar median descriptors whose points are within a patch footprint."""
    n = len(X)
    if n < 2:
        return obs, X
    desc = _median_descriptors(obs, feats, n)
    dist = np.median(np.linalg.norm(X - X.mean(0), axis=1)) + 1.0
    radius = cfg.merge_footprint_px * dist / K[0, 0]
    pairs = cKDTree(X).query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return obs, X
    cos = np.sum(desc[pairs[:, 0]] * desc[pairs[:, 1]], axis=1)
    pairs = pairs[cos > cfg.merge_cos]
    # Tracks that share a frame are two different keypoints of that frame: never merge them.
    frames_of = [set() for _ in range(n)]
    for t, f in zip(obs.track, obs.frame):
        frames_of[t].add(int(f))
    pairs = np.array([p for p in pairs if not (frames_of[p[0]] & frames_of[p[1]])], np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return obs, X
    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    new_track = comp[obs.track]
    # A merged group may now hold one frame twice (A~B, B~C chains): keep the first observation.
    key = new_track.astype(np.int64) * len(feats) + obs.frame
    _, first = np.unique(key, return_index=True)
    m = np.zeros(len(key), bool)
    m[first] = True
    obs.track = new_track
    obs.subset(m)
    cnt = np.bincount(comp, minlength=comp.max() + 1)
    Xm = np.zeros((comp.max() + 1, 3))
    np.add.at(Xm, comp, X)
    Xm /= np.maximum(cnt, 1)[:, None]
    order = np.argsort(obs.track, kind="stable")
    obs.subset(order)
    uniq = np.unique(obs.track)
    log.debug("merged %d tracks into %d", n, len(uniq))
    return obs, Xm[uniq]


def _spread_subset(idx: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` evenly spaced entries of ``idx`` (keeps the widest spread of viewpoints)."""
    if len(idx) <= k:
        return idx
    return idx[np.round(np.linspace(0, len(idx) - 1, k)).astype(int)]


def build_landmarks(
    feats: list[FrameFeatures], intrinsics: CameraIntrinsics, extractor: LocalFeatures, cfg: MapConfig, progress: bool = True
) -> LandmarkSet:
    """Tracks -> triangulated, merged, filtered landmarks with their 7x7 descriptor patches."""
    cfg.validate()
    K = intrinsics.K
    T_wc = np.stack([f.T_world_camera for f in feats])
    T_cw = np.stack([invert_pose(T) for T in T_wc])
    if cfg.depth_tracking and all(f.depth is not None for f in feats):
        track, frame, kp = build_tracks_depth(feats, K, cfg, progress)
    else:
        track, frame, kp = build_tracks(feats, K, cfg, progress)
    obs = _Obs(track, frame, kp, feats)
    if len(track) == 0:
        raise EmptyMapError("no feature tracks: the frames share no matching features")
    X = _triangulate_and_filter(obs, T_cw, T_wc, K, cfg, min_obs=2)
    obs, X = _merge_tracks(obs, X, feats, K, cfg)
    X = _triangulate_and_filter(obs, T_cw, T_wc, K, cfg, min_obs=cfg.min_observations, X0=X)
    n = len(X)
    if n == 0:
        raise EmptyMapError(f"no landmark has >= {cfg.min_observations} consistent observations")
    desc = _median_descriptors(obs, feats, n)
    R, t = T_cw[obs.frame, :3, :3], T_cw[obs.frame, :3, 3]
    uv, pc = project_obs(X[obs.track], R, t, K)
    err2 = np.sum((uv - obs.xy) ** 2, axis=1)
    n_obs = np.bincount(obs.track, minlength=n)
    rmse = np.sqrt(np.bincount(obs.track, err2, minlength=n) / n_obs)
    mean_dist = np.bincount(obs.track, np.linalg.norm(pc, axis=1), minlength=n) / n_obs
    # Patches of a spread subset of observations per landmark (training data of the voxel fields).
    order = np.argsort(obs.track, kind="stable")
    bounds = np.searchsorted(obs.track[order], np.arange(n + 1))
    keep = np.concatenate(
        [_spread_subset(order[bounds[i] : bounds[i + 1]], cfg.max_obs_per_landmark) for i in range(n)]
    )
    o_track, o_frame, o_xy = obs.track[keep], obs.frame[keep], obs.xy[keep].astype(np.float32)
    patches = np.zeros((len(keep), cfg.patch_size, cfg.patch_size, extractor.dim), np.float16)
    if extractor.is_dense:
        for f in np.unique(o_frame):
            m = np.flatnonzero(o_frame == f)
            dm = feats[f].dense
            dm32 = DenseDescriptors(dm.map.float(), dm.stride, dm.scale_xy, dm.net_size)
            patches[m] = extractor.sample_patches(dm32, o_xy[m], cfg.patch_size).astype(np.float16)
    return LandmarkSet(
        points=X, descriptors=desc, n_obs=n_obs.astype(np.int64), mean_dist=mean_dist.astype(np.float32),
        reproj_rmse=rmse.astype(np.float32), obs_landmark=o_track.astype(np.int64), obs_frame=o_frame.astype(np.int64),
        obs_xy=o_xy, obs_patches=patches,
    )


def small_depth(depth: np.ndarray | None, wh: tuple[int, int]) -> np.ndarray:
    """Low-resolution depth ``[h, w] float32`` (nearest valid sample per block; 0 = unknown)."""
    w, h = wh
    if depth is None:
        return np.zeros((h, w), np.float32)
    d = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
    H, W = d.shape
    # Minimum valid depth per block: the nearest surface is what occludes.
    by, bx = H // h, W // w
    blk = d[: by * h, : bx * w].reshape(h, by, w, bx).transpose(0, 2, 1, 3).reshape(h, w, -1)
    blk = np.where(blk > 0, blk, np.inf).min(-1)
    return np.where(np.isfinite(blk), blk, 0).astype(np.float32)


def build_keyframes(frames: list[Frame], feats: list[FrameFeatures], cfg: MapConfig) -> KeyframeSet:
    """Keyframe poses, VLAD retrieval index and low-resolution depth maps."""
    index = VladIndex.fit([f.keypoints.descriptors for f in feats], words=cfg.retrieval_words)
    return KeyframeSet(
        poses=np.stack([f.T_world_camera for f in feats]),
        depth_small=np.stack([small_depth(f.depth, cfg.keyframe_depth_wh) for f in feats]),
        index=index,
        intrinsics=frames[0].intrinsics,
        frame_ids=np.array([f.index for f in frames], np.int64),
    )

