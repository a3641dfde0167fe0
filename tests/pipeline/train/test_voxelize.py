"""Voxelisation: floored 0.1 m voxels, the first point of each voxel as its representative, and the
point -> voxel inverse map."""

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
