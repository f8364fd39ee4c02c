"""Habitat adapter: the frame conversions (no habitat needed) and, where installed, real rendering."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sim.agent import camera_pose
from sim.habitat_adapter import (
    R_ZUP_FROM_YUP,
    HabitatFrameSource,
    habitat_intrinsics,
    habitat_to_opencv_pose,
    opencv_to_habitat_pose,
    semantic_id_to_label,
)
from spatial_memory.errors import ConfigError, InvalidPoseError
from spatial_memory.geometry import pose_error, validate_pose
from spatial_memory.types import CameraIntrinsics, project_points

IDENTITY_XYZW = np.array([0.0, 0.0, 0.0, 1.0])


def test_world_axes_mapping():
    assert np.linalg.det(R_ZUP_FROM_YUP) == pytest.approx(1.0)
    T = habitat_to_opencv_pose([1.0, 2.0, 3.0], IDENTITY_XYZW)
    np.testing.assert_allclose(T[:3, 3], [1.0, -3.0, 2.0])  # habitat up (+y) is our +z


def test_unrotated_habitat_camera_looks_along_minus_z_and_is_upright():
    T = habitat_to_opencv_pose([0.0, 0.0, 0.0], IDENTITY_XYZW)
    fwd_habitat = np.array([0.0, 0.0, -1.0])
    np.testing.assert_allclose(T[:3, 2], R_ZUP_FROM_YUP @ fwd_habitat, atol=1e-12)  # optical axis
    np.testing.assert_allclose(T[:3, 1], [0.0, 0.0, -1.0], atol=1e-12)  # image down = world down
    np.testing.assert_allclose(T[:3, 0], [1.0, 0.0, 0.0], atol=1e-12)  # image right = habitat +x


def test_habitat_yaw_turn_is_our_yaw_turn():
    # habitat's turn_left rotates about +y (up) by +angle; ours turns about +z by +angle
    q = Rotation.from_euler("y", 30.0, degrees=True).as_quat()
    T0 = habitat_to_opencv_pose([0, 0, 0], IDENTITY_XYZW)
    T1 = habitat_to_opencv_pose([0, 0, 0], q)
    yaw0 = np.arctan2(T0[1, 2], T0[0, 2])
    yaw1 = np.arctan2(T1[1, 2], T1[0, 2])
    assert np.degrees(yaw1 - yaw0) == pytest.approx(30.0)


def test_round_trip_on_random_poses():
    rng = np.random.default_rng(0)
    for _ in range(50):
        T = camera_pose(rng.uniform(-5, 5, 2), rng.uniform(-np.pi, np.pi), rng.uniform(-0.5, 0.5), rng.uniform(0.3, 1.5))
        p, q = opencv_to_habitat_pose(T)
        assert q[3] >= 0
        T2 = habitat_to_opencv_pose(p, q)
        validate_pose(T2)
        dt, dr = pose_error(T, T2)
        assert dt < 1e-9 and dr < 1e-6


def test_projection_agrees_with_opengl_camera_model():
    """A world point seen by habitat's GL camera lands on the same pixel in our OpenCV model."""
    rng = np.random.default_rng(1)
    W, H, hfov = 64, 48, 80.0
    K = habitat_intrinsics(W, H, hfov)
    pos = np.array([0.5, 1.2, -0.3])
    q = Rotation.from_euler("yx", [25.0, -10.0], degrees=True).as_quat()
    R_hab_gl = Rotation.from_quat(q).as_matrix()
    # points in front of the GL camera (negative z), expressed in habitat world
    p_gl = np.column_stack([rng.uniform(-1, 1, 20), rng.uniform(-0.7, 0.7, 20), -rng.uniform(1, 5, 20)])
    p_hab = p_gl @ R_hab_gl.T + pos
    f = 0.5 * W / np.tan(np.radians(hfov) / 2)
    # GL pinhole with y up and pixel rows counted downwards from the top
    u_gl = (W - 1) / 2 + f * p_gl[:, 0] / -p_gl[:, 2]
    v_gl = (H - 1) / 2 - f * p_gl[:, 1] / -p_gl[:, 2]
    T = habitat_to_opencv_pose(pos, q)
    uv, z = project_points(p_hab @ R_ZUP_FROM_YUP.T, K, T)
    np.testing.assert_allclose(uv[:, 0], u_gl, atol=1e-9)
    np.testing.assert_allclose(uv[:, 1], v_gl, atol=1e-9)
    np.testing.assert_allclose(z, -p_gl[:, 2], atol=1e-12)  # habitat z-depth = our depth


def test_intrinsics_and_bad_inputs():
    assert habitat_intrinsics(640, 480, 90.0) == CameraIntrinsics.from_fov(640, 480, 90.0)
    assert habitat_intrinsics(640, 480, 90.0).fx == pytest.approx(320.0)
    with pytest.raises(ConfigError):
        habitat_intrinsics(640, 480, 180.0)
    with pytest.raises(InvalidPoseError):
        habitat_to_opencv_pose([np.nan, 0, 0], IDENTITY_XYZW)
    with pytest.raises(InvalidPoseError):
        opencv_to_habitat_pose(np.diag([1.0, 1.0, -1.0, 1.0]))  # reflection


def test_semantic_id_to_label_reads_ids_and_categories():
    cat = lambda name: SimpleNamespace(name=lambda: name)  # noqa: E731  (habitat's category.name() is a method)
    objs = [
        SimpleNamespace(id="0_3_12", category=cat("chair")),  # old releases: id suffix
        SimpleNamespace(id="obj", semantic_id=40, category=cat("sofa")),  # new releases: semantic_id
        SimpleNamespace(id="0_1_7", category=None),  # unlabelled
        None,
        SimpleNamespace(id="0_1_8", category=cat("")),  # empty name
    ]
    assert semantic_id_to_label(objs) == {12: "chair", 40: "sofa"}


def test_source_argument_validation():
    with pytest.raises(ConfigError, match="exactly one"):
        HabitatFrameSource("scene.glb")
    with pytest.raises(ConfigError, match="exactly one"):
        HabitatFrameSource("scene.glb", poses=[np.eye(4)], actions=["turn_left"])
    with pytest.raises(ConfigError, match="unknown habitat actions"):
        HabitatFrameSource("scene.glb", actions=["fly"])
    src = HabitatFrameSource("data/apt.glb", actions=["turn_left"] * 3, width=80, height=60)
    assert len(src) == 3 and src.intrinsics.width == 80 and src.name == "habitat:apt"


def test_iterating_without_habitat_explains_how_to_install():
    try:
        import habitat_sim  # noqa: F401
    except ImportError:
        src = HabitatFrameSource("scene.glb", actions=["turn_left"])
        with pytest.raises(ImportError, match="conda install habitat-sim"):
            next(iter(src))
    else:
        pytest.skip("habitat-sim is installed; the missing-package path does not apply")


@pytest.mark.habitat
def test_habitat_renders_frames_with_consistent_poses():
    pytest.importorskip(
        "habitat_sim", reason="habitat-sim is not installed on this machine (conda-only package; needs EGL)"
    )
    scene = os.environ.get("EMEM_HABITAT_SCENE")
    if not scene or not os.path.exists(scene):
        pytest.skip("set EMEM_HABITAT_SCENE to a habitat scene (.glb) to run the Habitat rendering test")
    acts = ["move_forward", "turn_left", "turn_left", "look_up"]
    src = HabitatFrameSource(scene, actions=acts, width=64, height=48, gpu_device_id=int(os.environ.get("EMEM_GPU", 0)))
    frames = list(src)
    assert len(frames) == len(acts)
    for f in frames:
        f.validate()
        assert (f.depth > 0).any()
    # turn_left by 10 deg shows up as a 10 deg rotation between frames 1 and 2
    assert pose_error(frames[1].T_world_camera, frames[2].T_world_camera)[1] == pytest.approx(10.0, abs=0.1)
    # re-render those poses in pose mode: same camera poses back
    again = list(HabitatFrameSource(scene, poses=[f.T_world_camera for f in frames], width=64, height=48))
    for a, b in zip(frames, again):
        dt, dr = pose_error(a.T_world_camera, b.T_world_camera)
        assert dt < 1e-4 and dr < 1e-3
