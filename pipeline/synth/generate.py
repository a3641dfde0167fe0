"""Write a synthetic dataset to disk in the nuScenes layout, in parallel and resumably.

The plan (every sample_data: channel, timestamp, token, file name) is a pure function of
(preset, seed), scene by scene. Each keyframe is one task: render the LiDAR sweeps that lead up to
it, the keyframe itself and its camera images, write the files atomically, then write a record of
what the tables need (object sightings) under ``synth/tasks``. A killed run resumes from those
records; asking for more scenes renders only the new ones. The tables are written last, and
``synth/manifest.json`` says ``complete: true`` only once everything is on disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.data.source import CAMERAS
from pipeline.errors import HvdError
from pipeline.procs import worker_pool
from pipeline.synth import layout, sensors, tables
from pipeline.synth.presets import SynthPreset
from pipeline.synth.render import ego_to_global, render_camera, render_lidar
from pipeline.synth.world import World, build_world

MANIFEST = Path("synth") / "manifest.json"
MARKERS = Path("synth") / "tasks"  # one record per rendered keyframe (its object sightings)
GENERATED = ("samples", "sweeps", "maps", "lidarseg", "synth")  # plus the version folder


@dataclass(frozen=True)
class Plan:
    frames: list[tables.Frame]
    sample_times: dict[tuple[int, int], int]  # (scene, keyframe) -> LiDAR keyframe timestamp
    logs: list[str]  # log name per scene


def log_name(seed: int, scene: int) -> str:
    return f"synth{seed:03d}-2026-01-01-{scene // 60:02d}-{scene % 60:02d}-00+0000"


def make_plan(world: World, tok: tables.Tokens) -> Plan:
    preset = world.preset
    frames, sample_times, logs = [], {}, []
    n_sweeps = sensors.KEYFRAME_EVERY * (preset.keyframes_per_scene - 1) + 1
    for scene in world.scenes:
        log = log_name(world.seed, scene.index)
        logs.append(log)

        def frame(channel, t_us, key, sample, ext):
            folder = "samples" if key else "sweeps"
            name = f"{folder}/{channel}/{log}__{channel}__{t_us}.{ext}"
            return tables.Frame(scene.index, channel, t_us, key, sample, tok("sample_data", scene.index, channel, t_us), name)

        jitter = np.random.default_rng([world.seed, 3, scene.index, 0]).integers(-300, 300, n_sweeps)
        lidar_times = scene.start_time_us + sensors.SWEEP_PERIOD_US * np.arange(n_sweeps) + jitter
        for j, t in enumerate(lidar_times):
            key = j % sensors.KEYFRAME_EVERY == 0
            sample = -(-j // sensors.KEYFRAME_EVERY)  # sweeps belong to the next keyframe
            frames.append(frame(sensors.LIDAR_CHANNEL, int(t), key, sample, "pcd.bin"))
            if key:
                sample_times[(scene.index, sample)] = int(t)
        for c, channel in enumerate(CAMERAS):
            jitter = np.random.default_rng([world.seed, 3, scene.index, 1 + c]).integers(-500, 500, preset.keyframes_per_scene)
            offset = int(sensors.CAMERA_OFFSETS_MS[channel] * 1000)
            key_times = [sample_times[(scene.index, k)] + offset + int(jitter[k]) for k in range(preset.keyframes_per_scene)]
            for k, t in enumerate(key_times):
                frames.append(frame(channel, t, True, k, "jpg"))
                if preset.camera_sweeps and k > 0:
                    for m in range(1, 6):
                        frames.append(frame(channel, key_times[k - 1] + m * sensors.CAMERA_PERIOD_US, False, k, "jpg"))
    return Plan(frames, sample_times, logs)


# --- worker side -------------------------------------------------------------------------------------

_WORLDS: dict[tuple, World] = {}


def _world(preset: SynthPreset, seed: int) -> World:
    key = (preset, seed)
    if key not in _WORLDS:
        _WORLDS.clear()
        _WORLDS[key] = build_world(preset, seed)
    return _WORLDS[key]


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


PARTIAL = re.compile(r"\..+\.\d+\.tmp")  # what _atomic_write leaves when its process is killed mid-write


def _remove_partial_writes(out: Path, version: str) -> None:
    """Delete the temporary files of a killed run (a killed worker dies wherever it is), so the
    finished dataset holds exactly the files of an uninterrupted run."""
    for name in (*GENERATED, version):
        for path in (out / name).rglob(".*.tmp"):
            if PARTIAL.fullmatch(path.name) and path.is_file():
                path.unlink()


def _encode(image, fmt: str, **kw) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def render_task(out: Path, preset: SynthPreset, seed: int, scene_idx: int, sample: int, frames: list[tables.Frame]) -> list[dict]:
    """Render and write every frame of one keyframe task; return the keyframe's object sightings."""
    from PIL import Image

    world = _world(preset, seed)
    scene = world.scenes[scene_idx]
    calib = sensors.rig(preset.image_width, preset.image_height, np.random.default_rng([seed, 2, scene_idx]))
    lidar_counts: dict[int, int] = {}
    visible: dict[int, int] = {}
    unoccluded: dict[int, int] = {}
    for f in frames:
        if f.channel == sensors.LIDAR_CHANNEL:
            sweep = render_lidar(world, scene, f.t_us, calib[f.channel].sensor_to_ego)
            _atomic_write(out / f.filename, sweep.points.tobytes())
            if f.key:
                _atomic_write(out / "lidarseg" / preset.version / f"{f.token}_lidarseg.bin", sweep.label.tobytes())
                uids, counts = np.unique(sweep.instance[sweep.instance > 0], return_counts=True)
                lidar_counts = dict(zip(uids.tolist(), counts.tolist()))
            continue
        c = calib[f.channel]
        noise_seed = int(f.token[:8], 16)
        image = render_camera(world, scene, f.t_us, c.sensor_to_ego, c.intrinsic, noise_seed)
        _atomic_write(out / f.filename, _encode(Image.fromarray(image.rgb), "JPEG", quality=92))
        if f.key:
            _atomic_write(out / "synth" / "labels" / f"{f.token}.png", _encode(Image.fromarray(image.label), "PNG"))
            dense = np.unique(image.instance, return_inverse=True)[1].reshape(image.instance.shape)
            inst = Image.fromarray(dense.astype(np.uint16))  # per-image ids: edges, not identities
            _atomic_write(out / "synth" / "instances" / f"{f.token}.png", _encode(inst, "PNG"))
            uids, counts = np.unique(image.instance[image.instance > 0], return_counts=True)
            for uid, n in zip(uids.tolist(), counts.tolist()):
                visible[uid] = visible.get(uid, 0) + n
            for uid, n in image.unoccluded.items():
                unoccluded[uid] = unoccluded.get(uid, 0) + n
    key_time = next(f.t_us for f in frames if f.key and f.channel == sensors.LIDAR_CHANNEL)
    t_s = (key_time - scene.start_time_us) * 1e-6
    sightings = []
    for uid, n_points in sorted(lidar_counts.items()):
        obj = world.object(uid)
        x, y, yaw = obj.traj.pose(t_s)
        w, l, h = obj.size_wlh
        sightings.append(
            {
                "scene": scene_idx,
                "sample": sample,
                "uid": uid,
                "category": obj.category,
                "attribute": obj.attribute,
                "translation": [x, y, h / 2],
                "size": [w, l, h],
                "yaw": yaw,
                "num_lidar_pts": n_points,
                "visibility": visible.get(uid, 0) / unoccluded[uid] if unoccluded.get(uid) else 0.0,
            }
        )
    _atomic_write(out / MARKERS / f"{scene_idx:04d}-{sample:04d}.json", json.dumps(sightings).encode())
    return sightings


# --- driver ------------------------------------------------------------------------------------------


def _check_out(out: Path, identity: dict, n_scenes: int, force: bool) -> bool:
    """True if ``out`` already holds this exact dataset, complete. Growing it by more scenes is
    allowed (only the new scenes are rendered); anything else that is there is refused, unless
    ``force`` and it is an hvd synthetic dataset, which is then removed."""
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        same = manifest.get("identity") == identity
        if same and not force:
            have = manifest.get("scenes", 0)
            if manifest.get("complete") and have == n_scenes:
                return True
            if manifest.get("complete") and have > n_scenes:
                raise HvdError(f"{out} holds {have} scenes of this dataset; pass --force to regenerate it with {n_scenes}")
            return False
        if not same and not force:
            raise HvdError(
                f"{out} already holds a different synthetic dataset ({manifest.get('identity')}); "
                "pass --force to replace it or choose another --out"
            )
        for name in (*GENERATED, manifest.get("identity", {}).get("version", "")):
            if name and (out / name).exists():
                shutil.rmtree(out / name)
        return False
    if out.exists() and any(out.iterdir()):
        raise HvdError(f"{out} is not empty and is not an hvd synthetic dataset; choose an empty or new --out")
    return False


def _manifest(identity: dict, n_scenes: int, complete: bool, counts: dict | None = None) -> bytes:
    manifest = {"format": "hvd-synth", "identity": identity, "scenes": n_scenes, "complete": complete}
    if counts is not None:
        manifest.update(counts=counts, hvd_version=__version__)
    return json.dumps(manifest, indent=1).encode()


def run_tasks(fn: Callable, tasks: list[tuple], workers: int, done: int, total: int, on_progress: Callable[[int, int], None] | None) -> None:
    """``fn(*task)`` for every task: here, or in a pool of ``workers`` processes that end with this
    one (even killed); ``on_progress(done, total)`` after each, counting on from ``done``."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            fn(*task)
            done += 1
            if on_progress:
                on_progress(done, total)
        return
    with worker_pool(min(workers, len(tasks))) as pool:
        futures = [pool.submit(fn, *task) for task in tasks]
        try:
            for fut in as_completed(futures):
                fut.result()
                done += 1
                if on_progress:
                    on_progress(done, total)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def generate(
    out: Path,
    preset: SynthPreset,
    seed: int = 0,
    workers: int = 1,
    force: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Generate, finish or grow the dataset; returns the manifest."""
    out = Path(out)
    identity = preset.identity(seed)
    if _check_out(out, identity, preset.n_scenes, force):
        return {**json.loads((out / MANIFEST).read_text()), "already_complete": True}
    _remove_partial_writes(out, preset.version)
    _atomic_write(out / MANIFEST, _manifest(identity, preset.n_scenes, complete=False))

    world = build_world(preset, seed)
    tok = tables.Tokens("hvd-synth/" + json.dumps(identity, sort_keys=True))
    plan = make_plan(world, tok)
    tasks: dict[tuple[int, int], list[tables.Frame]] = {}
    for f in plan.frames:
        tasks.setdefault((f.scene, f.sample), []).append(f)
    todo = [key for key in sorted(tasks) if not (out / MARKERS / f"{key[0]:04d}-{key[1]:04d}.json").exists()]
    done = len(tasks) - len(todo)
    if on_progress:
        on_progress(done, len(tasks))
    run_tasks(render_task, [(out, preset, seed, *key, tasks[key]) for key in todo], workers, done, len(tasks), on_progress)
    sightings = []
    for key in sorted(tasks):
        sightings += json.loads((out / MARKERS / f"{key[0]:04d}-{key[1]:04d}.json").read_text())
    counts = write_tables(out, world, tok, plan, sightings)
    _atomic_write(out / MANIFEST, _manifest(identity, preset.n_scenes, complete=True, counts=counts))
    return json.loads((out / MANIFEST).read_text())


def write_tables(out: Path, world: World, tok: tables.Tokens, plan: Plan, sightings: list[dict]) -> dict:
    """Write the 13 tables, lidarseg.json and the map; return record counts."""
    from PIL import Image

    preset = world.preset
    channels = (sensors.LIDAR_CHANNEL, *CAMERAS)
    sample_tokens = {key: tok("sample", *key) for key in plan.sample_times}
    scenes, samples, logs, calibrated, poses = [], [], [], [], []
    for scene in world.scenes:
        n = preset.keyframes_per_scene
        scene_samples = [sample_tokens[(scene.index, k)] for k in range(n)]
        for k in range(n):
            samples.append(
                {
                    "token": scene_samples[k],
                    "timestamp": plan.sample_times[(scene.index, k)],
                    "prev": scene_samples[k - 1] if k else "",
                    "next": scene_samples[k + 1] if k + 1 < n else "",
                    "scene_token": tok("scene", scene.index),
                }
            )
        description = f"Synthetic street, ego at {scene.speed_mps:.1f} m/s (hvd data synth, seed {world.seed})"
        scenes.append(
            {
                "token": tok("scene", scene.index),
                "log_token": tok("log", scene.index),
                "nbr_samples": n,
                "first_sample_token": scene_samples[0],
                "last_sample_token": scene_samples[-1],
                "name": scene.name,
                "description": description,
            }
        )
        logs.append(
            {
                "token": tok("log", scene.index),
                "logfile": plan.logs[scene.index],
                "vehicle": "synth-car",
                "date_captured": "2026-01-01",
                "location": "synth-city",
            }
        )
        calib = sensors.rig(preset.image_width, preset.image_height, np.random.default_rng([world.seed, 2, scene.index]))
        calibrated += tables.calibrated_sensor_records(tok, scene.index, calib)
    for f in plan.frames:
        pose = ego_to_global(world.scenes[f.scene], f.t_us)
        poses.append(tables.pose_record(f.token, f.t_us, pose[0, 3], pose[1, 3], float(np.arctan2(pose[1, 0], pose[0, 0]))))
    instances, annotations = tables.annotation_records(tok, sightings, sample_tokens)
    map_token = tok("map", "synth-city")
    lidarseg = [
        {"token": f.token, "sample_data_token": f.token, "filename": f"lidarseg/{preset.version}/{f.token}_lidarseg.bin"}
        for f in plan.frames
        if f.key and f.channel == sensors.LIDAR_CHANNEL
    ]
    all_tables = {
        "category": tables.category_table(tok),
        "attribute": tables.attribute_table(tok),
        "visibility": tables.visibility_table(),
        "instance": instances,
        "sensor": tables.sensor_table(tok, channels),
        "calibrated_sensor": calibrated,
        "ego_pose": poses,
        "log": logs,
        "scene": scenes,
        "sample": samples,
        "sample_data": tables.sample_data_records(tok, plan.frames, sample_tokens, (preset.image_height, preset.image_width)),
        "sample_annotation": annotations,
        "map": [{"category": "semantic_prior", "token": map_token, "filename": f"maps/{map_token}.png", "log_tokens": [r["token"] for r in logs]}],
        "lidarseg": lidarseg,
    }
    for name, records in all_tables.items():
        _atomic_write(out / preset.version / f"{name}.json", json.dumps(records, indent=0).encode())
    x_max = max(o.traj.pose(0.0)[0] for o in world.static) + 50.0
    mask = tables.map_mask(x_max, 2 * layout.CENTRE_Y_M, layout.centre_y, layout.SIDEWALK_HALF_M)
    _atomic_write(out / "maps" / f"{map_token}.png", _encode(Image.fromarray(mask), "PNG"))
    return {name: len(records) for name, records in all_tables.items()}


def describe(preset: SynthPreset) -> dict:
    """What a preset produces, for --help and progress messages."""
    return {**asdict(preset), "samples": preset.n_scenes * preset.keyframes_per_scene}
