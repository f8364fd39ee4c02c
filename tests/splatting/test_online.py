"""Online mapping: keyframe selection, growth where the map is empty, PSNR rises with optimisation."""

from __future__ import annotations

import numpy as np
import pytest

from spatial_memory.errors import ConfigError, InvalidFrameError
from scipy.spatial.transform import Rotation

from spatial_memory.geometry import make_pose
from splatting.online import MapperConfig, OnlineMapper, pose_delta, voxel_filter


@pytest.fixture(scope="module")
def frames():
    from sim.simulator import make_sim_source

    src = make_sim_source(scene="drake_living_room", seed=0, frames=6, width=128, height=96, progress=False)
    return list(src)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-10)))


def test_pose_delta_and_voxel_filter() -> None:
    T0 = np.eye(4)
    T1 = make_pose(Rotation.from_euler("y", 30, degrees=True).as_matrix(), [0.3, 0.4, 0.0])
    dt, dr = pose_delta(T0, T1)
    assert dt == pytest.approx(0.5) and dr == pytest.approx(30.0, abs=1e-6)
    pts = np.array([[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [0.5, 0.5, 0.5]])
    assert voxel_filter(pts, 0.05).tolist() == [0, 2]


def test_keyframe_selection_by_motion(frames) -> None:
    m = OnlineMapper(MapperConfig(keyframe_translation_m=0.2, keyframe_rotation_deg=10, iters_per_keyframe=0))
    f = frames[0]
    assert m.is_keyframe(f)[0]
    m.integrate(f)
    assert not m.is_keyframe(f)[0]  # same pose again
    moved = f.with_pose(f.T_world_camera @ make_pose(np.eye(3), [0.0, 0.0, 0.25]))
    assert m.is_keyframe(moved)[0]
    turned = f.with_pose(f.T_world_camera @ make_pose(Rotation.from_euler("y", 15, degrees=True).as_matrix(), [0, 0, 0]))
    assert m.is_keyframe(turned)[0]
    # Rendered overlap: the integrated view is covered; a view turned away is not.
    assert m.uncovered_fraction(f) < 0.05
    away = f.with_pose(f.T_world_camera @ make_pose(Rotation.from_euler("y", 180, degrees=True).as_matrix(), [0, 0, 0]))
    assert m.uncovered_fraction(away) > 0.5
    m.config.keyframe_rotation_deg = 360.0
    assert m.is_keyframe(away) == (True, m.is_keyframe(away)[1]) and "unmapped" in m.is_keyframe(away)[1]


def test_growth_only_where_map_is_empty(frames) -> None:
    m = OnlineMapper(MapperConfig(iters_per_keyframe=0))
    first = m.integrate(frames[0]).added
    assert first > 100 and m.num_gaussians == first
    again = m.integrate(frames[0]).added  # the map already explains this view
    assert again < 0.1 * first


def test_mapping_requires_pose_and_depth(frames) -> None:
    m = OnlineMapper()
    with pytest.raises(InvalidFrameError):
        m.integrate(frames[0].with_pose(None))
    with pytest.raises(ConfigError):
        MapperConfig(voxel_size_m=0)


def test_psnr_rises_with_online_optimisation(frames) -> None:
    cfg = MapperConfig(iters_per_keyframe=0, keyframe_translation_m=1e-6, window_recent=3, window_random=0)
    m = OnlineMapper(cfg)
    for f in frames[:3]:
        m.integrate(f)

    def mean_psnr() -> float:
        vals = []
        for f in frames[:3]:
            out = m.render(f.intrinsics, f.T_world_camera, with_queries=False)
            vals.append(_psnr(out.rgb.clamp(0, 1).numpy(), f.rgb / 255.0))
        return float(np.mean(vals))

    before = mean_psnr()
    m.refine(30)
    after = mean_psnr()
    assert after > before + 0.5, (before, after)


def test_keyframe_time_budget_limits_iterations(frames) -> None:
    m = OnlineMapper(MapperConfig(iters_per_keyframe=50, keyframe_budget_s=1e-3))
    assert m.integrate(frames[0]).iterations == 1  # at least one step, then the budget is spent
    m.config.keyframe_budget_s = None
    m.config.iters_per_keyframe = 3
    assert m.integrate(frames[1]).iterations == 3
