"""The synthetic world written in SemanticKITTI's on-disk format (``hvd data synth --format semantickitti``).

The same world, scenes and ray caster as the nuScenes export (``pipeline.synth.generate``), seen by
KITTI's sensor instead: a 64-beam Velodyne HDL-64E 1.73 m above the ground, x forward, y left, z up,
spinning at 10 Hz. Each synthetic scene becomes one sequence, named by the standard split (the first
trains as 00, the second validates as 08, then 01, 02, ...), with a frame every 0.1 s over the
scene's span. Per sequence: ``velodyne/FFFFFF.bin`` (float32 x, y, z, remission in [0, 1]),
``labels/FFFFFF.label`` (uint32: SemanticKITTI raw id in the lower 16 bits, instance id in the upper
16), ``calib.txt`` (P0-P3 and Tr, velodyne -> rectified camera 0), ``poses.txt`` (camera 0 in the
first frame's camera-0 frame, KITTI odometry's convention) and ``times.txt`` (seconds).

The synthetic classes map to SemanticKITTI's closest raw ids (``raw_label``): buildings and poles,
trunks and crowns, parking strip and road, moving and parked vehicles and people are told apart from
the world's own geometry. No SemanticKITTI class stands for traffic cones: they are written as
other-object (99), which the learning map ignores. The synthetic street has no bicycles,
motorcycles, their riders, rails, other-ground or traffic signs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.classes import LIDARSEG_CLASSES
from pipeline.data.geometry import invert, rigid
from pipeline.errors import HvdError
from pipeline.synth import layout
from pipeline.synth.appearance import Material
from pipeline.synth.generate import _atomic_write, _world, run_tasks
from pipeline.synth.presets import SynthPreset
from pipeline.synth.render import ego_to_global, render_lidar
from pipeline.synth.world import Scene, World

MANIFEST = Path("synth") / "manifest.json"
FORMAT = "hvd-synth-semantickitti"
VERSION = 1  # bumped whenever the written files change for the same (preset, seed)

# Velodyne HDL-64E: 64 beams from +2 deg to -24.33 deg, the upper block 1/3 deg apart, the lower 1/2 deg.
ELEVATIONS_DEG = np.concatenate([2.0 - np.arange(32) / 3.0, -8.0 - 5.0 / 6.0 - 0.5 * np.arange(32)])
LIDAR_HEIGHT_M = 1.73  # KITTI's Velodyne above the ground
SCAN_PERIOD_US = 100_000  # 10 Hz
# Azimuth steps of a revolution per preset (the real sensor gives about 2000 per beam at 10 Hz).
AZIMUTH_STEPS = {"tiny": 256, "demo": 1024, "transfer": 1024}
DEFAULT_AZIMUTH_STEPS = 2048
# The standard split: sequence names in the order synthetic scenes take them, so that two scenes
# already have a training (00) and the validation (08) sequence.
SEQUENCE_ORDER = ("00", "08", "01", "02", "03", "04", "05", "06", "07", "09", "10")
# Camera 0 (x right, y down, z forward) is 0.27 m ahead of and 0.08 m below the Velodyne.
VELO_TO_CAM = rigid(np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]), [0.0, -0.08, -0.27])
FOCAL_PX, CX_PX, CY_PX, BASELINE_M, COLOUR_OFFSET_M = 718.856, 607.1928, 185.2157, 0.54, 0.06

# (synthetic class, material or None for any) -> (raw id when still, raw id when moving)
_RAW: dict[tuple[str, Material | None], tuple[int, int]] = {
    ("flat.driveable_surface", None): (40, 40),  # road; the parking strip is told apart below (44)
    ("flat.sidewalk", None): (48, 48),
    ("flat.terrain", None): (72, 72),
    ("static.manmade", Material.WALL): (50, 50),  # building
    ("static.manmade", Material.METAL): (80, 80),  # pole
    ("static.vegetation", Material.FOLIAGE): (70, 70),  # vegetation (crowns, bushes)
    ("static.vegetation", Material.BARK): (71, 71),  # trunk
    ("vehicle.car", None): (10, 252),
    ("vehicle.truck", None): (18, 258),
    ("vehicle.bus.rigid", None): (13, 257),
    ("human.pedestrian.adult", None): (30, 254),
    ("movable_object.barrier", None): (51, 51),  # fence: SemanticKITTI labels crash barriers so
    ("movable_object.trafficcone", None): (99, 99),  # other-object: no counterpart, ignored
}
PARKING = 44
LANE_EDGE_M = 7.0  # the road's outer lane edge: the parking strip lies between it and the kerb
MOVING = ("vehicle.moving", "pedestrian.moving")


@dataclass(frozen=True)
class Spec:
    """What a preset gives in SemanticKITTI's format."""

    preset: SynthPreset
    sequences: tuple[str, ...]
    frames_per_sequence: int
    azimuth_steps: int

    def identity(self, seed: int) -> dict:
        return {"format": FORMAT, "version": VERSION, "world": self.preset.identity(seed), "sequences": list(self.sequences),
                "frames_per_sequence": self.frames_per_sequence, "azimuth_steps": self.azimuth_steps}


def spec(preset: SynthPreset) -> Spec:
    """A preset's sequences (one per scene, at most the 11 labelled ones) and frames (10 Hz over the
    scene's keyframe span: 5 per nuScenes keyframe interval)."""
    if preset.n_scenes > len(SEQUENCE_ORDER):
        raise HvdError(f"SemanticKITTI has {len(SEQUENCE_ORDER)} labelled sequences (00-10); {preset.n_scenes} scenes do not fit")
    frames = 5 * (preset.keyframes_per_scene - 1) + 1
    return Spec(preset, SEQUENCE_ORDER[: preset.n_scenes], frames, AZIMUTH_STEPS.get(preset.name, DEFAULT_AZIMUTH_STEPS))


def frame_time_us(scene: Scene, frame: int) -> int:
    return scene.start_time_us + frame * SCAN_PERIOD_US


def velo_to_ego() -> np.ndarray:
    return rigid(np.eye(3), [0.0, 0.0, LIDAR_HEIGHT_M])


def velo_to_world(scene: Scene, frame: int) -> np.ndarray:
    return ego_to_global(scene, frame_time_us(scene, frame)) @ velo_to_ego()


def instance_ids(world: World, scene: Scene) -> dict[int, int]:
    """Object uid -> SemanticKITTI instance id (1..) of every annotated object a sequence can see:
    the static ones by uid, then the scene's moving things by uid."""
    static = sorted(o.uid for o in world.static if o.category is not None)
    things = sorted(o.uid for o in scene.things)
    ids = {uid: k + 1 for k, uid in enumerate(static + things)}
    if len(ids) >= 1 << 16:
        raise HvdError(f"{len(ids)} objects do not fit SemanticKITTI's 16-bit instance ids")
    return ids


def raw_label(world: World, label: np.ndarray, material: np.ndarray, instance: np.ndarray, world_xy: np.ndarray) -> np.ndarray:
    """(N,) uint16 SemanticKITTI raw ids of points of synthetic class ``label`` on surfaces of
    ``material`` of object ``instance`` (uid, 0 for stuff) at world ``world_xy``."""
    out = np.zeros(len(label), dtype=np.uint16)
    moving = np.zeros(len(label), dtype=bool)
    for uid in np.unique(instance[instance > 0]):
        if world.object(int(uid)).attribute in MOVING:
            moving[instance == uid] = True
    done = np.zeros(len(label), dtype=bool)
    for (name, mat), (still, moved) in _RAW.items():
        hit = (label == LIDARSEG_CLASSES.index(name)) & (True if mat is None else material == mat)
        out[hit] = np.where(moving[hit], moved, still)
        done |= hit
    if not done.all():
        k = int(np.flatnonzero(~done)[0])
        raise HvdError(f"no SemanticKITTI label for synthetic class {LIDARSEG_CLASSES[label[k]]} on material {Material(material[k]).name}")
    parking = (out == 40) & (np.abs(layout.lateral(world_xy[:, 0], world_xy[:, 1])) >= LANE_EDGE_M)
    out[parking] = PARKING
    return out


# --- writing -----------------------------------------------------------------------------------------


def _seq_dir(out: Path, sequence: str) -> Path:
    return out / "sequences" / sequence


def render_frame(out: Path, preset: SynthPreset, seed: int, scene_idx: int, frame: int, sequence: str, azimuth_steps: int) -> int:
    """Render and write one frame's scan and labels; return its number of points."""
    world = _world(preset, seed)
    scene = world.scenes[scene_idx]
    sweep = render_lidar(world, scene, frame_time_us(scene, frame), velo_to_ego(), azimuth_steps=azimuth_steps, elevations_deg=ELEVATIONS_DEG)
    points = np.concatenate([sweep.points[:, :3], sweep.points[:, 3:4] / np.float32(255.0)], axis=1).astype(np.float32)
    semantic = raw_label(world, sweep.label, sweep.material, sweep.instance, sweep.world[:, :2])
    ids = instance_ids(world, scene)
    uids, inverse = np.unique(sweep.instance, return_inverse=True)
    instance = np.array([ids[int(u)] if u else 0 for u in uids], dtype=np.uint32)[inverse.reshape(-1)]
    labels = semantic.astype(np.uint32) | (instance << np.uint32(16))
    name = f"{frame:06d}"
    # the label file first: a frame counts as written once its scan exists
    _atomic_write(_seq_dir(out, sequence) / "labels" / f"{name}.label", labels.tobytes())
    _atomic_write(_seq_dir(out, sequence) / "velodyne" / f"{name}.bin", points.tobytes())
    return len(points)


def _matrix_line(name: str | None, matrix: np.ndarray) -> str:
    values = " ".join(f"{v:e}" for v in np.asarray(matrix)[:3, :4].ravel())
    return f"{name}: {values}" if name else values


def calib_text() -> str:
    """KITTI odometry's calib.txt: P0-P3 (rectified projections of the four cameras, whose images the
    export does not write) and Tr (velodyne -> camera 0)."""
    lines = []
    for name, offset_m in (("P0", 0.0), ("P1", -BASELINE_M), ("P2", COLOUR_OFFSET_M), ("P3", COLOUR_OFFSET_M - BASELINE_M)):
        p = np.array([[FOCAL_PX, 0.0, CX_PX, FOCAL_PX * offset_m], [0.0, FOCAL_PX, CY_PX, 0.0], [0.0, 0.0, 1.0, 0.0]])
        lines.append(_matrix_line(name, p))
    lines.append(_matrix_line("Tr", VELO_TO_CAM))
    return "\n".join(lines) + "\n"


def poses_text(scene: Scene, n_frames: int) -> str:
    """Camera 0's pose per frame in camera 0's frame at the first frame."""
    cam_to_world = [velo_to_world(scene, f) @ invert(VELO_TO_CAM) for f in range(n_frames)]
    first = invert(cam_to_world[0])
    return "".join(_matrix_line(None, first @ pose) + "\n" for pose in cam_to_world)


def times_text(n_frames: int) -> str:
    return "".join(f"{f * SCAN_PERIOD_US * 1e-6:e}\n" for f in range(n_frames))


def _check_out(out: Path, identity: dict, force: bool) -> bool:
    """True if ``out`` already holds this dataset, complete; refuses other contents (``--force``
    replaces another hvd SemanticKITTI export)."""
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise HvdError(f"{out} holds another kind of synthetic dataset ({manifest.get('format')}); choose another --out")
        if manifest.get("identity") == identity and not force:
            return bool(manifest.get("complete"))
        if not force:
            raise HvdError(f"{out} already holds a different synthetic SemanticKITTI dataset; pass --force to replace it or choose another --out")
        shutil.rmtree(out / "sequences", ignore_errors=True)
        return False
    if out.exists() and any(out.iterdir()):
        raise HvdError(f"{out} is not empty and is not an hvd synthetic dataset; choose an empty or new --out")
    return False


def _manifest(identity: dict, complete: bool, counts: dict | None = None) -> bytes:
    return json.dumps({"format": FORMAT, "identity": identity, "complete": complete, "counts": counts}, indent=1).encode()


def generate(
    out: Path, preset: SynthPreset, seed: int = 0, workers: int = 1, force: bool = False, on_progress: Callable[[int, int], None] | None = None
) -> dict:
    """Write (or finish) the SemanticKITTI export of a preset; returns the manifest. Frames already
    on disk from an interrupted run are kept."""
    out = Path(out)
    s = spec(preset)
    identity = s.identity(seed)
    if _check_out(out, identity, force):
        return {**json.loads((out / MANIFEST).read_text()), "already_complete": True}
    for path in (out / "sequences").rglob(".*.tmp"):
        path.unlink()
    _atomic_write(out / MANIFEST, _manifest(identity, complete=False))
    world = _world(preset, seed)
    tasks = [(i, f, sequence) for i, sequence in enumerate(s.sequences) for f in range(s.frames_per_sequence)]
    todo = [t for t in tasks if not (_seq_dir(out, t[2]) / "velodyne" / f"{t[1]:06d}.bin").exists()]
    done = len(tasks) - len(todo)
    if on_progress:
        on_progress(done, len(tasks))
    args = [(out, preset, seed, i, f, sequence, s.azimuth_steps) for i, f, sequence in todo]
    run_tasks(render_frame, args, workers, done, len(tasks), on_progress)
    for i, sequence in enumerate(s.sequences):
        folder = _seq_dir(out, sequence)
        _atomic_write(folder / "calib.txt", calib_text().encode())
        _atomic_write(folder / "poses.txt", poses_text(world.scenes[i], s.frames_per_sequence).encode())
        _atomic_write(folder / "times.txt", times_text(s.frames_per_sequence).encode())
    counts = {"sequences": len(s.sequences), "frames": len(tasks), "frames_per_sequence": s.frames_per_sequence, "beams": len(ELEVATIONS_DEG), "azimuth_steps": s.azimuth_steps}
    _atomic_write(out / MANIFEST, _manifest(identity, complete=True, counts=counts))
    return json.loads((out / MANIFEST).read_text())
