"""Preprocessing benchmark: our stages against the way the reference code does the same work,
measured in the same run, with the ratios printed.

- Superpixels: every algorithm of the stage side by side (the reference: scikit-image's SLIC at full
  resolution, as SLidR and Seal run it), on the demo source's images and on 1600x900 images rendered
  from the ``mini`` preset's world: images/s per core (images / CPU seconds of one thread; CPU time
  is little affected by other processes on the machine), boundary recall (2 px) and achievable
  segmentation accuracy against the synthetic ground truth (one segment per class and object
  instance), segment count and its spread. ``--tune`` prints the grid the catalog's opencv_slic
  parameters were chosen from, on other images (the mini world of seed 1).
- Correspondences: the reference data loader recomputes them for every example in every epoch
  (devkit records, pyquaternion, a deep copy of the cloud per camera); ours reads them from the store.
- ``hvd prep``: ``prep all`` on the complete source (nothing to compute), and the time until
  ``prep superpixels`` stores its first keyframe (Prefect and Dask start-up included).

Run after ``make demo`` (it needs the demo dataset and its stores, all complete):

    .venv/bin/python bench/prep.py [--source synth-demo] [--images 48] [--mini-images 8] [--examples 40]
    .venv/bin/python bench/prep.py --tune
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.stages import Catalog, correspondences, superpixels  # noqa: E402
from pipeline.stages.index import ensure_index  # noqa: E402
from pipeline.store.rowstore import RowStore  # noqa: E402
from pipeline.store.stores import read_meta  # noqa: E402

# --- superpixels ----------------------------------------------------------------------------------

# The variants compared: (label, catalog params). The first is the reference; the catalog's default
# is marked in the table. Each runs in this process on one thread, so its CPU time is its cost per core.
VARIANTS = [
    ("skimage_slic, full resolution (reference)", {"algorithm": "skimage_slic"}),
    ("skimage_slic, half resolution", {"algorithm": "skimage_slic", "skimage_slic": {"working_scale": 0.5}}),
    ("opencv_slico, full resolution", {"algorithm": "opencv_slico"}),
    ("opencv_slic, full resolution", {"algorithm": "opencv_slic", "opencv_slic": {"working_scale": 1.0}}),
    ("opencv_slic, quarter resolution", {"algorithm": "opencv_slic", "opencv_slic": {"working_scale": 0.25}}),
]


def truth_of(label: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """Ground-truth segments of a synthetic image: one per (class, object instance) present, so two
    touching cars of the same class are two segments (dense ids)."""
    pairs = label.astype(np.int64) * (1 << 32) + instance.astype(np.int64)
    return np.unique(pairs, return_inverse=True)[1].reshape(label.shape)


def demo_images(index, rows: list[int], dataroot: Path) -> list[tuple[Path, tuple[int, int], np.ndarray]]:
    """(image path, (H, W), ground truth) of every camera image of ``rows`` of a synthetic source."""
    from PIL import Image

    out = []
    for r in rows:
        record = index.record(r)
        for path, token, hw in zip(record["cam_paths"], record["cam_tokens"], record["image_hw"]):
            label = np.array(Image.open(dataroot / "synth" / "labels" / f"{token}.png"))
            instance = np.array(Image.open(dataroot / "synth" / "instances" / f"{token}.png"))
            out.append((Path(path), tuple(int(v) for v in hw), truth_of(label, instance)))
    return out


def rendered_images(preset_name: str, seed: int, n: int, folder: Path) -> list[tuple[Path, tuple[int, int], np.ndarray]]:
    """``n`` camera images of the synthetic world of ``preset_name`` (``mini``: 1600x900) rendered
    as ``hvd data synth`` does (JPEG, quality 92), with their ground truth, without generating the
    dataset: scenes, cameras and times spread over the world."""
    from PIL import Image

    from pipeline.synth import PRESETS, sensors
    from pipeline.synth.render import render_camera
    from pipeline.synth.world import build_world

    preset = PRESETS[preset_name]
    world = build_world(preset, seed)
    cameras = list(sensors.CAMERA_OFFSETS_MS)
    out = []
    for k in range(n):
        scene = world.scenes[k % len(world.scenes)]
        channel = cameras[(3 * k + seed) % len(cameras)]
        calib = sensors.rig(preset.image_width, preset.image_height, np.random.default_rng([seed, 2, scene.index]))[channel]
        t_us = scene.start_time_us + int((2.0 + 1.7 * k) % (preset.keyframes_per_scene / 2) * 1e6)
        image = render_camera(world, scene, t_us, calib.sensor_to_ego, calib.intrinsic, noise_seed=1000 * seed + k)
        path = folder / f"{preset_name}-{seed}-{k}.jpg"
        Image.fromarray(image.rgb).save(path, format="JPEG", quality=92)
        out.append((path, (preset.image_height, preset.image_width), truth_of(image.label, image.instance)))
    return out


def compare(images, variants: list[tuple[str, dict]]) -> dict[str, dict]:
    """Each variant on every image, the variants interleaved image by image (so load from other
    processes hits them alike): CPU seconds per image (one thread), wall seconds, boundary recall
    (2 px), achievable accuracy and segment count, against each image's ground truth."""
    params = {label: superpixels.SuperpixelParams.model_validate(spec) for label, spec in variants}
    stats = {label: {"cpu": 0.0, "wall": 0.0, "recall": [], "asa": [], "count": []} for label in params}
    for p in params.values():  # warm-up, untimed: library imports, first-call set-up
        superpixels.label_map(images[0][0], p, images[0][1])
    for path, hw, truth in images:
        for label, p in params.items():
            wall, cpu = time.perf_counter(), time.process_time()
            dense, n = superpixels.label_map(path, p, hw)
            stats[label]["cpu"] += time.process_time() - cpu
            stats[label]["wall"] += time.perf_counter() - wall
            full = superpixels.densify(dense, truth.shape)[0]  # judged at the image's own resolution
            stats[label]["recall"].append(superpixels.boundary_recall(full, truth, 2))
            stats[label]["asa"].append(superpixels.achievable_accuracy(full, truth))
            stats[label]["count"].append(n)
    return {
        label: {
            "img_s_core": len(images) / max(s["cpu"], 1e-9),
            "img_s_wall": len(images) / max(s["wall"], 1e-9),
            "recall": float(np.mean(s["recall"])),
            "asa": float(np.mean(s["asa"])),
            "count_mean": float(np.mean(s["count"])),
            "count_std": float(np.std(s["count"])),
        }
        for label, s in stats.items()
    }


def print_comparison(title: str, results: dict[str, dict], default: str | None = None) -> None:
    ref = next(iter(results.values()))
    print(f"\n{title}\n")
    print("| algorithm | images/s per core | vs reference | boundary recall (2 px) | achievable accuracy | quality ≥ reference | segments (mean ± sd) |")
    print("|---|---|---|---|---|---|---|")
    for label, r in results.items():
        ok = r["recall"] >= ref["recall"] and r["asa"] >= ref["asa"]
        mark = " **(catalog default)**" if label == default else ""
        print(
            f"| {label}{mark} | {r['img_s_core']:.2f} | {r['img_s_core'] / ref['img_s_core']:.1f}× | {r['recall']:.3f} "
            f"| {r['asa']:.4f} | {'yes' if ok else 'no'} | {r['count_mean']:.0f} ± {r['count_std']:.0f} |"
        )


def tune(images) -> None:
    """The tuning grid of opencv_slic (on tuning images only, never the evaluation ones): every
    config with its speed and quality against the reference's, so the choice can be checked."""
    grid = [
        ("skimage_slic, full resolution (reference)", {"algorithm": "skimage_slic"}),
    ] + [
        (
            f"opencv_slic n_segments={n} ruler={ruler:g} iterations={it} working_scale={scale:g}",
            {"algorithm": "opencv_slic", "opencv_slic": {"n_segments": n, "ruler": ruler, "iterations": it, "working_scale": scale}},
        )
        for scale in (1.0, 0.5, 0.375, 0.25)
        for n in (120, 150)
        for ruler in (10.0, 20.0)
        for it in (3, 5)
    ]
    print_comparison("opencv_slic tuning grid (tuning images)", compare(images, grid))


def _reference_pairs(nusc, sample_token: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Correspondences recomputed the way the reference data loader does, for one example."""
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import view_points
    from pyquaternion import Quaternion

    sample = nusc.get("sample", sample_token)
    lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    cloud = LidarPointCloud.from_file(os.path.join(nusc.dataroot, lidar["filename"]))
    out = []
    for channel in ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT"):
        pc = copy.deepcopy(cloud)
        cam = nusc.get("sample_data", sample["data"][channel])
        for record, inverse in (
            (nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"]), False),
            (nusc.get("ego_pose", lidar["ego_pose_token"]), False),
            (nusc.get("ego_pose", cam["ego_pose_token"]), True),
            (nusc.get("calibrated_sensor", cam["calibrated_sensor_token"]), True),
        ):
            rot = Quaternion(record["rotation"]).rotation_matrix
            if inverse:
                pc.translate(-np.array(record["translation"]))
                pc.rotate(rot.T)
            else:
                pc.rotate(rot)
                pc.translate(np.array(record["translation"]))
        depth = pc.points[2]
        intrinsic = np.array(nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])["camera_intrinsic"])
        uv = view_points(pc.points[:3], intrinsic, normalize=True)[:2].T
        keep = (depth > 1.0) & (uv[:, 0] > 0) & (uv[:, 0] < cam["width"] - 1) & (uv[:, 1] > 0) & (uv[:, 1] < cam["height"] - 1)
        out.append((np.flatnonzero(keep), np.round(uv[keep][:, ::-1]).astype(np.int64)))
    return out


def bench_correspondences(catalog, source: str, index, rows: list[int]) -> dict:
    from nuscenes.nuscenes import NuScenes

    src = catalog.source(source)
    with contextlib.redirect_stdout(io.StringIO()):
        nusc = NuScenes(version=src.version, dataroot=str(src.dataroot), verbose=False)
    tokens = [index.record(r)["token"] for r in rows]
    _reference_pairs(nusc, tokens[0])  # warm-up, untimed
    start = time.process_time()
    pairs_ref = sum(len(k) for t in tokens for k, _ in _reference_pairs(nusc, t))
    reference_s = time.process_time() - start

    path = catalog.artifact("correspondences", source).path
    meta = read_meta(path)
    if meta is None or not meta.complete:
        raise SystemExit(f"the correspondences store {path} is not complete: run `make demo` (or hvd prep all) first")
    store = RowStore.open(path)
    correspondences.read(store, store.row_of(tokens[0]))  # warm-up, untimed: array metadata, token table
    start = time.process_time()
    pairs_ours = sum(len(c[0]) for t in tokens for c in correspondences.read(store, store.row_of(t))[1])
    ours_s = time.process_time() - start
    zarr_store = RowStore.open(path)  # the same reads through zarr's own machinery (before direct chunk reads)
    zarr_store._files = {name: None for name in [*zarr_store.outputs(), "check"]}
    correspondences.read(zarr_store, zarr_store.row_of(tokens[0]))
    start = time.process_time()
    for t in tokens:
        correspondences.read(zarr_store, zarr_store.row_of(t))
    zarr_s = time.process_time() - start
    return {
        "examples": len(rows),
        "reference_ex_s": len(rows) / reference_s,
        "ours_ex_s": len(rows) / ours_s,
        "zarr_ex_s": len(rows) / zarr_s,
        "pairs_per_example_reference": pairs_ref / len(rows),
        "pairs_per_example_ours": pairs_ours / len(rows),
    }


def _hvd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def bench_noop(catalog, source: str) -> dict:
    """Wall and CPU seconds of ``hvd prep all`` on the complete source (nothing to compute)."""
    import resource
    import subprocess

    def cpu_children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    repo = Path(__file__).resolve().parents[1]
    start, cpu = time.perf_counter(), cpu_children()
    noop = subprocess.run(_hvd("prep", "all", "--catalog", str(catalog.path), "--source", source), cwd=repo, env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True)
    wall, used = time.perf_counter() - start, cpu_children() - cpu
    if noop.returncode != 0 or "nothing to compute" not in noop.stderr:
        raise SystemExit(f"`hvd prep all --source {source}` had work to do or failed: run it first\n{noop.stderr}")
    return {"noop_s": wall, "noop_cpu_s": used, "load": os.getloadavg()[0]}


def bench_first_keyframe(catalog, source: str) -> dict:
    """Wall seconds of ``hvd prep superpixels`` into an empty store root (the source's index copied,
    so only superpixels compute): until its first keyframe is stored, and in all."""
    import shutil
    import subprocess

    import yaml

    from pipeline.stages import Catalog

    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        spec = yaml.safe_load(Path(catalog.path).read_text())
        spec["store_root"] = str(Path(tmp) / "stores")
        for src in spec["sources"].values():
            src["dataroot"] = str((Path(catalog.path).parent / src["dataroot"]).resolve())
        path = Path(tmp) / "catalog.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        index_path = Path(catalog.artifact("index", source).path)
        (Path(tmp) / "stores" / source).mkdir(parents=True)
        shutil.copy(index_path, Path(tmp) / "stores" / source / index_path.name)
        store = Path(Catalog.load(path).artifact("superpixels", source).path)
        start = time.perf_counter()
        command = _hvd("prep", "superpixels", "--catalog", str(path), "--source", source)
        proc = subprocess.Popen(command, cwd=repo, env={**os.environ, "COLUMNS": "200"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        first = None
        while proc.poll() is None and first is None:
            if (store / "done" / "c").is_dir() and any((store / "done" / "c").iterdir()):
                first = time.perf_counter() - start
            time.sleep(0.01)
        err = proc.communicate()[1]
        total = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"`hvd prep superpixels` failed:\n{err}")
    return {"first_keyframe_s": first if first is not None else total, "superpixels_s": total, "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default="data_catalog.yaml")
    parser.add_argument("--source", default="synth-demo")
    parser.add_argument("--images", type=int, default=48, help="demo camera images for the superpixel comparison (multiple of 6)")
    parser.add_argument("--mini-images", type=int, default=8, help="1600x900 images rendered from the mini preset's world (seed 0)")
    parser.add_argument("--examples", type=int, default=40, help="keyframes for the correspondence timing")
    parser.add_argument("--tune", action="store_true", help="print the opencv_slic tuning grid on tuning images (mini world, seed 1) and exit")
    parser.add_argument("--skip", nargs="*", default=[], choices=["superpixels", "correspondences", "noop", "first-keyframe"], help="parts to leave out")
    args = parser.parse_args()

    print(f"# bench/prep.py, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    if args.tune:
        with tempfile.TemporaryDirectory() as tmp:
            tune(rendered_images("mini", 1, args.mini_images, Path(tmp)))
        return

    catalog = Catalog.load(args.catalog)
    index, _ = ensure_index(catalog, args.source)
    rng = np.random.default_rng(0)
    sp_rows = sorted(rng.choice(len(index), size=max(1, args.images // 6), replace=False).tolist())
    ex_rows = sorted(rng.choice(len(index), size=min(args.examples, len(index)), replace=False).tolist())
    hw = tuple(index.record(0)["image_hw"][0])
    print(f"source {args.source}: {len(index)} keyframes, images {hw[1]}x{hw[0]}")
    default = catalog.artifact("superpixels", args.source).params
    variants = [(label, spec) for label, spec in VARIANTS]
    default_label = next(label for label, spec in variants if superpixels.SuperpixelParams.model_validate(spec) == default)

    if "superpixels" not in args.skip:
        print(
            "\nSuperpixels: each algorithm as the stage runs it (decode, resize to its working size, segment, relabel densely), "
            "one thread, images/s per core = images / CPU seconds; quality at the image's own size against the synthetic ground "
            "truth (one segment per class and object instance)."
        )
        demo = demo_images(index, sp_rows, Path(catalog.source(args.source).dataroot))
        print_comparison(f"{args.source}: {len(demo)} images {hw[1]}x{hw[0]}", compare(demo, variants), default_label)
        with tempfile.TemporaryDirectory() as tmp:
            mini = rendered_images("mini", 0, args.mini_images, Path(tmp))
            print_comparison(f"mini preset's world (seed 0): {len(mini)} images 1600x900", compare(mini, variants), default_label)

    if "correspondences" not in args.skip:
        corr = bench_correspondences(catalog, args.source, index, ex_rows)
        print("\nCorrespondences: examples per CPU second of one process, after one untimed example.")
        print("\n| correspondences | examples/s per core | vs reference | pairings per example |\n|---|---|---|---|")
        print(f"| reference: recomputed per example (devkit records, pyquaternion, deep copies) | {corr['reference_ex_s']:.1f} | 1.0× | {corr['pairs_per_example_reference']:.0f} |")
        print(f"| ours: read from the store through zarr (before) | {corr['zarr_ex_s']:.1f} | {corr['zarr_ex_s'] / corr['reference_ex_s']:.1f}× | {corr['pairs_per_example_ours']:.0f} |")
        print(f"| ours: read from the store, chunk files decoded directly (the training read path) | {corr['ours_ex_s']:.1f} | {corr['ours_ex_s'] / corr['reference_ex_s']:.1f}× | {corr['pairs_per_example_ours']:.0f} |")
        print("\n(pairings differ slightly: ours drop points outside the method's range and keep the rounded pixel inside the image)")

    if "noop" not in args.skip or "first-keyframe" not in args.skip:
        print("\n| hvd prep | wall seconds |\n|---|---|")
    if "noop" not in args.skip:
        cmd = bench_noop(catalog, args.source)
        print(f"| `hvd prep all --source {args.source}`, every store complete (nothing to compute) | {cmd['noop_s']:.2f} (CPU {cmd['noop_cpu_s']:.2f} s; load average {cmd['load']:.1f}) |")
    if "first-keyframe" not in args.skip:
        cmd = bench_first_keyframe(catalog, args.source)
        print(f"| `hvd prep superpixels` into an empty store root: first keyframe stored (load average {cmd['load']:.1f}) | {cmd['first_keyframe_s']:.1f} |")
        print(f"| `hvd prep superpixels` into an empty store root: all {len(index)} keyframes | {cmd['superpixels_s']:.1f} |")


if __name__ == "__main__":
    main()
