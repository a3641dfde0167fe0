"""Voxelisation: floored 0.1 m voxels (Cartesian, or SLidR's cylindrical rho, phi, z), the first
point of each voxel as its representative, the point -> voxel inverse map, and the input feature
intensity / divisor."""

import numpy as np
import pytest

from pipeline.train.voxelize import voxel_coords, voxelize


def test_hand_computed_case():
    xyz = np.array(
        [
            [0.05, 0.05, 0.05],  # voxel (0, 0, 0)
            [0.09, 0.01, 0.00],  # same voxel
            [-0.01, 0.00, 0.00],  # negative x floors to -1, not 0
            [0.15, -0.25, 1.00],  # (1, -3, 10): -2.5 floors to -3
            [0.00, 0.00, 0.00],  # back to (0, 0, 0)
        ]
    )
    v = voxelize(xyz)
    np.testing.assert_array_equal(v.coords, [[-1, 0, 0], [0, 0, 0], [1, -3, 10]])  # sorted by coordinate
    np.testing.assert_array_equal(v.first, [2, 0, 3])
    np.testing.assert_array_equal(v.inverse, [1, 1, 0, 2, 1])
    assert v.coords.dtype == np.int32 and v.first.dtype == np.int64 and v.inverse.dtype == np.int64
    assert len(v) == 3


def test_voxel_size_is_a_parameter():
    v = voxelize(np.array([[0.3, -0.3, 0.0], [0.45, -0.05, 0.49]]), voxel_size_m=0.5)
    np.testing.assert_array_equal(v.coords, [[0, -1, 0]])
    np.testing.assert_array_equal(v.inverse, [0, 0])


@pytest.fixture
def cloud() -> np.ndarray:
    """(2000, 3) float32 points on a coarse grid, so many share a voxel, on both sides of 0."""
    rng = np.random.default_rng(0)
    return (rng.integers(-15, 15, (2000, 3)) * 0.037 + 0.001).astype(np.float32)


def test_invariants(cloud):
    v = voxelize(cloud)
    m = len(v)
    assert m < len(cloud)  # the fixture does have shared voxels
    np.testing.assert_array_equal(v.coords[v.inverse], np.floor(cloud.astype(np.float64) / 0.1))
    np.testing.assert_array_equal(v.inverse[v.first], np.arange(m))
    assert len(np.unique(v.coords, axis=0)) == m
    np.testing.assert_array_equal(np.lexsort(v.coords.T[::-1]), np.arange(m))  # sorted (x, y, z)


def test_first_is_the_first_point_of_each_voxel(cloud):
    v = voxelize(cloud)
    earliest = np.full(len(v), len(cloud))
    np.minimum.at(earliest, v.inverse, np.arange(len(cloud)))
    np.testing.assert_array_equal(v.first, earliest)


def test_deterministic_and_independent_of_point_order(cloud):
    v = voxelize(cloud)
    again = voxelize(cloud)
    for a, b in zip((v.coords, v.first, v.inverse), (again.coords, again.first, again.inverse)):
        np.testing.assert_array_equal(a, b)
    perm = np.random.default_rng(1).permutation(len(cloud))
    shuffled = voxelize(cloud[perm])
    np.testing.assert_array_equal(shuffled.coords, v.coords)
    np.testing.assert_array_equal(shuffled.inverse, v.inverse[perm])


def test_empty_cloud():
    v = voxelize(np.zeros((0, 3)))
    assert v.coords.shape == (0, 3) and v.first.shape == (0,) and v.inverse.shape == (0,)


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        voxelize(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="non-finite.*point 1"):
        voxelize(np.array([[0.0, 0.0, 0.0], [np.nan, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="positive"):
        voxel_coords(np.zeros((1, 3)), voxel_size_m=0.0)


# --- SLidR's cylindrical convention and the input features ----------------------------------------


def test_cylindrical_hand_computed_case():
    """(rho / 0.1, phi in degrees, z / 0.1), each floored, as SLidR hands them to ``sparse_quantize``."""
    xyz = np.array(
        [
            # rho = sqrt(3.05^2 + 0.05^2) = 3.0504 -> 30.50 -> 30; phi = atan2(0.05, 3.05) = 0.939 deg -> 0;
            # z = -0.15 / 0.1 = -1.5 -> -2
            [3.05, 0.05, -0.15],
            [0.0, 0.0, 0.25],  # on the z axis: rho 0, phi = atan2(0, 0) = 0, z 2.5 -> 2
            [-2.0, 0.0, 0.0],  # negative x axis, y = +0: atan2 = +pi -> phi 180
            [-2.0, -0.0, 0.0],  # negative x axis, y = -0: atan2 = -pi -> phi -180
            [-2.0, 1e-6, 0.0],  # just above it: 179.99997 deg -> 179
            [-2.0, -1e-6, 0.0],  # just below it: -179.99997 deg -> -180, with the y = -0 point
            [0.0, 1.0, 0.0],  # phi 90, rho 10
            [0.3, -0.3, 0.05],  # rho 4.24 -> 4, phi -45, z 0.5 -> 0
        ]
    )
    v = voxelize(xyz, voxelization="cylindrical")
    # sorted lexicographically by (rho, phi, z)
    np.testing.assert_array_equal(v.coords, [[0, 0, 2], [4, -45, 0], [10, 90, 0], [20, -180, 0], [20, 179, 0], [20, 180, 0], [30, 0, -2]])
    np.testing.assert_array_equal(v.inverse, [6, 0, 5, 3, 4, 3, 2, 1])
    np.testing.assert_array_equal(v.first, [1, 7, 6, 3, 4, 2, 0])
    assert v.coords.dtype == np.int32 and v.first.dtype == np.int64 and v.inverse.dtype == np.int64
    np.testing.assert_array_equal(voxel_coords(xyz, voxelization="cylindrical")[0], [30, 0, -2])


def test_cylindrical_voxel_size_scales_rho_and_z_not_phi():
    v = voxelize(np.array([[3.05, 0.05, -0.15]]), voxel_size_m=0.5, voxelization="cylindrical")
    np.testing.assert_array_equal(v.coords, [[6, 0, -1]])  # 3.05 / 0.5 = 6.1, 0.94 deg, -0.3


def test_cylindrical_invariants(cloud):
    v = voxelize(cloud, voxelization="cylindrical")
    x, y, z = cloud.astype(np.float64).T
    reference = np.stack([np.floor(np.sqrt(x * x + y * y) / 0.1), np.floor(np.arctan2(y, x) * 180 / np.pi), np.floor(z / 0.1)], axis=1)
    np.testing.assert_array_equal(v.coords[v.inverse], reference)
    np.testing.assert_array_equal(v.inverse[v.first], np.arange(len(v)))
    earliest = np.full(len(v), len(cloud))
    np.minimum.at(earliest, v.inverse, np.arange(len(cloud)))
    np.testing.assert_array_equal(v.first, earliest)
    np.testing.assert_array_equal(np.lexsort(v.coords.T[::-1]), np.arange(len(v)))  # sorted (rho, phi, z)
    assert v.coords[:, 0].min() >= 0 and v.coords[:, 1].min() >= -180 and v.coords[:, 1].max() <= 180
    perm = np.random.default_rng(1).permutation(len(cloud))
    shuffled = voxelize(cloud[perm], voxelization="cylindrical")
    np.testing.assert_array_equal(shuffled.coords, v.coords)
    np.testing.assert_array_equal(shuffled.inverse, v.inverse[perm])


def test_unknown_voxelization_is_refused():
    with pytest.raises(ValueError, match="cartesian.*cylindrical"):
        voxelize(np.zeros((1, 3)), voxelization="spherical")


def test_student_input_features_are_the_first_points_intensity_over_the_divisor():
    from pipeline.train.voxelize import SLIDR_INPUT, InputSettings, student_input

    xyz = np.array([[0.05, 0.05, 0.05], [0.06, 0.06, 0.0], [-2.0, 0.0, 0.0]])  # points 0 and 1 share a voxel either way
    intensity = np.array([51.0, 255.0, 7.0], dtype=np.float32)
    voxels, feats = student_input(xyz, intensity, InputSettings())  # hvd: Cartesian, intensity / 255
    np.testing.assert_array_equal(voxels.coords, [[-20, 0, 0], [0, 0, 0]])
    assert feats.dtype == np.float32 and feats.shape == (2, 1)
    np.testing.assert_allclose(feats[:, 0], [7.0 / 255, 51.0 / 255])
    voxels, feats = student_input(xyz, intensity, SLIDR_INPUT)  # SLidR: cylindrical, raw intensity
    np.testing.assert_array_equal(voxels.coords, [[0, 45, 0], [20, 180, 0]])
    np.testing.assert_array_equal(feats[:, 0], [51.0, 7.0])
    with pytest.raises(ValueError, match=r"intensity must be \(N,\)"):
        student_input(xyz, intensity[:2], InputSettings())
