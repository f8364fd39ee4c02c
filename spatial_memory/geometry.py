"""SE(3) pose helpers on plain 4x4 numpy matrices.

Convention (see docs/conventions.md): ``T_a_b`` maps points expressed in frame ``b`` into
frame ``a``: ``p_a = T_a_b @ p_b``. Camera poses are ``T_world_camera`` with the camera in
the OpenCV optical frame (x right, y down, z forward). Quaternions are ``[x, y, z, w]``
(ROS / scipy order) and unit-norm.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from .errors import InvalidPoseError

ORTHONORMAL_TOL = 1e-4

# Rotation taking a z-up REP-103 body frame (x forward, y left, z up) to the OpenCV optical
# frame (x right, y down, z forward): p_body = R_BODY_OPTICAL @ p_optical.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def validate_pose(T: np.ndarray, name: str = "pose", tol: float = ORTHONORMAL_TOL) -> np.ndarray:
    """Check that ``T`` is a finite rigid 4x4 transform and return it as float64.

    Raises:
        InvalidPoseError: wrong shape, NaN/inf, non-orthonormal rotation, det != +1,
            or a bottom row other than ``[0, 0, 0, 1]``.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise InvalidPoseError(f"{name}: expected a 4x4 matrix, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise InvalidPoseError(f"{name}: contains NaN or inf")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=tol):
        raise InvalidPoseError(f"{name}: bottom row is {T[3].tolist()}, expected [0, 0, 0, 1]")
    R = T[:3, :3]
    err = np.abs(R.T @ R - np.eye(3)).max()
    if err > tol:
        raise InvalidPoseError(f"{name}: rotation is not orthonormal (max |R^T R - I| = {err:.2e})")
    if np.linalg.det(R) < 0:
        raise InvalidPoseError(f"{name}: rotation is a reflection (det < 0)")
    return T


def make_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Build a 4x4 transform from a 3x3 rotation ``R`` and a translation ``t: [3]``."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform, computed as ``[R^T, -R^T t]`` (exact, no matrix inverse)."""
    R, t = T[:3, :3], T[:3, 3]
    return make_pose(R.T, -R.T @ t)


def quat_xyzw_from_rotation(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``[x, y, z, w]`` (w >= 0) of a rotation matrix."""
    q = Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()
    return q if q[3] >= 0 else -q


def rotation_from_quat_xyzw(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a quaternion ``[x, y, z, w]``; rejects NaN or a zero quaternion."""
    q = np.asarray(q, dtype=np.float64).reshape(4)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise InvalidPoseError(f"quaternion {q.tolist()} is NaN or zero")
    return Rotation.from_quat(q / n).as_matrix()


def pose_from_tq(t: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """4x4 transform from translation ``[3]`` and quaternion ``[x, y, z, w]``."""
    t = np.asarray(t, dtype=np.float64).reshape(3)
    if not np.all(np.isfinite(t)):
        raise InvalidPoseError(f"translation {t.tolist()} contains NaN or inf")
    return make_pose(rotation_from_quat_xyzw(q_xyzw), t)


def tq_from_pose(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a transform into translation ``[3]`` and quaternion ``[x, y, z, w]``."""
    return np.array(T[:3, 3], dtype=np.float64), quat_xyzw_from_rotation(T[:3, :3])


def interpolate_pose(T0: np.ndarray, T1: np.ndarray, alpha: float) -> np.ndarray:
    """Interpolate between two poses: linear in translation, slerp in rotation. ``alpha`` in [0, 1]."""
    rots = Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]]))
    R = Slerp([0.0, 1.0], rots)([float(alpha)]).as_matrix()[0]
    t = (1.0 - alpha) * T0[:3, 3] + alpha * T1[:3, 3]
    return make_pose(R, t)


def pose_error(T_est: np.ndarray, T_ref: np.ndarray) -> tuple[float, float]:
    """Translation error (metres) and rotation error (degrees) between two poses."""
    dt = float(np.linalg.norm(T_est[:3, 3] - T_ref[:3, 3]))
    # Rotation-vector magnitude is accurate near zero, unlike arccos of the trace.
    R = T_est[:3, :3].T @ T_ref[:3, :3]
    return dt, float(np.degrees(Rotation.from_matrix(R).magnitude()))


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``T`` to ``points: [N, 3]`` and return ``[N, 3]``."""
    points = np.asarray(points)
    return points @ T[:3, :3].T + T[:3, 3]


def yaw_pitch_to_rotation(yaw: float, pitch: float = 0.0) -> np.ndarray:
    """World-from-optical rotation of a camera on a z-up body with heading ``yaw`` (radians,
    counter-clockwise about +z from +x) tilted by ``pitch`` (radians, positive looks up)."""
    R_world_body = Rotation.from_euler("ZY", [yaw, -pitch]).as_matrix()
    return R_world_body @ R_BODY_OPTICAL


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """``T_world_camera`` (OpenCV optical) of a camera at ``eye`` looking at ``target``."""
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(x) < 1e-9:  # looking straight along up: pick any perpendicular x
        x = np.cross(z, [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_pose(np.stack([x, y, z], axis=1), eye)
