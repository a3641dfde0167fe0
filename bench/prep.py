"""Preprocessing benchmark on the demo data: our stages against the way the reference code does
the same work, measured in the same run, with the ratios printed.

- Superpixels: the reference runs full-resolution SLIC per image in a ``multiprocessing.Pool`` and
  writes one PNG per image; ours is the stage's ``compute`` (decode, SLIC, relabel) in one process,
  at full and at half working resolution. Throughput is per core. Quality of each against the
  synthetic ground-truth classes: boundary recall (2 px) and achievable segmentation accuracy.
- Correspondences: the reference data loader recomputes them for every example in every epoch
  (devkit records, pyquaternion, a deep copy of the cloud per camera); ours reads them from the store.

Run after ``make demo`` (it needs the demo dataset and its correspondences store):

    .venv/bin/python bench/prep.py [--source synth-demo] [--images 48] [--examples 40] [--pool 2]
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
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data.sensor_data import load_image  # noqa: E402
from pipeline.stages import Catalog, correspondences, superpixels  # noqa: E402
from pipeline.stages.index import ensure_index  # noqa: E402
from pipeline.store.rowstore import RowStore  # noqa: E402
from pipeline.store.stores import read_meta  # noqa: E402

REFERENCE_SLIC = {"n_segments": 150, "compactness": 6, "sigma": 3.0, "start_label": 0, "channel_axis": -1}


def _reference_superpixels(job: tuple[str, str]) -> None:
    """What the reference does per image: full-resolution SLIC, one PNG written per image."""
    from PIL import Image
    from skimage.segmentation import slic

    image_path, out_path = job
    labels = slic(np.asarray(Image.open(image_path)), **REFERENCE_SLIC)
    Image.fromarray(labels.astype(np.uint8)).save(out_path)


def bench_superpixels(index, rows: list[int], pool: int) -> dict:
    paths = [p for r in rows for p in index.record(r)["cam_paths"]]
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(str(p), os.path.join(tmp, f"{i}.png")) for i, p in enumerate(paths)]
        with Pool(pool) as workers:
            workers.map(_reference_superpixels, jobs[:pool])  # warm the workers up
            start = time.perf_counter()
            workers.map(_reference_superpixels, jobs, chunksize=1)
            reference_s = time.perf_counter() - start
    out = {"images": len(paths), "pool": pool, "reference_img_s_core": len(paths) / reference_s / pool}
    full_hw = tuple(index.record(rows[0])["image_hw"][0])
    for name, scale in (("ours_full", 1), ("ours_half", 2)):
        params = superpixels.SuperpixelParams(working_size=(full_hw[0] // scale, full_hw[1] // scale), store_size=full_hw)
        start = time.perf_counter()
        for r in rows:
            superpixels.compute(index.record(r), params)
        out[f"{name}_img_s_core"] = len(paths) / (time.perf_counter() - start)
    return out


def _grid(shape, n: int) -> np.ndarray:
    side = int(np.sqrt(shape[0] * shape[1] / n))
    return (np.arange(shape[0])[:, None] // side) * 1000 + np.arange(shape[1])[None, :] // side


def superpixel_quality(index, rows: list[int], dataroot: Path) -> dict:
    from PIL import Image

    scores: dict[str, list[tuple[float, float]]] = {"full": [], "half": [], "grid": []}
    for r in rows:
        record = index.record(r)
        for path, token in zip(record["cam_paths"], record["cam_tokens"]):
            truth = np.array(Image.open(dataroot / "synth" / "labels" / f"{token}.png"))
            rgb_full = load_image(path)
            h, w = truth.shape
            variants = {
                "full": superpixels.densify(superpixels.segment(rgb_full, superpixels.SuperpixelParams(), w), (h, w))[0],
                "half": superpixels.densify(superpixels.segment(load_image(path, (h // 2, w // 2)), superpixels.SuperpixelParams(), w), (h, w))[0],
                "grid": _grid(truth.shape, 150),
            }
            for name, seg in variants.items():
                scores[name].append((superpixels.boundary_recall(seg, truth, 2), superpixels.achievable_accuracy(seg, truth)))
    return {name: {"boundary_recall": float(np.mean([s[0] for s in v])), "asa": float(np.mean([s[1] for s in v]))} for name, v in scores.items()}


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
    start = time.perf_counter()
    pairs_ref = sum(len(k) for t in tokens for k, _ in _reference_pairs(nusc, t))
    reference_s = time.perf_counter() - start

    path = catalog.artifact("correspondences", source).path
    meta = read_meta(path)
    if meta is None or not meta.complete:
        raise SystemExit(f"the correspondences store {path} is not complete: run `make demo` (or hvd prep all) first")
    store = RowStore.open(path)
    start = time.perf_counter()
    pairs_ours = sum(len(c[0]) for t in tokens for c in correspondences.read(store, store.row_of(t))[1])
    ours_s = time.perf_counter() - start
    return {
        "examples": len(rows),
        "reference_ex_s": len(rows) / reference_s,
        "ours_ex_s": len(rows) / ours_s,
        "pairs_per_example_reference": pairs_ref / len(rows),
        "pairs_per_example_ours": pairs_ours / len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default="data_catalog.yaml")
    parser.add_argument("--source", default="synth-demo")
    parser.add_argument("--images", type=int, default=48, help="camera images for the superpixel timing (multiple of 6)")
    parser.add_argument("--examples", type=int, default=40, help="keyframes for the correspondence timing")
    parser.add_argument("--pool", type=int, default=os.cpu_count() or 1, help="processes of the reference pool")
    args = parser.parse_args()

    catalog = Catalog.load(args.catalog)
    index, _ = ensure_index(catalog, args.source)
    rng = np.random.default_rng(0)
    sp_rows = sorted(rng.choice(len(index), size=max(1, args.images // 6), replace=False).tolist())
    ex_rows = sorted(rng.choice(len(index), size=min(args.examples, len(index)), replace=False).tolist())
    hw = tuple(index.record(0)["image_hw"][0])
    print(f"# bench/prep.py on {args.source} ({len(index)} keyframes, images {hw[1]}x{hw[0]}), {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}\n")

    sp = bench_superpixels(index, sp_rows, args.pool)
    print("| superpixels | images/s per core | vs reference |\n|---|---|---|")
    ref = sp["reference_img_s_core"]
    print(f"| reference: full-res SLIC in a Pool({sp['pool']}), one PNG per image | {ref:.2f} | 1.00 |")
    for name, label in (("ours_full", "ours, full working resolution"), ("ours_half", "ours, half working resolution")):
        print(f"| {label} | {sp[name + '_img_s_core']:.2f} | {sp[name + '_img_s_core'] / ref:.2f} |")

    quality = superpixel_quality(index, sp_rows[:4], Path(catalog.source(args.source).dataroot))
    print("\n| superpixels vs synthetic classes | boundary recall (2 px) | achievable accuracy |\n|---|---|---|")
    for name, label in (("full", "SLIC at full resolution"), ("half", "SLIC at half resolution"), ("grid", "regular grid, same count")):
        print(f"| {label} | {quality[name]['boundary_recall']:.3f} | {quality[name]['asa']:.3f} |")

    corr = bench_correspondences(catalog, args.source, index, ex_rows)
    print("\n| correspondences | examples/s (1 core) | vs reference | pairings per example |\n|---|---|---|---|")
    print(f"| reference: recomputed per example (devkit records, pyquaternion, deep copies) | {corr['reference_ex_s']:.1f} | 1.00 | {corr['pairs_per_example_reference']:.0f} |")
    print(f"| ours: read from the store | {corr['ours_ex_s']:.1f} | {corr['ours_ex_s'] / corr['reference_ex_s']:.1f} | {corr['pairs_per_example_ours']:.0f} |")
    print("\n(pairings differ slightly: ours drop points outside the method's range and keep the rounded pixel inside the image)")


if __name__ == "__main__":
    main()
