"""Rigid transforms in the conventions of nuScenes: quaternions are (w, x, y, z), matrices are 4x4
homogeneous and map *from* the named frame *to* the parent frame (``sensor_to_ego``,
``ego_to_global``), as the devkit's ``calibrated_sensor`` and ``ego_pose`` records do."""

from __future__ import annotations

import numpy as np


def quaternion_to_matrix(q) -> np.ndarray:
    """(w, x, y, z) unit quaternion -> (3, 3) rotation matrix."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (w, x, y, z) with w >= 0 (Shepperd's method, stable everywhere)."""
    m = np.asarray(rot, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation by ``yaw`` radians about +z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def yaw_quaternion(yaw: float) -> np.ndarray:
    """(w, x, y, z) of a rotation by ``yaw`` radians about +z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def rigid(rotation: np.ndarray, translation) -> np.ndarray:
    """4x4 transform from a (3, 3) rotation or a (w, x, y, z) quaternion and a translation."""
    rotation = np.asarray(rotation, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = quaternion_to_matrix(rotation) if rotation.shape == (4,) else rotation
    out[:3, 3] = np.asarray(translation, dtype=np.float64)
    return out


def invert(transform: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (exact: transpose of the rotation)."""
    rot, trans = transform[..., :3, :3], transform[..., :3, 3]
    out = np.zeros_like(transform)
    rot_t = np.swapaxes(rot, -1, -2)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rot_t, trans)
    out[..., 3, 3] = 1.0
    return out


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (N, 3) points."""
    return points @ transform[:3, :3].T + transform[:3, 3]
