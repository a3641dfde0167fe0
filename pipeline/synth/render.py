"""Render one LiDAR sweep or one camera image of a scene at a timestamp.

Both go through the same world, ego pose and ray caster, so a LiDAR point projected into a camera
(with the ego poses at both timestamps) lands on the surface the camera rendered there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.geometry import invert, rigid, yaw_matrix
from pipeline.synth import appearance, layout, sensors
from pipeline.synth.raycast import GROUND, MISS, cast, materialize, surface
from pipeline.synth.world import Scene, World

SKY_LABEL = 255


def ego_to_global(scene: Scene, t_us: int) -> np.ndarray:
    """4x4 pose of the ego vehicle at an absolute timestamp (microseconds)."""
    x, y, yaw = scene.ego_pose((t_us - scene.start_time_us) * 1e-6)
    return rigid(yaw_matrix(yaw), [x, y, 0.0])


@dataclass
class LidarSweep:
    points: np.ndarray  # (N, 5) float32 in the LiDAR frame: x, y, z, intensity, ring
    label: np.ndarray  # (N,) uint8 lidarseg class
    instance: np.ndarray  # (N,) int64 object uid, 0 for stuff
    material: np.ndarray  # (N,) int16 ``appearance.Material`` of the surface hit (GROUND for the ground)
    world: np.ndarray  # (N, 3) float64 hit points in the world frame


@dataclass
class CameraImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray  # (H, W) uint8 lidarseg class of the surface seen, SKY_LABEL for sky
    instance: np.ndarray  # (H, W) int64 object uid, 0 for stuff and sky
    unoccluded: dict[int, int]  # uid -> pixels the object would cover with nothing in front


def _labels(prims, prim: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class, instance) of hits ``prim`` (primitive index or GROUND) at ``points``."""
    obj = prim >= 0
    label = np.empty(prim.shape, dtype=np.uint8)
    ground = ~obj
    label[ground] = layout.ground_class(points[ground, 0], points[ground, 1])
    label[obj] = prims.label[prim[obj]]
    instance = np.zeros(prim.shape, dtype=np.int64)
    instance[obj] = prims.instance[prim[obj]]
    return label, instance


def render_lidar(
    world: World, scene: Scene, t_us: int, lidar_to_ego: np.ndarray, *, azimuth_steps: int | None = None, elevations_deg: np.ndarray = sensors.LIDAR_ELEVATIONS_DEG
) -> LidarSweep:
    """One sweep of a spinning LiDAR: the preset's azimuth steps and the HDL-32E's beams unless
    given (the SemanticKITTI export casts a 64-beam sensor through the same code)."""
    steps = azimuth_steps or world.preset.lidar_azimuth_steps
    lidar_to_world = ego_to_global(scene, t_us) @ lidar_to_ego
    origin, rot = lidar_to_world[:3, 3], lidar_to_world[:3, :3]
    t_s = (t_us - scene.start_time_us) * 1e-6
    prims = materialize(world.objects_near(scene, t_s, origin[:2], sensors.LIDAR_MAX_RANGE_M + 2))
    local_dirs = sensors.lidar_rays(steps, elevations_deg)  # (beams, A, 3)
    dirs = local_dirs @ rot.T
    hits = cast(origin, dirs, prims, sensors.lidar_regions(prims, invert(lidar_to_world), steps))
    # Spin order: azimuth-major, beams within each firing.
    t, prim, local_dirs, dirs = hits.t.T, hits.prim.T, local_dirs.transpose(1, 0, 2), dirs.transpose(1, 0, 2)
    ring = np.broadcast_to(np.arange(len(elevations_deg), dtype=np.float64), t.shape)
    keep = (prim != MISS) & (t >= sensors.LIDAR_MIN_RANGE_M) & (t <= sensors.LIDAR_MAX_RANGE_M)
    t, prim, ring, local_dirs, dirs = t[keep], prim[keep], ring[keep], local_dirs[keep], dirs[keep]
    world_pts = origin + t[:, None] * dirs
    label, instance = _labels(prims, prim, world_pts)
    normals, _ = surface(prims, prim, world_pts)
    reflect = np.empty(len(t))
    ground = prim == GROUND
    reflect[ground] = appearance.ground_albedo(world_pts[ground], world.seed)[1]
    reflect[~ground] = appearance.REFLECTIVITY[prims.material[prim[~ground]]]
    cos_inc = np.einsum("ij,ij->i", normals, dirs)
    noise = appearance.jitter(len(t), world.seed + t_us % 1_000_003)
    intensity = appearance.lidar_intensity(reflect, cos_inc, noise)
    points = np.concatenate([t[:, None] * local_dirs, intensity[:, None], ring[:, None]], axis=1)
    material = np.full(len(t), appearance.Material.GROUND, dtype=np.int16)
    material[~ground] = prims.material[prim[~ground]]
    return LidarSweep(points.astype(np.float32), label, instance, material, world_pts)


def render_camera(
    world: World, scene: Scene, t_us: int, cam_to_ego: np.ndarray, intrinsic: np.ndarray, noise_seed: int
) -> CameraImage:
    width, height = world.preset.image_width, world.preset.image_height
    cam_to_world = ego_to_global(scene, t_us) @ cam_to_ego
    origin, rot = cam_to_world[:3, 3], cam_to_world[:3, :3]
    t_s = (t_us - scene.start_time_us) * 1e-6
    prims = materialize(world.objects_near(scene, t_s, origin[:2], sensors.CAMERA_RANGE_M))
    dirs = sensors.camera_rays(intrinsic, width, height) @ rot.T
    regions = sensors.camera_regions(prims, invert(cam_to_world), intrinsic, width, height)
    hits = cast(origin, dirs, prims, regions)

    dirs = dirs.reshape(-1, 3)
    prim_all = hits.prim.ravel()
    seen = np.flatnonzero(prim_all != MISS)
    prim, d, t = prim_all[seen], dirs[seen], hits.t.ravel()[seen]
    points = origin + t[:, None] * d
    label = np.full(len(prim_all), SKY_LABEL, dtype=np.uint8)
    instance = np.zeros(len(prim_all), dtype=np.int64)
    label[seen], instance[seen] = _labels(prims, prim, points)

    normals, local = surface(prims, prim, points)
    normals[np.einsum("ij,ij->i", normals, d) > 0] *= -1  # light the side facing the camera
    ground = prim == GROUND
    obj = ~ground
    albedo = np.empty((len(prim), 3), dtype=np.float32)
    albedo[ground] = appearance.ground_albedo(points[ground], world.seed)[0]
    idx = prim[obj]
    albedo[obj] = appearance.object_albedo(prims.material[idx], prims.tint[idx], local[obj], points[obj], world.seed)
    rgb = np.empty((len(prim_all), 3), dtype=np.float32)
    missed = prim_all == MISS
    rgb[missed] = appearance.sky(dirs[missed])
    rgb[seen] = appearance.shade(albedo, normals, t * np.sqrt(np.einsum("ij,ij->i", d, d)))
    rgb = rgb * 255 + np.random.default_rng(noise_seed).standard_normal(rgb.shape, dtype=np.float32) * 1.5
    rgb8 = np.clip(np.round(rgb), 0, 255).astype(np.uint8).reshape(height, width, 3)
    return CameraImage(rgb8, label.reshape(height, width), instance.reshape(height, width), hits.unoccluded)
