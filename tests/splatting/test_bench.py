"""The benchmark function runs end to end and reports agreement with the reference (no timing asserts)."""

from __future__ import annotations

import math

from splatting.bench import bench_rasterizer, make_random_scene


def test_bench_rasterizer_reports_timings_and_agreement():
    res = bench_rasterizer(n_list=(300,), width=32, height=24, features=3, iters=1, progress=False)
    for key in ("fwd_bwd_ms_300", "torch_fwd_bwd_ms_300", "cpu_speedup_vs_torch_300"):
        assert res[key] > 0 and math.isfinite(res[key])
    assert res["cpu_speedup_vs_torch_300"] == res["torch_fwd_bwd_ms_300"] / res["fwd_bwd_ms_300"]
    assert res["max_abs_diff_vs_torch"] < 1e-4
    assert "gsplat_fwd_bwd_ms_300" not in res  # device="cpu"


def test_random_scene_is_in_front_of_the_camera():
    s = make_random_scene(1000, 64, 48, seed=1)
    z = s["means"][:, 2]
    assert (z >= 1.0).all() and (z <= 3.0).all()
    assert (s["scales"] >= 0.01 - 1e-6).all() and (s["scales"] <= 0.05 + 1e-6).all()
    u = s["K"][0, 0] * s["means"][:, 0] / z + s["K"][0, 2]
    assert ((u > 0) & (u < 64)).float().mean() > 0.6
