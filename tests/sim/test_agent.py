"""Occupancy grid, planning, ray casting and the discrete-action agent on the box world (conftest)."""

from __future__ import annotations

import numpy as np
import pytest

from sim.agent import ACTIONS, Agent, AgentConfig, yaw_pitch_from_camera
from sim.navigation import GridConfig, OccupancyGrid, SceneRaycaster
from spatial_memory.errors import ConfigError, InvalidPoseError
from spatial_memory.geometry import pose_error
from spatial_memory.types import CameraIntrinsics


# ----------------------------------------------------------------------------- grid


def test_grid_blocks_walls_objects_and_outside(box_grid):
    g = box_grid
    assert g.is_free([2.5, 2.2])  # open floor of room A
    assert g.is_free([5.0, 1.5])  # open floor of room B
    assert not g.is_free([4.0, 0.5])  # dividing wall
    assert not g.is_free([1.5, 0.9])  # under the 0.75 m table (robot is 1.1 m tall)
    assert not g.is_free([6.5, 2.5])  # sofa
    assert not g.is_free([-1.0, 1.0])  # outside the walls: no floor
    assert not g.is_free([3.0, 0.1])  # within the robot radius of the south wall
    assert g.is_free([4.0, 1.5])  # the doorway is passable
    xy = np.array([[2.5, 2.2], [4.0, 0.5], [5.0, 1.5]])
    np.testing.assert_array_equal(g.is_free(xy), [True, False, True])
    with pytest.raises(ValueError, match="NaN"):
        g.is_free([np.nan, 1.0])


def test_grid_inflation_matches_robot_radius(box_world):
    thin = OccupancyGrid.from_scene(box_world, GridConfig(robot_radius=0.0))
    fat = OccupancyGrid.from_scene(box_world, GridConfig(robot_radius=0.4))
    assert thin.traversable.sum() > fat.traversable.sum()
    # 0.3 m from the south wall: free for a point robot, blocked for a 0.4 m radius robot
    assert thin.is_free([2.5, 0.3]) and not fat.is_free([2.5, 0.3])
    assert np.all(fat.clearance[fat.traversable] > 0.4)


def test_robot_height_band_decides_what_blocks(box_world):
    # The doorway has a lintel from 2.1 m: a 2.3 m tall robot cannot pass, so the rooms split.
    tall = OccupancyGrid.from_scene(box_world, GridConfig(max_height=2.3), keep="all")
    assert tall.components()[1] == 2
    assert not tall.is_free([4.0, 1.5])
    # Raising min_height above the 0.8 m sofa makes it "low clutter" the robot ignores.
    hover = OccupancyGrid.from_scene(box_world, GridConfig(min_height=0.85, max_height=2.0, robot_radius=0.1))
    assert hover.is_free([6.5, 2.55]) and not hover.is_free([4.0, 0.5])


def test_one_component_and_component_of(box_grid):
    _, n = box_grid.components()
    assert n == 1  # largest component kept: both rooms, joined by the doorway
    comp = box_grid.component_of([1.0, 2.0])
    assert comp.traversable.sum() == box_grid.traversable.sum()
    with pytest.raises(ValueError):
        box_grid.component_of([-5.0, -5.0])


def test_plan_goes_through_the_doorway(box_grid):
    path = box_grid.plan([2.5, 0.6], [5.5, 0.5])
    assert path is not None and len(path) >= 3  # cannot go straight through the wall
    np.testing.assert_allclose(path[0], [2.5, 0.6])
    assert np.linalg.norm(path[-1] - [5.5, 0.5]) < 0.05
    for a, b in zip(path[:-1], path[1:]):
        assert box_grid.segment_free(a, b)
    dense = np.concatenate([a + np.linspace(0, 1, 50)[:, None] * (b - a) for a, b in zip(path[:-1], path[1:])])
    at_wall = dense[np.abs(dense[:, 0] - 4.0) < 0.05]
    assert len(at_wall) > 0 and np.all((at_wall[:, 1] > 1.0) & (at_wall[:, 1] < 2.0))


def test_plan_unreachable_returns_none(box_grid):
    assert box_grid.plan([2.0, 2.0], [20.0, 20.0]) is None


def test_distance_field_is_geodesic(box_grid):
    d = box_grid.distance_field([2.5, 0.6])
    c = box_grid.world_to_cell([5.5, 0.6])[0]
    # straight line 3.0 m through the wall; the detour via the doorway (y >= ~1.25) is ~3.3 m
    assert 3.15 < d[c[0], c[1]] < 3.6
    assert np.isinf(d[~box_grid.traversable]).all()


def test_visibility_stops_at_walls(box_grid):
    vis = box_grid.visible_cells([2.5, 0.6], 0.0, np.radians(20.0), 6.0)
    assert vis[tuple(box_grid.world_to_cell([3.5, 0.6])[0])]
    assert not vis[tuple(box_grid.world_to_cell([5.0, 0.6])[0])]  # behind the dividing wall
    assert not vis[tuple(box_grid.world_to_cell([1.0, 0.6])[0])]  # behind the camera


def test_raycaster_depth_of_known_wall(box_world):
    rc = SceneRaycaster(box_world)
    K = CameraIntrinsics.from_fov(33, 25, 60.0)
    from sim.agent import camera_pose

    T = camera_pose([2.0, 0.5], 0.0, 0.0, 1.0)  # looking +x at the dividing wall (face at x = 3.95)
    depth = rc.depth(K.K, K.width, K.height, T)
    assert depth.shape == (25, 33)
    assert depth[12, 16] == pytest.approx(1.95, abs=1e-4)
    # z-depth of a plane facing the camera is constant across the image
    assert np.abs(depth[8:17, 10:23] - 1.95).max() < 1e-3


# ----------------------------------------------------------------------------- agent


def test_forward_into_wall_stops_and_reports_collision(box_world, box_grid):
    agent = Agent(box_world, AgentConfig(), box_grid)
    agent.set_pose(2.5, 0.6, 0.0)
    results = [agent.step("move_forward") for _ in range(12)]
    assert not results[0].collided and results[0].moved == pytest.approx(0.25)
    assert any(r.collided for r in results)
    first = next(i for i, r in enumerate(results) if r.collided)
    assert all(r.collided and r.moved < 1e-9 for r in results[first + 1:])  # pinned at the wall
    assert box_grid.is_free(agent.xy)
    assert agent.xy[0] < 3.95 - agent.config.radius + 1e-6
    assert agent.xy[0] > 3.95 - agent.config.radius - 0.1  # got close before stopping
    assert agent.collisions == len(results) - first


def test_random_walk_never_leaves_free_space(box_world, box_grid):
    rng = np.random.default_rng(4)
    agent = Agent(box_world, AgentConfig(), box_grid)
    agent.reset_random(rng)
    for a in rng.choice(["move_forward", "move_forward", "turn_left", "turn_right"], 300):
        agent.step(str(a))
        assert box_grid.is_free(agent.xy)


def test_turning_by_exact_degrees(box_world, box_grid):
    agent = Agent(box_world, AgentConfig(turn_deg=10.0), box_grid)
    agent.set_pose(2.5, 2.0, 0.3)
    T0 = agent.T_world_camera
    agent.step("turn_left")
    _, rot = pose_error(agent.T_world_camera, T0)
    assert rot == pytest.approx(10.0, abs=1e-9)
    assert agent.yaw == pytest.approx(0.3 + np.radians(10.0))
    for _ in range(35):
        agent.step("turn_left")
    assert pose_error(agent.T_world_camera, T0)[1] < 1e-6  # 36 x 10 deg = a full turn
    agent.step("turn_right")
    assert agent.yaw == pytest.approx(0.3 - np.radians(10.0))
    np.testing.assert_allclose(agent.xy, [2.5, 2.0])  # turning does not translate


def test_tilt_is_clamped(box_world, box_grid):
    agent = Agent(box_world, AgentConfig(tilt_deg=10.0, max_tilt_deg=30.0), box_grid)
    agent.set_pose(2.5, 2.0, 0.0)
    for _ in range(5):
        agent.step("look_up")
    assert agent.pitch == pytest.approx(np.radians(30.0))
    z = agent.T_world_camera[:3, 2]  # optical axis tilted up by 30 deg
    np.testing.assert_allclose(z, [np.cos(np.radians(30)), 0.0, np.sin(np.radians(30))], atol=1e-12)
    for _ in range(8):
        agent.step("look_down")
    assert agent.pitch == pytest.approx(-np.radians(30.0))


@pytest.mark.parametrize("height", [1.0, 0.45])
def test_camera_height_and_frames(box_world, box_grid, height):
    agent = Agent(box_world, AgentConfig(camera_height=height), box_grid)
    agent.set_pose(2.5, 2.0, np.pi / 2)
    T = agent.T_world_camera
    assert T[2, 3] == pytest.approx(box_world.floor_z + height)
    np.testing.assert_allclose(T[:3, 2], [0, 1, 0], atol=1e-12)  # optical z = heading (+y)
    np.testing.assert_allclose(T[:3, 0], [1, 0, 0], atol=1e-12)  # image right = world +x when facing +y
    np.testing.assert_allclose(T[:3, 1], [0, 0, -1], atol=1e-12)  # image down = world down
    B = agent.body_pose
    np.testing.assert_allclose(B[:3, 0], [0, 1, 0], atol=1e-12)  # REP-103 x forward
    np.testing.assert_allclose(B[:3, 2], [0, 0, 1], atol=1e-12)
    assert B[2, 3] == box_world.floor_z
    yaw, pitch = yaw_pitch_from_camera(T)
    assert yaw == pytest.approx(np.pi / 2) and pitch == pytest.approx(0.0, abs=1e-12)


def test_set_pose_validation_and_random_pose(box_world, box_grid):
    agent = Agent(box_world, AgentConfig(), box_grid)
    with pytest.raises(InvalidPoseError, match="not traversable"):
        agent.set_pose(4.0, 0.5, 0.0)
    with pytest.raises(InvalidPoseError, match="NaN"):
        agent.set_pose(np.nan, 0.5, 0.0)
    with pytest.raises(ValueError, match="unknown action"):
        agent.step("jump")
    a = agent.random_free_pose(np.random.default_rng(7), min_clearance=0.3)
    b = agent.random_free_pose(np.random.default_rng(7), min_clearance=0.3)
    assert a == b
    assert box_grid.is_free(np.array(a[:2])) and box_grid.clearance[tuple(box_grid.world_to_cell(a[:2])[0])] >= 0.3
    agent.set_pose(*a)
    assert agent.room_id in (0, 1)
    assert set(ACTIONS) == {"move_forward", "turn_left", "turn_right", "look_up", "look_down"}


def test_agent_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="camera_height"):
        AgentConfig(camera_height=-1.0)
    with pytest.raises(ConfigError, match="turn_deg"):
        AgentConfig(turn_deg=0.0)


def test_quadruped_walks_under_the_desk(box_world, box_grid):
    dog = Agent(box_world, AgentConfig(camera_height=0.45, radius=0.15))  # collision band up to 0.55 m
    assert dog.config.collision_height == pytest.approx(0.55)
    under_desk = [6.8, 0.65]  # desk top at 0.70-0.75 m, legs at the corners
    assert dog.grid.is_free(under_desk)
    assert not box_grid.is_free(under_desk)  # the 1.1 m robot hits the desk top
    dog.set_pose(6.8, 1.6, -np.pi / 2)
    assert not any(dog.step("move_forward").collided for _ in range(3))  # drives in under it
    with pytest.raises(ConfigError, match="body_height"):
        AgentConfig(camera_height=1.0, body_height=0.5)  # a camera above the body
