"""The simulator frame source and the Gymnasium environment."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from sim.agent import camera_pose
from sim.env import ENV_ID, EmbodiedSimEnv
from sim.simulator import SimFrameSource, make_sim_source
from sim.source import FrameSource
from spatial_memory.errors import ConfigError
from spatial_memory.types import CameraIntrinsics

K_SMALL = CameraIntrinsics.from_fov(48, 36, 70.0)


# ----------------------------------------------------------------------------- frame source


def test_sim_source_yields_valid_stamped_frames(box_world):
    poses = [camera_pose([2.0 + 0.1 * i, 2.0], 0.1 * i, 0.0, 1.0) for i in range(4)]
    src = SimFrameSource.from_poses(box_world, poses, K_SMALL, rate_hz=20.0)
    assert isinstance(src, FrameSource)
    assert len(src) == 4 and src.intrinsics == K_SMALL
    frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.stamp_ns for f in frames] == [0, 50_000_000, 100_000_000, 150_000_000]
    for f, T in zip(frames, poses):
        f.validate()
        np.testing.assert_array_equal(f.T_world_camera, T)
        assert f.rgb.shape == (36, 48, 3) and f.depth.shape == (36, 48) and f.instance_ids.shape == (36, 48)
        assert (f.depth > 0).mean() > 0.95  # a closed room: every ray hits something
        assert set(np.unique(f.instance_ids)) <= set(f.id_to_label)
    assert "wall" in frames[0].labels_present()
    assert src.stats.yielded == 4 and src.stats.skipped == 0


def test_sim_source_skips_bad_poses(box_world):
    good = camera_pose([2.0, 2.0], 0.0, 0.0, 1.0)
    bad = good.copy()
    bad[0, 3] = np.nan
    src = SimFrameSource.from_poses(box_world, [good, bad, good], K_SMALL)
    frames = list(src)
    assert [f.index for f in frames] == [0, 2]
    assert src.stats.skipped == 1 and "frame 1" in src.stats.skip_reasons[0]


def test_make_sim_source_trajectories_and_lighting(box_world):
    a = make_sim_source(box_world, seed=2, frames=6, width=40, height=30, trajectory="loop")
    b = make_sim_source(box_world, seed=2, frames=6, width=40, height=30, trajectory="loop", lighting="changed")
    assert len(a) == 6 and a.intrinsics.width == 40
    fa, fb = next(iter(a)), next(iter(b))
    np.testing.assert_array_equal(fa.T_world_camera, fb.T_world_camera)
    np.testing.assert_array_equal(fa.depth, fb.depth)  # same geometry ...
    assert np.abs(fa.rgb.astype(int) - fb.rgb.astype(int)).mean() > 5  # ... different light
    with pytest.raises(ConfigError):
        make_sim_source(box_world, frames=3, trajectory="teleport")
    with pytest.raises(ConfigError):
        make_sim_source(box_world, frames=3, lighting="disco")


def test_make_sim_source_by_scene_name():
    pytest.importorskip("sim.scenes", reason="sim/scenes.py (scene registry) is not available")
    src = make_sim_source("drake_living_room", frames=3, width=32, height=24)
    frames = list(src)
    assert len(frames) == 3 and src.name.startswith("sim:")
    for f in frames:
        f.validate()
        assert f.has_pose and f.has_depth


# ----------------------------------------------------------------------------- gym env


def _env(scene, **kw) -> EmbodiedSimEnv:
    return EmbodiedSimEnv(scene=scene, width=32, height=24, **kw)


def test_env_passes_gymnasium_checker(box_world):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # checker hints unrelated to correctness (e.g. render-mode spec)
        check_env(_env(box_world, max_steps=20), skip_render_check=True)


def test_env_spaces_and_episode_flow(box_world):
    env = _env(box_world, max_steps=5, include_stop=True)
    assert env.action_space.n == 6 and env.actions[-1] == "stop"
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert {"collided", "room_id", "coverage", "id_to_label"} <= set(info)
    q = obs["pose"][3:]
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-5)
    turn = env.actions.index("turn_left")
    obs2, r, term, trunc, info2 = env.step(turn)
    assert not term and not trunc and r >= 0.0
    np.testing.assert_allclose(obs2["pose"][:3], obs["pose"][:3], atol=1e-6)  # turning does not move
    assert not np.allclose(obs2["pose"][3:], obs["pose"][3:])
    for _ in range(3):
        *_, trunc, _ = env.step(turn)
    assert not trunc
    *_, trunc, _ = env.step(turn)
    assert trunc  # max_steps = 5
    env.reset(seed=1)
    *_, term, trunc, _ = env.step(env.actions.index("stop"))
    assert term and not trunc


def test_env_collision_and_reward(box_world):
    env = _env(box_world, collision_penalty=0.5)
    env.reset(seed=0)
    env.agent.set_pose(3.4, 0.6, 0.0)  # facing the dividing wall, 0.4 m away
    fwd = env.actions.index("move_forward")
    collided = False
    for _ in range(4):
        _, r, _, _, info = env.step(fwd)
        collided |= info["collided"]
        if info["collided"]:
            assert r < 0  # the penalty outweighs the little new floor seen
    assert collided
    assert env.agent.grid.is_free(env.agent.xy)


def test_env_reset_is_deterministic(box_world):
    env = _env(box_world)
    o1, _ = env.reset(seed=11)
    o2, _ = env.reset(seed=11)
    for k in o1:
        np.testing.assert_array_equal(o1[k], o2[k])
    o3, _ = env.reset(seed=12)
    assert not np.array_equal(o1["pose"], o3["pose"])


def test_env_registered_with_gymnasium(box_world):
    env = gym.make(ENV_ID, scene=box_world, width=32, height=24, max_steps=3)
    obs, _ = env.reset(seed=0)
    assert obs["rgb"].shape == (24, 32, 3)
    env.close()


def test_env_apartment_scene_per_seed():
    pytest.importorskip("sim.scenes", reason="sim/scenes.py (scene registry) is not available")
    env = _env("apartment", n_scene_seeds=4)
    _, i0 = env.reset(seed=0, options={"scene_seed": 0})
    s0 = env.agent.scene
    _, i1 = env.reset(seed=0, options={"scene_seed": 1})
    s1 = env.agent.scene
    assert i0["scene_seed"] == 0 and i1["scene_seed"] == 1
    assert s0.vertices.shape != s1.vertices.shape or not np.allclose(s0.vertices, s1.vertices)
    _, i5 = env.reset(seed=5)  # no option: the reset seed picks the apartment, 5 % 4 = 1
    assert i5["scene_seed"] == 1 and env.agent.scene is s1  # the cached apartment is reused
    obs, *_ = env.step(0)
    assert env.observation_space.contains(obs)
