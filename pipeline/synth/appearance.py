"""Class-dependent appearance: albedo and texture per material, Lambertian shading, sky and fog for
the cameras, and reflectivity for the LiDAR's intensity channel.

Textures are functions of the hit point (world or object coordinates), so a surface looks the same
from every camera and at every time, and the image content carries the class of what is seen.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from pipeline.synth import layout

SUN = np.array([0.35, -0.25, 0.9]) / np.linalg.norm([0.35, -0.25, 0.9])
FOG_RGB = np.array([0.72, 0.76, 0.8])
FOG_DISTANCE_M = 260.0


class Material(IntEnum):
    GROUND = 0  # road / sidewalk / terrain: decided by the street layout
    WALL = 1
    BARK = 2
    FOLIAGE = 3
    METAL = 4
    PAINT = 5
    GLASS = 6
    CARGO = 7
    BUS = 8
    CLOTHES = 9
    SKIN = 10
    BARRIER = 11
    CONE = 12


# LiDAR reflectivity in [0, 1] per material (ground handled separately).
REFLECTIVITY = np.array([0.1, 0.25, 0.15, 0.2, 0.5, 0.35, 0.05, 0.4, 0.35, 0.15, 0.2, 0.65, 0.75])


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic uniform [0, 1) value per integer lattice point (splitmix-style mixing)."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= iy.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        h ^= iz.astype(np.uint64) * np.uint64(0x165667B19E3779F9)
        h ^= np.uint64((seed * 0x27D4EB2F165667C5) & 0xFFFFFFFFFFFFFFFF)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        h ^= h >> np.uint64(33)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


_LATTICE_BITS = 6  # a 64^3 table of lattice values, repeated: the period (64 x scale) is never seen
_LATTICES: dict[int, np.ndarray] = {}


def _lattice(seed: int) -> np.ndarray:
    if seed not in _LATTICES:
        i = np.arange(1 << 3 * _LATTICE_BITS, dtype=np.int64)
        mask = (1 << _LATTICE_BITS) - 1
        _LATTICES[seed] = _hash01(i >> 2 * _LATTICE_BITS, i >> _LATTICE_BITS & mask, i & mask, seed).astype(np.float32)
    return _LATTICES[seed]


def value_noise(coords: np.ndarray, scale_m: float, seed: int) -> np.ndarray:
    """Smooth float32 noise in [0, 1) over (M, D) coordinates (D = 2 or 3), with features about
    ``scale_m`` apart. 2-D noise costs half as much as 3-D."""
    table = _lattice(seed)
    bits, mask = _LATTICE_BITS, (1 << _LATTICE_BITS) - 1
    dims = coords.shape[1]
    q = coords / scale_m
    base = np.floor(q)
    frac = (q - base).astype(np.float32)
    frac = frac * frac * (3 - 2 * frac)
    lo = base.astype(np.int64) & mask
    hi = (lo + 1) & mask
    shifts = (2 * bits, bits, 0)
    out = np.zeros(len(coords), dtype=np.float32)
    for corner in range(1 << dims):
        weight = np.ones(len(coords), dtype=np.float32)
        index = np.zeros(len(coords), dtype=np.int64)
        for axis in range(dims):
            bit = corner >> axis & 1
            weight *= frac[:, axis] if bit else 1 - frac[:, axis]
            index |= (hi[:, axis] if bit else lo[:, axis]) << shifts[axis]
        out += weight * table[index]
    return out


def ground_albedo(points: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, 3) albedo and (M,) reflectivity of the ground: asphalt with lane markings, tiled
    sidewalk with a curb, grass with dirt patches."""
    x, y = points[:, 0], points[:, 1]
    lat = layout.lateral(x, y)
    off = np.abs(lat)
    fine = value_noise(points[:, :2], 0.45, seed + 1)
    coarse = value_noise(points[:, :2], 4.0, seed + 2)
    albedo = np.empty((len(points), 3), dtype=np.float32)
    reflect = np.empty(len(points), dtype=np.float32)

    road = off < layout.ROAD_HALF_M
    albedo[road] = np.array([0.3, 0.3, 0.32]) * (0.8 + 0.25 * fine[road, None] + 0.1 * coarse[road, None])
    reflect[road] = 0.07 + 0.04 * fine[road]
    dashed = (np.abs(off - 3.5) < 0.09) & (np.mod(x, 9.0) < 3.0)
    edge = np.abs(off - 7.0) < 0.09
    centre = (off > 0.08) & (off < 0.22)
    white, yellow = road & (dashed | edge), road & centre
    albedo[white], reflect[white] = 0.88, 0.8
    albedo[yellow], reflect[yellow] = np.array([0.85, 0.7, 0.15]), 0.75

    walk = ~road & (off < layout.SIDEWALK_HALF_M)
    along = np.mod(x, 1.5) < 0.05
    across = np.mod(off, 1.5) < 0.05
    albedo[walk] = np.array([0.63, 0.61, 0.58]) * (0.9 + 0.12 * fine[walk, None])
    albedo[walk & (along | across)] *= 0.75
    curb = walk & (off < layout.ROAD_HALF_M + 0.25)
    albedo[curb] = 0.78
    reflect[walk] = 0.22

    grass = ~(road | walk)
    dirt = coarse[grass, None]
    albedo[grass] = (1 - dirt) * np.array([0.28, 0.46, 0.17]) + dirt * np.array([0.45, 0.37, 0.25])
    albedo[grass] *= 0.75 + 0.45 * fine[grass, None]
    reflect[grass] = 0.12 + 0.06 * fine[grass]
    return albedo, reflect


def object_albedo(
    material: np.ndarray, tint: np.ndarray, local: np.ndarray, points: np.ndarray, seed: int
) -> np.ndarray:
    """(M, 3) albedo of object surfaces. ``local`` is the hit point in its part's frame; z of
    ``points`` (world) is the height above ground."""
    z = points[:, 2]
    # 2-D noise over (position along the ground, height): cheap, and smooth on every face
    surface_uv = np.stack([points[:, 0] + 0.618 * points[:, 1], z], axis=1)
    fine = value_noise(surface_uv, 0.3, seed + 3)
    albedo = tint.astype(np.float32) * (0.9 + 0.2 * fine[:, None])
    m = material

    wall = m == Material.WALL
    u = local[:, 0] + local[:, 1]  # along the facade (one of the two is constant on a face)
    window = wall & (np.mod(u, 3.0) > 0.8) & (np.mod(u, 3.0) < 2.2) & (np.mod(z, 3.2) > 1.0) & (np.mod(z, 3.2) < 2.4)
    albedo[window] = np.array([0.16, 0.2, 0.27]) * (0.8 + 0.4 * fine[window, None])

    albedo[m == Material.BARK] = np.array([0.33, 0.24, 0.15]) * (0.8 + 0.4 * fine[m == Material.BARK, None])
    leaf = m == Material.FOLIAGE
    albedo[leaf] = tint[leaf] * (0.55 + 0.8 * value_noise(surface_uv[leaf], 0.18, seed + 4)[:, None])
    glass = m == Material.GLASS
    albedo[glass] = np.array([0.1, 0.12, 0.16]) + 0.08 * tint[glass]
    cargo = m == Material.CARGO
    albedo[cargo] = 0.45 + 0.5 * tint[cargo]
    bus_window = (m == Material.BUS) & (z > 1.5) & (z < 2.6)
    albedo[bus_window] = np.array([0.1, 0.12, 0.16])
    legs = (m == Material.CLOTHES) & (z < 0.85)
    albedo[legs] *= 0.55
    albedo[m == Material.SKIN] = np.array([0.85, 0.64, 0.5]) * (0.8 + 0.3 * tint[m == Material.SKIN, :1])
    barrier = m == Material.BARRIER
    stripe = np.mod(np.floor(local[:, 0] / 0.5), 2) == 0
    albedo[barrier & stripe] = np.array([0.82, 0.1, 0.08])
    albedo[barrier & ~stripe] = 0.9
    cone = m == Material.CONE
    band = (z > 0.35) & (z < 0.5)
    albedo[cone] = np.where(band[cone, None], 0.92, np.array([1.0, 0.42, 0.05]))
    return np.clip(albedo, 0.0, 1.0)


def shade(albedo: np.ndarray, normals: np.ndarray, distance_m: np.ndarray) -> np.ndarray:
    """Lambertian shading under a fixed sun plus ambient light, with distance fog."""
    lambert = np.clip(normals.astype(np.float32) @ SUN.astype(np.float32), 0.0, None)
    rgb = albedo * (0.42 + 0.58 * lambert)[:, None]
    fog = (1.0 - np.exp(-distance_m / FOG_DISTANCE_M)).astype(np.float32)
    return rgb * (1 - fog[:, None]) + FOG_RGB * fog[:, None]


def sky(directions: np.ndarray) -> np.ndarray:
    """Sky colour by the elevation of the (M, 3) world-frame ray directions."""
    elevation = directions[:, 2] / np.linalg.norm(directions, axis=1)
    t = np.clip(elevation * 2.5, 0.0, 1.0)[:, None]
    return (1 - t) * FOG_RGB + t * np.array([0.35, 0.55, 0.85])


def jitter(n: int, seed: int) -> np.ndarray:
    """n deterministic uniform [0, 1) values (per-return measurement noise)."""
    i = np.arange(n, dtype=np.int64)
    return _hash01(i, i >> 20, np.zeros_like(i), seed)


def lidar_intensity(reflectivity: np.ndarray, cos_incidence: np.ndarray, jitter: np.ndarray) -> np.ndarray:
    """Intensity 0..255 (integers stored as float, as in nuScenes) from reflectivity and angle."""
    value = 255.0 * reflectivity * (0.25 + 0.75 * np.abs(cos_incidence)) * (0.9 + 0.2 * jitter)
    return np.clip(np.round(value), 0, 255)
