"""FaVoR localisation on held-out real ICL-NUIM frames, failure modes, bad input, persistence;
the keyframe baseline and the evaluation harness on the same data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from relocalization.baseline import KeyframeBaseline
from relocalization.evaluate import evaluate, median_ratio_ci, plot_error_cdf, pool, summarize
from relocalization.favor import FORMAT_VERSION, FavorMap, FavorRelocalizer, occluded, visible_landmarks
from spatial_memory.errors import ConfigError, EmptyMapError, InvalidFrameError, InvalidPoseError, MapFormatError
from spatial_memory.geometry import make_pose, pose_error
from spatial_memory.types import CameraIntrinsics


@pytest.fixture(scope="module")
def reloc(favor_map):
    return FavorRelocalizer(favor_map)


def test_locates_heldout_frames_by_retrieval(reloc, icl_queries, few_threads):
    for q in icl_queries:
        res = reloc.locate(q.rgb, q.intrinsics)
        assert res.success, res.message
        dt, dr = pose_error(res.T_world_camera, q.T_world_camera)
        assert dt < 0.10 and dr < 5.0, (q.index, dt, dr)
        assert res.inliers >= reloc.config.min_inliers and 0 < res.confidence <= 1
        assert {"features", "render", "match", "pnp", "total"} <= set(res.timings)


def test_locates_from_a_perturbed_prior(reloc, icl_queries, few_threads):
    q = icl_queries[1]
    prior = q.T_world_camera.copy()
    prior[:3, 3] += [0.15, -0.05, 0.1]
    res = reloc.locate(q.rgb, q.intrinsics, prior=prior)
    assert res.success, res.message
    dt, dr = pose_error(res.T_world_camera, q.T_world_camera)
    assert dt < 0.10 and dr < 5.0


@pytest.mark.parametrize("kind", ["blank", "dark_noise"])
def test_fails_on_blank_or_dark_images(reloc, icl_queries, kind, few_threads):
    q = icl_queries[0]
    if kind == "blank":
        img = np.zeros_like(q.rgb)
    else:  # a nearly black frame with sensor noise (instance-normalised noise gives keypoints)
        img = np.random.default_rng(0).integers(0, 4, q.rgb.shape).astype(np.uint8)
    res = reloc.locate(img, q.intrinsics)
    assert not res.success and res.T_world_camera is None and res.confidence == 0.0


def test_fails_with_a_far_away_prior(reloc, icl_queries, few_threads):
    q = icl_queries[0]
    far = q.T_world_camera.copy()
    far[:3, 3] += [50.0, 0.0, 0.0]
    res = reloc.locate(q.rgb, q.intrinsics, prior=far)
    assert not res.success and "visible" in res.message
    # Looking the other way (180 deg yaw about the camera's y axis) sees no landmark either.
    flip = q.T_world_camera @ make_pose(np.diag([-1.0, 1.0, -1.0]), np.zeros(3))
    assert not reloc.locate(q.rgb, q.intrinsics, prior=flip).success


def test_bad_inputs_raise_typed_errors(reloc, icl_queries):
    q = icl_queries[0]
    with pytest.raises(InvalidFrameError, match="intrinsics"):
        reloc.locate(q.rgb[:200], q.intrinsics)  # image size vs intrinsics
    with pytest.raises(InvalidFrameError, match="uint8"):
        reloc.locate(q.rgb.astype(np.float32), q.intrinsics)
    with pytest.raises(InvalidFrameError, match="HxWx3"):
        reloc.locate(q.rgb[..., 0], q.intrinsics)
    other = CameraIntrinsics(q.intrinsics.width, q.intrinsics.height, 400.0, 400.0, 160.0, 120.0)
    with pytest.raises(InvalidFrameError, match="differ from the map"):
        reloc.locate(q.rgb, other)
    bad = q.T_world_camera.copy()
    bad[0, 3] = np.nan
    with pytest.raises(InvalidPoseError):
        reloc.locate(q.rgb, q.intrinsics, prior=bad)
    with pytest.raises(InvalidPoseError):
        reloc.locate(q.rgb, q.intrinsics, prior=np.eye(3))


def test_empty_map_raises(favor_map):
    empty = FavorMap(favor_map.fields.subset(np.zeros(0, np.int64)), favor_map.n_obs[:0], favor_map.keyframes,
                     favor_map.intrinsics, favor_map.features, favor_map.config)
    with pytest.raises(EmptyMapError):
        FavorRelocalizer(empty)


def test_save_load_round_trip_gives_the_same_pose(favor_map, reloc, icl_queries, tmp_path, few_threads):
    path = favor_map.save(tmp_path / "rmap")
    loaded = FavorMap.load(path)
    assert len(loaded) == len(favor_map)
    np.testing.assert_array_equal(loaded.fields.descriptors.numpy(), favor_map.fields.descriptors.numpy())
    q = icl_queries[2]
    a = reloc.locate(q.rgb, q.intrinsics)
    b = FavorRelocalizer(loaded).locate(q.rgb, q.intrinsics)
    assert a.success and b.success
    np.testing.assert_allclose(a.T_world_camera, b.T_world_camera, atol=1e-6)
    # Another format version, or another kind of map, is refused.
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(MapFormatError, match="version"):
        FavorMap.load(path)
    meta["format_version"], meta["kind"] = FORMAT_VERSION, "m3"
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(MapFormatError, match="expected 'favor'"):
        FavorMap.load(path)
    with pytest.raises(MapFormatError):
        FavorMap.load(tmp_path / "missing")


def test_occlusion_test_uses_keyframe_depth():
    intr = CameraIntrinsics(4, 4, 2.0, 2.0, 1.5, 1.5)
    depth = np.full((4, 4), 2.0, np.float32)
    pts = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 2.02], [0.0, 0.0, 3.0], [5.0, 0.0, 1.0]])
    occ = occluded(pts, np.eye(4), depth, intr, rel_tol=0.05, abs_tol=0.05)
    assert occ.tolist() == [False, False, True, False]  # in front, on, behind the surface, outside the view
    idx, uv = visible_landmarks(pts, np.eye(4), intr, margin_frac=0.0)
    assert idx.tolist() == [0, 1, 2] and uv.shape == (3, 2)


def test_baseline_locates_and_round_trips(icl_mapping, icl_queries, reloc, tmp_path, few_threads):
    base = KeyframeBaseline.build(icl_mapping, progress=False, extractor=reloc.extractor)
    q = icl_queries[0]
    res = base.locate(q.rgb, q.intrinsics)
    assert res.success, res.message
    dt, dr = pose_error(res.T_world_camera, q.T_world_camera)
    assert dt < 0.10 and dr < 5.0
    assert not base.locate(np.zeros_like(q.rgb), q.intrinsics).success
    loaded = KeyframeBaseline.load(base.save(tmp_path / "kf"))
    res2 = loaded.locate(q.rgb, q.intrinsics)
    np.testing.assert_allclose(res2.T_world_camera, res.T_world_camera, atol=1e-6)
    with pytest.raises(MapFormatError):
        FavorMap.load(tmp_path / "kf")  # a baseline map is not a FaVoR map


def test_evaluate_and_plot(reloc, icl_queries, tmp_path, few_threads):
    r = evaluate(reloc, icl_queries[:2])
    assert r["queries"] == 2 and r["failure_rate"] == 0.0 and r["recall_10cm_10deg"] == 1.0
    assert r["median_cm"] < 10 and r["query_ms"] > 0 and r["map_bytes"] > 0 and "build_seconds" in r
    png = plot_error_cdf({"favor": r, "other": {**r, "errors_cm": [1.0, float("inf")],
                                                 "errors_deg": [0.5, float("inf")]}}, tmp_path / "cdf.png")
    assert png.stat().st_size > 5000


def test_summarize_counts_failures_as_misses():
    s = summarize(np.array([0.01, 0.04, np.inf, 0.2]), np.array([1.0, 6.0, np.inf, 1.0]), np.array([0.1, 0.2, 0.1, 0.1]))
    assert s["failure_rate"] == 0.25
    assert s["recall_5cm_5deg"] == 0.25 and s["recall_10cm_10deg"] == 0.5
    assert s["median_cm"] == pytest.approx(12.0)  # median over all, failures at +inf
    assert s["median_cm_successes"] == pytest.approx(4.0)


def test_pool_summarises_all_queries_not_the_medians():
    """Pooling two query sets re-summarises the concatenated per-query errors: the pooled median of
    [1, 2, 3] and [10, inf] is 3, not the mean of the two medians."""
    a = {**summarize(np.array([0.01, 0.02, 0.03]), np.zeros(3), np.full(3, 0.1)),
         "errors_cm": [1.0, 2.0, 3.0], "errors_deg": [0.1, 0.1, 0.1], "times_s": [0.1] * 3, "map_bytes": 100}
    b = {**summarize(np.array([0.1, np.inf]), np.array([0.1, np.inf]), np.full(2, 0.3)),
         "errors_cm": [10.0, float("inf")], "errors_deg": [0.1, float("inf")], "times_s": [0.3, 0.3], "map_bytes": 300}
    p = pool([a, b])
    assert p["queries"] == 5 and p["median_cm"] == pytest.approx(3.0) and p["failure_rate"] == pytest.approx(0.2)
    assert p["query_ms"] == pytest.approx(180.0) and p["map_bytes"] == 200 and len(p["errors_cm"]) == 5
    with pytest.raises(ConfigError):
        pool([])


def test_median_ratio_interval_brackets_the_ratio_and_narrows_with_more_queries():
    rng = np.random.default_rng(3)
    base = rng.lognormal(0.0, 0.5, 400)
    fav = 0.5 * rng.lognormal(0.0, 0.5, 400)
    fav[:40] = np.inf  # failures count as +inf, as in summarize
    lo, hi = median_ratio_ci(fav, base)
    ratio = np.median(fav) / np.median(base)
    assert lo <= ratio <= hi and hi < 1.0 and lo > 0.3
    lo20, hi20 = median_ratio_ci(fav[::20], base[::20])
    assert hi20 - lo20 > hi - lo  # 20 views: a much wider interval than 400
    lo_f, hi_f = median_ratio_ci(np.full(5, np.inf), np.ones(5))  # all failed: inf, no NaN
    assert lo_f == hi_f == np.inf
    with pytest.raises(ConfigError):
        median_ratio_ci(np.ones(3), np.ones(4))


def test_median_ratio_interval_by_group_covers_between_group_spread():
    """Resampling whole groups (trajectories): when the ratio differs from group to group the
    interval is wider than the per-query one, and it reduces to the ratio when groups agree."""
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(8), 20)
    base = rng.lognormal(0.0, 0.3, 160)
    per_group = np.array([0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])  # FaVoR's advantage varies by trajectory
    fav = base * per_group[groups]
    lo_q, hi_q = median_ratio_ci(fav, base)
    lo_g, hi_g = median_ratio_ci(fav, base, groups=groups)
    assert lo_g <= np.median(fav) / np.median(base) <= hi_g
    assert hi_g - lo_g > hi_q - lo_q
    same = 0.5 * base
    lo_s, hi_s = median_ratio_ci(same, base, groups=groups)
    assert lo_s == pytest.approx(0.5) and hi_s == pytest.approx(0.5)
    with pytest.raises(ConfigError):
        median_ratio_ci(fav, base, groups=groups[:10])


def test_pose_far_from_every_keyframe_is_flagged():
    from relocalization.pnp import far_from_map

    kfs = np.stack([np.eye(4), make_pose(np.eye(3), [1.0, 0, 0])])
    assert far_from_map(make_pose(np.eye(3), [1.5, 0, 0]), kfs, 2.0) is None
    assert far_from_map(make_pose(np.eye(3), [5.0, 0, 0]), kfs, 2.0) == pytest.approx(4.0)


def test_baseline_needs_depth(icl_mapping):
    from dataclasses import replace

    with pytest.raises(InvalidFrameError, match="depth"):
        KeyframeBaseline.build([icl_mapping[0], replace(icl_mapping[1], depth=None)], progress=False)


def test_refinement_rounds_add_support_and_render_cache_follows_the_camera(favor_map, icl_queries, few_threads):
    """Geometric refinement against the candidate detections keeps the pose and adds inliers;
    the render cache re-renders once the camera moved farther than ``rerender_distance_m``."""
    import dataclasses

    from relocalization.favor import RenderCache

    q = icl_queries[0]
    base_cfg = favor_map.config.locate
    plain = FavorRelocalizer(favor_map, dataclasses.replace(base_cfg, refine_windows_px=()))
    refined = FavorRelocalizer(favor_map, dataclasses.replace(base_cfg, refine_windows_px=(4.0, 1.5)))
    a, b = plain.locate(q.rgb, q.intrinsics), refined.locate(q.rgb, q.intrinsics)
    assert a.success and b.success, (a.message, b.message)
    assert "refinement" in b.message and b.inliers > a.inliers
    assert pose_error(b.T_world_camera, q.T_world_camera)[0] < 0.05

    cache = RenderCache(favor_map.fields, 0.1)
    idx = np.arange(10)
    first = cache.get(idx, np.zeros(3))
    assert np.array_equal(cache.get(idx[::-1], np.full(3, 0.01)), first[::-1])  # within 10 cm: reused
    moved = cache.get(idx, np.array([5.0, 0.0, 0.0]))
    assert np.allclose(moved, favor_map.fields.render(np.array([5.0, 0.0, 0.0]), idx), atol=1e-6)
    with pytest.raises(ConfigError, match="refine"):
        dataclasses.replace(base_cfg, refine_windows_px=(0.0,)).validate()


def test_looser_ratio_fallback_only_when_the_strict_pass_fails(favor_map, icl_queries, few_threads):
    """A ratio test strict enough to reject everything fails; the fallback pass (looser ratio,
    higher inlier bar) then localises, and says so; with the fallback off the query fails."""
    import dataclasses

    q = icl_queries[0]
    cfg = dataclasses.replace(favor_map.config.locate, match_ratio=0.3, fallback_ratio=0.95)
    res = FavorRelocalizer(favor_map, cfg).locate(q.rgb, q.intrinsics)
    assert res.success and "fallback" in res.message and res.inliers >= cfg.fallback_min_inliers
    assert pose_error(res.T_world_camera, q.T_world_camera)[0] < 0.05
    off = FavorRelocalizer(favor_map, dataclasses.replace(cfg, fallback_ratio=0.3)).locate(q.rgb, q.intrinsics)
    assert not off.success
    normal = FavorRelocalizer(favor_map).locate(q.rgb, q.intrinsics)
    assert normal.success and "fallback" not in normal.message
    with pytest.raises(ConfigError, match="fallback_min_inliers"):
        dataclasses.replace(cfg, fallback_min_inliers=5).validate()
