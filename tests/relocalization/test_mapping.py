"""Tracking and triangulation: synthetic geometry and the real ICL-NUIM frames against their depth."""

from __future__ import annotations

import numpy as np
import pytest

from relocalization.features import make_features
from relocalization.mapping import (
    MapConfig, build_landmarks, extract_sequence, project_obs, refine_points, rotation_transfer_px,
    sampson_px, small_depth, triangulate_dlt,
)
from spatial_memory.geometry import invert_pose, look_at

K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])


def _cams(n: int) -> np.ndarray:
    """``n`` cameras on an arc looking at the origin from ~3 m."""
    return np.stack([look_at(np.array([3.0 * np.cos(a), 3.0 * np.sin(a), 0.5]), np.zeros(3))
                     for a in np.linspace(-0.4, 0.4, n)])


def _project(X, T_wc):
    T_cw = invert_pose(T_wc)
    uv, _ = project_obs(X, np.repeat(T_cw[None, :3, :3], len(X), 0), np.repeat(T_cw[None, :3, 3], len(X), 0), K)
    return uv


def test_dlt_is_exact_without_noise():
    rng = np.random.default_rng(0)
    X = rng.uniform(-0.5, 0.5, (50, 3))
    cams = _cams(2)
    P = [K @ invert_pose(T)[:3] for T in cams]
    Xt = triangulate_dlt(_project(X, cams[0]), _project(X, cams[1]),
                         np.repeat(P[0][None], 50, 0), np.repeat(P[1][None], 50, 0))
    np.testing.assert_allclose(Xt, X, atol=1e-6)


def test_huber_refinement_beats_outliers_and_noise():
    rng = np.random.default_rng(1)
    X = rng.uniform(-0.5, 0.5, (40, 3))
    cams = _cams(8)
    track = np.repeat(np.arange(40), 8)
    cam = np.tile(np.arange(8), 40)
    xy = np.stack([_project(X[t : t + 1], cams[c])[0] for t, c in zip(track, cam)])
    xy += rng.normal(0, 0.5, xy.shape)
    out = rng.random(len(xy)) < 0.1
    xy[out] += rng.uniform(20, 40, (int(out.sum()), 2))  # gross outliers
    T_cw = np.stack([invert_pose(T) for T in cams])[cam]
    X0 = X + rng.normal(0, 0.05, X.shape)
    Xr = refine_points(X0, track, xy, T_cw[:, :3, :3], T_cw[:, :3, 3], K, huber_px=2.0, iters=15)
    err0 = np.linalg.norm(X0 - X, axis=1)
    err = np.linalg.norm(Xr - X, axis=1)
    assert np.median(err) < 0.01 < np.median(err0)


def test_depth_residuals_pin_points_that_short_baseline_rays_do_not():
    """Three nearby cameras (2 cm apart, 3 m away) with 0.5 px keypoint noise: rays alone leave the
    depth uncertain by decimetres; with measured depth (1 cm noise) the RGB-D term pins it, and a
    gross depth outlier (a keypoint on a depth edge) is absorbed by the Huber loss."""
    rng = np.random.default_rng(4)
    X = rng.uniform(-0.3, 0.3, (60, 3))
    cams = np.stack([look_at(np.array([3.0, 0.01 * k, 0.5]), np.zeros(3)) for k in range(3)])
    track = np.repeat(np.arange(60), 3)
    cam = np.tile(np.arange(3), 60)
    T_cw = np.stack([invert_pose(T) for T in cams])[cam]
    xy = np.stack([_project(X[t : t + 1], cams[c])[0] for t, c in zip(track, cam)]) + rng.normal(0, 0.5, (180, 2))
    z = np.einsum("oij,oj->oi", T_cw[:, :3, :3], X[track])[:, 2] + T_cw[:, 2, 3]
    depth = z + rng.normal(0, 0.01, z.shape)
    depth[::7] += 0.8  # background depth behind an edge keypoint
    X0 = X + rng.normal(0, 0.05, X.shape)
    args = (X0, track, xy, T_cw[:, :3, :3], T_cw[:, :3, 3], K)
    rays_only = np.linalg.norm(refine_points(*args, huber_px=2.0, iters=15) - X, axis=1)
    rgbd = np.linalg.norm(refine_points(*args, huber_px=2.0, iters=15, obs_depth=depth) - X, axis=1)
    assert np.median(rgbd) < 0.02 and np.median(rays_only) > 3 * np.median(rgbd)
    no_depth = np.linalg.norm(refine_points(*args, huber_px=2.0, iters=15, obs_depth=np.zeros_like(depth)) - X, axis=1)
    np.testing.assert_allclose(no_depth, rays_only)  # depth 0 = no measurement


def test_known_pose_checks():
    rng = np.random.default_rng(2)
    X = rng.uniform(-0.5, 0.5, (30, 3))
    a, b = _cams(2)
    xa, xb = _project(X, a), _project(X, b)
    assert sampson_px(xa, xb, a, b, K).max() < 1e-6
    assert np.median(sampson_px(xa, xb[::-1], a, b, K)) > 1.0
    # Pure rotation: the infinite homography maps pixels exactly.
    b_rot = a.copy()
    b_rot[:3, :3] = a[:3, :3] @ look_at(np.zeros(3), np.array([1.0, 0.2, 0.05]))[:3, :3].T @ look_at(
        np.zeros(3), np.array([1.0, 0.0, 0.0]))[:3, :3]
    assert rotation_transfer_px(xa, _project(X, b_rot), a, b_rot, K).max() < 1e-6


def test_small_depth_keeps_nearest_surface():
    d = np.full((8, 8), 3.0, np.float32)
    d[0, 0] = 1.0
    d[4:, 4:] = 0.0
    s = small_depth(d, (2, 2))
    assert s.shape == (2, 2)
    assert s[0, 0] == 1.0 and s[1, 1] == 0.0 and s[0, 1] == 3.0
    assert small_depth(None, (4, 3)).shape == (3, 4)


def test_icl_landmarks_agree_with_depth(icl_mapping):
    """Triangulated landmarks against the (independent) depth maps of the frames that saw them."""
    frames = icl_mapping[:15]
    ex = make_features("xfeat", top_k=512)
    feats = extract_sequence(frames, ex, dense=True, progress=False)
    cfg = MapConfig(top_k=512)
    lm = build_landmarks(feats, frames[0].intrinsics, ex, cfg, progress=False)
    assert len(lm) > 50
    assert (lm.n_obs >= cfg.min_observations).all()
    assert lm.obs_patches.shape[1:] == (7, 7, 64)
    assert np.median(lm.reproj_rmse) < 1.5
    errs = []
    for o in range(0, len(lm.obs_landmark), 3):
        f = frames[lm.obs_frame[o]]
        T_cw = invert_pose(f.T_world_camera)
        z = (T_cw[:3, :3] @ lm.points[lm.obs_landmark[o]] + T_cw[:3, 3])[2]
        u, v = np.round(lm.obs_xy[o]).astype(int)
        if f.depth[v, u] > 0:
            errs.append(abs(z - f.depth[v, u]))
    errs = np.array(errs)
    assert len(errs) > 100
    assert np.median(errs) < 0.03  # the noisy ICL depth is ~1 cm at 2 m
    assert np.percentile(errs, 90) < 0.10


def test_mapping_rejects_unposed_frames(icl_mapping):
    from spatial_memory.errors import InvalidFrameError
    from relocalization.mapping import check_mapping_frames

    frames = [icl_mapping[0], icl_mapping[1].with_pose(None)]
    with pytest.raises(InvalidFrameError, match="no pose"):
        check_mapping_frames(frames)


def _plane_frames(n_frames: int, rng) -> tuple[list, np.ndarray]:
    """Cameras sliding past the wall ``y = 3`` holding 300 textured points (id-coded descriptors).

    Keypoints are the visible points' projections (0.3 px noise, shuffled, some dropped) plus
    clutter; depth is the exact plane depth. Returns the FrameFeatures and the ``[O] -> point id``
    ground truth per frame as a list of arrays.
    """
    from relocalization.features import Keypoints
    from relocalization.mapping import FrameFeatures

    P = np.c_[rng.uniform(-2, 2, 300), np.full(300, 3.0), rng.uniform(-1, 1, 300)]
    D = rng.normal(size=(300, 32)).astype(np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    W, H = 320, 240
    v, u = np.mgrid[0:H, 0:W]
    feats, ids = [], []
    for i in range(n_frames):
        T = look_at(np.array([-0.5 + 0.1 * i, 0.0, 0.0]), np.array([-0.5 + 0.1 * i, 3.0, 0.0]))
        uv, pc = project_obs(P, np.repeat(invert_pose(T)[None, :3, :3], 300, 0), np.repeat(invert_pose(T)[None, :3, 3], 300, 0), K)
        vis = np.flatnonzero((pc[:, 2] > 0) & (uv[:, 0] >= 2) & (uv[:, 0] < W - 2) & (uv[:, 1] >= 2) & (uv[:, 1] < H - 2))
        vis = vis[rng.random(len(vis)) > 0.15]  # missed detections
        xy = uv[vis] + rng.normal(0, 0.3, (len(vis), 2))
        d = D[vis] + rng.normal(0, 0.05, (len(vis), 32)).astype(np.float32)
        clutter = rng.uniform([0, 0], [W, H], (40, 2))  # detections without a consistent 3D point
        cd = rng.normal(size=(40, 32)).astype(np.float32)
        xy, d, gid = np.r_[xy, clutter], np.r_[d, cd], np.r_[vis, np.full(40, -1)]
        order = rng.permutation(len(xy))
        d = d[order] / np.linalg.norm(d[order], axis=1, keepdims=True)
        rays = (np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3) @ np.linalg.inv(K).T) @ T[:3, :3].T
        depth = ((3.0 - T[1, 3]) / rays[:, 1]).reshape(H, W).astype(np.float32)  # plane y = 3, ray z == 1
        kp = Keypoints(xy[order].astype(np.float32), np.ones(len(xy), np.float32), d.astype(np.float32))
        feats.append(FrameFeatures(kp, None, T, depth))
        ids.append(gid[order])
    return feats, ids


def test_depth_tracking_follows_points_through_missed_detections():
    from relocalization.mapping import build_tracks_depth

    rng = np.random.default_rng(3)
    feats, ids = _plane_frames(10, rng)
    track, frame, kp = build_tracks_depth(feats, K, MapConfig(), progress=False)
    gid = np.array([ids[f][k] for f, k in zip(frame, kp)])
    # Every track is one physical point (clutter may start a track but is never joined to one).
    pure = [len(np.unique(gid[track == t])) == 1 for t in np.unique(track)]
    assert np.mean(pure) > 0.99
    # Tracks bridge missed detections: a point seen in n frames is mostly one track of ~n observations.
    real = gid >= 0
    per_point = np.bincount(gid[real], minlength=300)
    seen = np.zeros(300, int)
    for f in ids:
        np.add.at(seen, f[f >= 0], 1)
    many = seen >= 5
    assert np.median(per_point[many] / seen[many]) > 0.95
    n_tracks_per_point = np.array([len(np.unique(track[real][gid[real] == p])) for p in np.flatnonzero(many)])
    assert np.mean(n_tracks_per_point == 1) > 0.9
