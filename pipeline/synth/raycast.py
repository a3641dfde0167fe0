"""Exact ray casting against the ground plane z = 0, yaw-oriented boxes, vertical cylinders and
spheres, in float64, vectorised over the rays a primitive can possibly hit.

Rays form a 2-D grid (camera pixels, or LiDAR beams x azimuths). The caller gives, per primitive,
the part of the grid it may cover (a screen-space or azimuth bound), so the cost grows with what
is visible rather than with (rays x primitives).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.synth.world import BOX, CYLINDER, SPHERE, WorldObject

GROUND, MISS = -1, -2
EPS = 1e-6


@dataclass
class Primitives:
    """Every primitive of the objects in view, in the world frame at one instant."""

    kind: np.ndarray  # (N,) int8: BOX, CYLINDER, SPHERE
    centre: np.ndarray  # (N, 3): box centre / cylinder base centre / sphere centre
    size: np.ndarray  # (N, 3): box half extents / (radius, height, 0) / (radius, 0, 0)
    yaw: np.ndarray  # (N,)
    label: np.ndarray  # (N,) uint8 lidarseg class
    instance: np.ndarray  # (N,) int64 object uid of annotated objects, 0 for stuff
    material: np.ndarray  # (N,) int16
    tint: np.ndarray  # (N, 3)

    def __len__(self) -> int:
        return len(self.kind)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World-axis-aligned (lo, hi) corners, (N, 3) each."""
        c, s = np.abs(np.cos(self.yaw)), np.abs(np.sin(self.yaw))
        half = np.empty_like(self.size)
        box = self.kind == BOX
        half[box, 0] = c[box] * self.size[box, 0] + s[box] * self.size[box, 1]
        half[box, 1] = s[box] * self.size[box, 0] + c[box] * self.size[box, 1]
        half[box, 2] = self.size[box, 2]
        round_ = ~box
        half[round_, 0] = half[round_, 1] = self.size[round_, 0]
        half[round_, 2] = np.where(self.kind[round_] == SPHERE, self.size[round_, 0], 0.0)
        centre = self.centre.copy()
        cyl = self.kind == CYLINDER
        centre[cyl, 2] += self.size[cyl, 1] / 2
        half[cyl, 2] = self.size[cyl, 1] / 2
        return centre - half, centre + half


def materialize(placed: list[tuple[WorldObject, tuple[float, float, float]]]) -> Primitives:
    """World-frame primitives of objects at their given (x, y, yaw) poses."""
    rows = []
    for obj, (x, y, yaw) in placed:
        c, s = np.cos(yaw), np.sin(yaw)
        instance = obj.uid if obj.category is not None else 0
        for p in obj.parts:
            px, py, pz = p.centre
            rows.append((p.kind, x + c * px - s * py, y + s * px + c * py, pz, *p.size, yaw, p.label, instance, int(p.material), *obj.tint))
    arr = np.array(rows, dtype=np.float64).reshape(-1, 14)
    return Primitives(
        kind=arr[:, 0].astype(np.int8),
        centre=arr[:, 1:4],
        size=arr[:, 4:7],
        yaw=arr[:, 7],
        label=arr[:, 8].astype(np.uint8),
        instance=arr[:, 9].astype(np.int64),
        material=arr[:, 10].astype(np.int16),
        tint=arr[:, 11:14],
    )


def _box(origin, dirs, centre, half, yaw) -> np.ndarray:
    """Slab test in the box frame (yaw only), one axis at a time on 1-D arrays."""
    c, s = np.cos(yaw), np.sin(yaw)
    rel = origin - centre
    o = (c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2])
    d = (c * dirs[:, 0] + s * dirs[:, 1], -s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2])
    t_near = np.full(len(dirs), -np.inf)
    t_far = np.full(len(dirs), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            inv = 1.0 / d[axis]
            t1 = (-half[axis] - o[axis]) * inv
            t2 = (half[axis] - o[axis]) * inv
            t_near = np.fmax(t_near, np.fmin(t1, t2))  # fmax/fmin skip the NaN of 0 * inf
            t_far = np.fmin(t_far, np.fmax(t1, t2))
    return np.where((t_near <= t_far) & (t_near > EPS), t_near, np.inf)


def _cylinder(origin, dirs, base, radius, height) -> np.ndarray:
    ox, oy = origin[0] - base[0], origin[1] - base[1]
    a = dirs[:, 0] ** 2 + dirs[:, 1] ** 2
    b = 2 * (ox * dirs[:, 0] + oy * dirs[:, 1])
    c = ox * ox + oy * oy - radius * radius
    disc = b * b - 4 * a * c
    ok = (disc >= 0) & (a > 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(np.where(ok, disc, 0.0))) / (2 * a)
    z = origin[2] + t_side * dirs[:, 2]
    t_side = np.where(ok & (t_side > EPS) & (z >= base[2]) & (z <= base[2] + height), t_side, np.inf)
    top = base[2] + height
    with np.errstate(invalid="ignore", divide="ignore"):
        t_top = (top - origin[2]) / dirs[:, 2]
    px, py = ox + t_top * dirs[:, 0], oy + t_top * dirs[:, 1]
    cap = (origin[2] > top) & (dirs[:, 2] < 0) & (t_top > EPS) & (px * px + py * py <= radius * radius)
    return np.minimum(t_side, np.where(cap, t_top, np.inf))


def _sphere(origin, dirs, centre, radius) -> np.ndarray:
    oc = origin - centre
    a = np.einsum("ij,ij->i", dirs, dirs)
    b = 2 * dirs @ oc
    c = oc @ oc - radius * radius
    disc = b * b - 4 * a * c
    ok = disc >= 0
    t = (-b - np.sqrt(np.where(ok, disc, 0.0))) / (2 * a)
    return np.where(ok & (t > EPS), t, np.inf)


def intersect(prims: Primitives, i: int, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Ray parameter t of the first hit of primitive i by rays origin + t * dirs, inf on a miss."""
    match prims.kind[i]:
        case 0:  # BOX
            return _box(origin, dirs, prims.centre[i], prims.size[i], prims.yaw[i])
        case 1:  # CYLINDER
            return _cylinder(origin, dirs, prims.centre[i], prims.size[i, 0], prims.size[i, 1])
        case _:  # SPHERE
            return _sphere(origin, dirs, prims.centre[i], prims.size[i, 0])


@dataclass
class Hits:
    t: np.ndarray  # (H, W) ray parameter of the first hit, inf where nothing is hit
    prim: np.ndarray  # (H, W) int32: primitive index, GROUND or MISS
    unoccluded: dict[int, int]  # instance uid -> rays it would catch with nothing in front of it


def cast(origin: np.ndarray, dirs: np.ndarray, prims: Primitives, regions) -> Hits:
    """First hits of the ray grid ``dirs`` (H, W, 3) from ``origin``; ``regions`` yields
    (primitive index, row index, column index) with numpy indices of the grid it may cover."""
    with np.errstate(divide="ignore"):
        t = np.where(dirs[..., 2] < 0, -origin[2] / dirs[..., 2], np.inf)
    prim = np.where(np.isfinite(t), GROUND, MISS).astype(np.int32)
    unoccluded: dict[int, int] = {}
    for i, rows, cols in regions:
        sub = dirs[rows, cols]
        ti = intersect(prims, i, origin, sub.reshape(-1, 3)).reshape(sub.shape[:-1])
        inst = int(prims.instance[i])
        if inst:
            unoccluded[inst] = unoccluded.get(inst, 0) + int(np.isfinite(ti).sum())
        closer = ti < t[rows, cols]
        if closer.any():
            t[rows, cols] = np.where(closer, ti, t[rows, cols])
            prim[rows, cols] = np.where(closer, i, prim[rows, cols])
    return Hits(t, prim, unoccluded)


def surface(prims: Primitives, prim: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normals, local) at hit ``points`` (K, 3) of primitives ``prim`` (K,) (GROUND allowed):
    unit normals and the point in its primitive's frame (yaw removed, relative to its centre)."""
    normals = np.zeros_like(points)
    normals[:, 2] = 1.0
    local = points.copy()
    obj = np.flatnonzero(prim >= 0)
    if not len(obj):
        return normals, local
    idx = prim[obj]
    kind, size, yaw = prims.kind[idx], prims.size[idx], prims.yaw[idx]
    rel = points[obj] - prims.centre[idx]
    c, s = np.cos(yaw), np.sin(yaw)
    loc = rel.copy()
    loc[:, 0] = c * rel[:, 0] + s * rel[:, 1]
    loc[:, 1] = -s * rel[:, 0] + c * rel[:, 1]
    n = np.zeros_like(rel)
    box = np.flatnonzero(kind == BOX)
    if len(box):  # the face whose slab the point lies on, rotated back to the world
        face = (np.abs(loc[box]) / np.maximum(size[box], 1e-9)).argmax(axis=1)
        sign = np.sign(loc[box, face])
        nx, ny = np.where(face == 0, sign, 0.0), np.where(face == 1, sign, 0.0)
        n[box, 0] = c[box] * nx - s[box] * ny
        n[box, 1] = s[box] * nx + c[box] * ny
        n[box, 2] = np.where(face == 2, sign, 0.0)
    cyl = np.flatnonzero(kind == CYLINDER)
    if len(cyl):  # radial on the side, up on the cap
        top = np.abs(rel[cyl, 2] - size[cyl, 1]) < 1e-6
        n[cyl, 0] = np.where(top, 0.0, rel[cyl, 0] / size[cyl, 0])
        n[cyl, 1] = np.where(top, 0.0, rel[cyl, 1] / size[cyl, 0])
        n[cyl, 2] = top
    sph = np.flatnonzero(kind == SPHERE)
    if len(sph):
        n[sph] = rel[sph] / size[sph, :1]
    normals[obj] = n
    local[obj] = loc
    return normals, local
