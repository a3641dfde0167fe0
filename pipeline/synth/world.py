"""What the synthetic street contains, and where everything is at any time.

Static content (buildings, trees, bushes, poles, parked vehicles, barriers, cones) is shared by all
scenes; moving traffic and pedestrians belong to one scene. Each object is a few primitive parts
in its own frame (x forward, z up, origin on the ground) plus a trajectory along the road.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.data.classes import LIDARSEG_INDEX
from pipeline.data.splits import synthetic_scene_names
from pipeline.synth import layout
from pipeline.synth.appearance import Material
from pipeline.synth.presets import SynthPreset

BOX, CYLINDER, SPHERE = 0, 1, 2
MANMADE = LIDARSEG_INDEX["static.manmade"]
VEGETATION = LIDARSEG_INDEX["static.vegetation"]
MAX_SPEED_MPS = 10.0


@dataclass(frozen=True)
class Part:
    """A primitive in its object's frame. Box: ``centre``, half extents ``size``.
    Vertical cylinder: ``centre`` = centre of its base, ``size`` = (radius, height, 0).
    Sphere: ``centre``, ``size`` = (radius, 0, 0)."""

    kind: int
    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    material: Material
    label: int


@dataclass(frozen=True)
class Trajectory:
    """Constant speed along the road: x(t) = x0 + speed * t; ``facing`` is added to the road yaw."""

    x0: float
    lateral_m: float
    speed_mps: float = 0.0
    facing: float = 0.0

    def pose(self, t_s: float) -> tuple[float, float, float]:
        x, y, yaw = layout.place(self.x0 + self.speed_mps * t_s, self.lateral_m)
        return x, y, yaw + self.facing


@dataclass(frozen=True)
class WorldObject:
    uid: int
    parts: tuple[Part, ...]
    traj: Trajectory
    tint: tuple[float, float, float]
    radius_m: float  # bounding radius around the origin, for culling
    category: str | None = None  # nuScenes category of annotated objects; None for "stuff"
    attribute: str | None = None
    size_wlh: tuple[float, float, float] | None = None  # annotation box (width, length, height)


@dataclass(frozen=True)
class Scene:
    index: int
    name: str
    start_x_m: float
    speed_mps: float
    start_time_us: int
    things: tuple[WorldObject, ...]  # moving vehicles and pedestrians of this scene

    def ego_pose(self, t_s: float) -> tuple[float, float, float]:
        """(x, y, yaw) of the ego vehicle ``t_s`` seconds after the scene starts."""
        return layout.place(self.start_x_m + self.speed_mps * t_s, layout.EGO_LANE_M)


@dataclass
class World:
    seed: int
    preset: SynthPreset
    static: list[WorldObject]
    scenes: list[Scene]
    _static_xy: np.ndarray = field(init=False, repr=False)
    _static_r: np.ndarray = field(init=False, repr=False)
    _by_uid: dict[int, WorldObject] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._static_xy = np.array([o.traj.pose(0.0)[:2] for o in self.static]).reshape(-1, 2)
        self._static_r = np.array([o.radius_m for o in self.static])
        self._by_uid = {o.uid: o for o in self.static}
        self._by_uid.update({o.uid: o for s in self.scenes for o in s.things})

    def object(self, uid: int) -> WorldObject:
        return self._by_uid[uid]

    def objects_near(self, scene: Scene, t_s: float, xy: np.ndarray, range_m: float) -> list[tuple[WorldObject, tuple]]:
        """Objects (with their pose at ``t_s``) that can intersect a sphere of ``range_m`` around xy."""
        dist = np.hypot(*(self._static_xy - xy).T) - self._static_r
        out = [(self.static[i], self.static[i].traj.pose(t_s)) for i in np.flatnonzero(dist < range_m)]
        for thing in scene.things:
            pose = thing.traj.pose(t_s)
            if np.hypot(pose[0] - xy[0], pose[1] - xy[1]) - thing.radius_m < range_m:
                out.append((thing, pose))
        return out


# --- object builders -------------------------------------------------------------------------------


def _obj(uid, parts, traj, tint, **kw) -> WorldObject:
    radius = max(np.hypot(p.centre[0], p.centre[1]) + np.linalg.norm(p.size[:2]) for p in parts)
    return WorldObject(uid, tuple(parts), traj, tuple(float(c) for c in tint), float(radius), **kw)


def _car(w, l, h, label, tint_material=Material.PAINT):
    low, belt = 0.15, 0.62 * h
    return [
        Part(BOX, (0.0, 0.0, (low + belt) / 2), (l / 2, w / 2, (belt - low) / 2), tint_material, label),
        Part(BOX, (-0.08 * l, 0.0, (belt + h) / 2), (0.27 * l, 0.45 * w, (h - belt) / 2), Material.GLASS, label),
    ]


def _truck(w, l, h, label):
    cab = 0.24 * l
    return [
        Part(BOX, (l / 2 - cab / 2, 0.0, (0.3 + 0.85 * h) / 2), (cab / 2, w / 2, (0.85 * h - 0.3) / 2), Material.PAINT, label),
        Part(BOX, (-cab / 2 - 0.02 * l, 0.0, (0.45 + h) / 2), ((l - cab) / 2 - 0.02 * l, w / 2, (h - 0.45) / 2), Material.CARGO, label),
        Part(BOX, (0.0, 0.0, 0.375), (l / 2, 0.4 * w, 0.075), Material.METAL, label),
    ]


def _bus(w, l, h, label):
    return [Part(BOX, (0.0, 0.0, (0.3 + h) / 2), (l / 2, w / 2, (h - 0.3) / 2), Material.BUS, label)]


def _vehicle_shape(rng, allow_bus=False):
    """(category, (w, l, h), parts, tint) of a random car, truck or bus."""
    roll = rng.random()
    if allow_bus and roll < 0.08:
        category, (w, l, h) = "vehicle.bus.rigid", (2.55, rng.uniform(10.5, 12.0), rng.uniform(3.0, 3.3))
        parts = _bus(w, l, h, LIDARSEG_INDEX[category])
        tint = rng.choice([[0.85, 0.2, 0.15], [0.9, 0.75, 0.1], [0.2, 0.4, 0.8]])
    elif roll < 0.2:
        category, (w, l, h) = "vehicle.truck", (rng.uniform(2.3, 2.55), rng.uniform(6.5, 8.5), rng.uniform(2.8, 3.5))
        parts = _truck(w, l, h, LIDARSEG_INDEX[category])
        tint = rng.uniform(0.3, 0.95, 3)
    else:
        category, (w, l, h) = "vehicle.car", (rng.uniform(1.75, 1.95), rng.uniform(4.2, 4.9), rng.uniform(1.4, 1.65))
        parts = _car(w, l, h, LIDARSEG_INDEX[category])
        palette = [[0.8, 0.1, 0.1], [0.1, 0.2, 0.6], [0.85, 0.85, 0.85], [0.1, 0.1, 0.1], [0.5, 0.5, 0.55], [0.1, 0.45, 0.2]]
        tint = np.clip(np.asarray(palette[rng.integers(len(palette))]) + rng.normal(0, 0.05, 3), 0.03, 1.0)
    return category, (w, l, h), parts, tint


def _vehicle(uid, shape, traj, attribute) -> WorldObject:
    category, wlh, parts, tint = shape
    return _obj(uid, parts, traj, tint, category=category, attribute=attribute, size_wlh=wlh)


def _pedestrian(rng, uid, traj, attribute):
    label = LIDARSEG_INDEX["human.pedestrian.adult"]
    parts = [
        Part(CYLINDER, (0.0, 0.0, 0.0), (0.2, 1.45, 0.0), Material.CLOTHES, label),
        Part(SPHERE, (0.0, 0.0, 1.58), (0.12, 0.0, 0.0), Material.SKIN, label),
    ]
    tint = rng.uniform(0.05, 0.7, 3)
    return _obj(uid, parts, traj, tint, category="human.pedestrian.adult", attribute=attribute, size_wlh=(0.6, 0.6, 1.72))


# --- world generation --------------------------------------------------------------------------------


class _Ids:
    """Object uids: static objects of road segment i start at 1 + i * 100_000, moving things of
    scene i at 10**9 + i * 100_000, so adding scenes never renumbers existing objects."""

    def __init__(self, start: int) -> None:
        self.next = start

    def __call__(self) -> int:
        self.next += 1
        return self.next - 1


def _static_side(rng, side: int, x_lo: float, x_hi: float, uid: _Ids) -> list[WorldObject]:
    out: list[WorldObject] = []
    x = x_lo
    while x < x_hi:  # buildings, each inside the segment so segments never overlap
        length = rng.uniform(12, 32)
        if x + length > x_hi:
            break
        if rng.random() < 0.15:
            x += rng.uniform(6, 15)
            continue
        depth, height, setback = rng.uniform(10, 22), rng.uniform(6, 24), rng.uniform(0, 3)
        lat = side * (layout.BUILDING_MIN_LATERAL_M + setback + depth / 2)
        part = Part(BOX, (0.0, 0.0, height / 2), (length / 2, depth / 2, height / 2), Material.WALL, MANMADE)
        tint = np.array([[0.75, 0.68, 0.55], [0.62, 0.3, 0.22], [0.6, 0.6, 0.62], [0.85, 0.82, 0.74]])[rng.integers(4)]
        out.append(_obj(uid(), [part], Trajectory(x + length / 2, lat), tint * rng.uniform(0.85, 1.1)))
        x += length + rng.uniform(0.5, 4)
    x = x_lo + rng.uniform(0, 10)
    while x < x_hi:  # trees
        trunk_h, crown_r = rng.uniform(2.2, 3.5), rng.uniform(1.3, 2.4)
        parts = [
            Part(CYLINDER, (0.0, 0.0, 0.0), (rng.uniform(0.15, 0.25), trunk_h, 0.0), Material.BARK, VEGETATION),
            Part(SPHERE, (0.0, 0.0, trunk_h + 0.6 * crown_r), (crown_r, 0.0, 0.0), Material.FOLIAGE, VEGETATION),
        ]
        tint = np.array([0.25, 0.55, 0.2]) * rng.uniform(0.8, 1.15, 3)
        out.append(_obj(uid(), parts, Trajectory(x, side * rng.uniform(14.4, 16.0)), tint))
        x += rng.uniform(7, 16)
    for x in rng.uniform(x_lo, x_hi, int((x_hi - x_lo) / 12)):  # bushes
        r = rng.uniform(0.5, 0.9)
        part = Part(SPHERE, (0.0, 0.0, 0.25 * r), (r, 0.0, 0.0), Material.FOLIAGE, VEGETATION)
        tint = np.array([0.3, 0.5, 0.18]) * rng.uniform(0.8, 1.15, 3)
        out.append(_obj(uid(), [part], Trajectory(float(x), side * rng.uniform(13.7, 16.5)), tint))
    x = x_lo + rng.uniform(0, 20)
    while x < x_hi:  # poles
        part = Part(CYLINDER, (0.0, 0.0, 0.0), (0.12, rng.uniform(6, 8), 0.0), Material.METAL, MANMADE)
        out.append(_obj(uid(), [part], Trajectory(x, side * layout.POLE_LATERAL_M), (0.5, 0.5, 0.52)))
        x += rng.uniform(22, 38)
    out += _parking_strip(rng, side, x_lo, x_hi, uid)
    return out


def _parking_strip(rng, side: int, x_lo: float, x_hi: float, uid: _Ids) -> list[WorldObject]:
    """Parked vehicles, with gaps and the odd construction zone of barriers and cones."""
    out: list[WorldObject] = []
    facing = 0.0 if side < 0 else np.pi  # parked in the direction of traffic on that side
    x = x_lo
    while x < x_hi - 14.0:  # leave room for a construction zone or a vehicle
        roll = rng.random()
        if roll < 0.1:
            n_barriers = int(rng.integers(2, 5))
            for i in range(n_barriers):
                part = Part(BOX, (0.0, 0.0, 0.5), (1.0, 0.2, 0.5), Material.BARRIER, LIDARSEG_INDEX["movable_object.barrier"])
                traj = Trajectory(x + 1.0 + 2.1 * i, side * 8.6, facing=facing)
                out.append(_obj(uid(), [part], traj, (0.8, 0.1, 0.1), category="movable_object.barrier", size_wlh=(0.4, 2.0, 1.0)))
            for i in range(int(rng.integers(3, 6))):
                part = Part(CYLINDER, (0.0, 0.0, 0.0), (0.17, 0.7, 0.0), Material.CONE, LIDARSEG_INDEX["movable_object.trafficcone"])
                traj = Trajectory(x + 0.5 + 2.5 * i, side * 7.35)
                out.append(_obj(uid(), [part], traj, (1.0, 0.45, 0.05), category="movable_object.trafficcone", size_wlh=(0.35, 0.35, 0.7)))
            x += max(2.1 * n_barriers, 12.0) + rng.uniform(2, 5)
        elif roll < 0.4:
            x += rng.uniform(3, 12)
        else:
            shape = _vehicle_shape(rng)
            length = shape[1][1]
            if x + length > x_hi:
                break
            traj = Trajectory(x + length / 2, side * layout.PARKING_M, facing=facing)
            out.append(_vehicle(uid(), shape, traj, "vehicle.parked"))
            x += length + rng.uniform(0.8, 3.0)
    return out


def _scene_things(rng, x_start: float, span_m: float, uid: _Ids, ego_speed: float) -> list[WorldObject]:
    """Moving traffic (constant speed per lane, so vehicles never run into each other) and pedestrians."""
    out: list[WorldObject] = []
    lanes = [(-5.25, rng.uniform(5, 12), 0.0), (1.75, -rng.uniform(6, 12), np.pi), (5.25, -rng.uniform(6, 12), np.pi)]
    for lat, speed, facing in lanes:
        t_end = span_m / max(ego_speed, 1.0)
        lo, hi = x_start - 90 - max(0.0, speed) * t_end, x_start + span_m + 110 - min(0.0, speed) * t_end
        x = lo + rng.uniform(0, 20)
        while x < hi:
            shape = _vehicle_shape(rng, allow_bus=True)
            out.append(_vehicle(uid(), shape, Trajectory(x, lat, speed, facing), "vehicle.moving"))
            x += shape[1][1] + rng.uniform(10, 45)
    if rng.random() < 0.5:  # a lead vehicle in the ego lane, at the ego's speed
        traj = Trajectory(x_start + rng.uniform(14, 30), layout.EGO_LANE_M, ego_speed)
        out.append(_vehicle(uid(), _vehicle_shape(rng), traj, "vehicle.moving"))
    for _ in range(int(rng.integers(8, 20))):
        side = 1 if rng.random() < 0.5 else -1
        walking = rng.random() < 0.7
        speed = rng.uniform(0.8, 1.6) * (1 if rng.random() < 0.5 else -1) if walking else 0.0
        facing = (0.0 if speed >= 0 else np.pi) if walking else rng.uniform(-np.pi, np.pi)
        traj = Trajectory(rng.uniform(x_start - 40, x_start + span_m + 60), side * rng.uniform(10.3, 12.6), speed, facing)
        out.append(_pedestrian(rng, uid(), traj, "pedestrian.moving" if walking else "pedestrian.standing"))
    return out


def build_world(preset: SynthPreset, seed: int) -> World:
    """The whole world for (preset, seed): identical on every call, in every process.

    Static content is generated per road segment (one per scene, plus one beyond the last), each
    from its own random stream, so a world with more scenes extends a smaller one unchanged."""
    scene_span = preset.keyframes_per_scene * 0.5 * MAX_SPEED_MPS
    static: list[WorldObject] = []
    for segment in range(preset.n_scenes + 1):
        rng = np.random.default_rng([seed, 0, segment])
        lo = layout.WORLD_START_X_M - 150 + segment * layout.SCENE_SPACING_M
        hi = lo + layout.SCENE_SPACING_M
        uid = _Ids(1 + segment * 100_000)
        static += _static_side(rng, -1, lo, hi, uid) + _static_side(rng, +1, lo, hi, uid)
    scenes = []
    names = synthetic_scene_names(preset.version, preset.n_scenes)  # the devkit's own split lists
    for i in range(preset.n_scenes):
        srng = np.random.default_rng([seed, 1, i])
        speed = float(srng.uniform(5.0, MAX_SPEED_MPS))
        x_start = layout.WORLD_START_X_M + i * layout.SCENE_SPACING_M + float(srng.uniform(0, 20))
        start_us = 1_767_225_600_000_000 + i * 3_600_000_000 + int(srng.integers(0, 1_000_000))
        things = _scene_things(srng, x_start, scene_span, _Ids(10**9 + i * 100_000), speed)
        scenes.append(Scene(i, names[i], x_start, speed, start_us, tuple(things)))
    return World(seed, preset, static, scenes)
