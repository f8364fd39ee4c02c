import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spatial_memory.errors import InvalidPoseError
from spatial_memory.geometry import (
    interpolate_pose,
    invert_pose,
    look_at,
    make_pose,
    pose_error,
    pose_from_tq,
    quat_xyzw_from_rotation,
    rotation_from_quat_xyzw,
    tq_from_pose,
    validate_pose,
    yaw_pitch_to_rotation,
)


def test_quaternion_roundtrip_is_xyzw():
    R = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    q = quat_xyzw_from_rotation(R)
    assert np.allclose(q, [0, 0, np.sqrt(0.5), np.sqrt(0.5)])
    assert np.allclose(rotation_from_quat_xyzw(q), R)
    T = pose_from_tq([1, 2, 3], q)
    t, q2 = tq_from_pose(T)
    assert np.allclose(t, [1, 2, 3]) and np.allclose(q2, q)
    with pytest.raises(InvalidPoseError):
        rotation_from_quat_xyzw([0, 0, 0, 0])


def test_invert_and_error():
    T = make_pose(Rotation.from_rotvec([0.1, -0.2, 0.3]).as_matrix(), [1, -2, 0.5])
    assert np.allclose(T @ invert_pose(T), np.eye(4))
    dt, dr = pose_error(T, T)
    assert dt == pytest.approx(0) and dr == pytest.approx(0, abs=1e-6)
    T2 = T.copy()
    T2[:3, 3] += [0.03, 0.04, 0]
    assert pose_error(T2, T)[0] == pytest.approx(0.05)


def test_interpolate_midpoint():
    T0 = np.eye(4)
    T1 = make_pose(Rotation.from_euler("z", 40, degrees=True).as_matrix(), [2, 0, 0])
    Tm = interpolate_pose(T0, T1, 0.5)
    assert np.allclose(Tm[:3, 3], [1, 0, 0])
    assert pose_error(Tm, T0)[1] == pytest.approx(20.0)


def test_optical_frame_conventions():
    # Heading along +x (yaw 0): optical z (forward) = world +x, optical y (down) = world -z.
    R = yaw_pitch_to_rotation(0.0)
    assert np.allclose(R[:, 2], [1, 0, 0]) and np.allclose(R[:, 1], [0, 0, -1]) and np.allclose(R[:, 0], [0, -1, 0])
    # Positive pitch looks up.
    assert yaw_pitch_to_rotation(0.0, np.radians(20))[2, 2] > 0
    # look_at agrees with yaw/pitch for a level camera.
    T = look_at([0, 0, 1], [0, 5, 1])
    assert np.allclose(T[:3, :3], yaw_pitch_to_rotation(np.pi / 2), atol=1e-9)


def test_validate_pose_errors():
    with pytest.raises(InvalidPoseError, match="4x4"):
        validate_pose(np.eye(3))
    R = np.diag([1.0, 1.0, -1.0])
    with pytest.raises(InvalidPoseError, match="reflection"):
        validate_pose(make_pose(R, [0, 0, 0]))
