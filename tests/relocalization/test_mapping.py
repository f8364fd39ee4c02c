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
