"""How dense are the depth targets? The fraction of teacher-grid cells that get a depth label,
averaged over a source's keyframes and cameras, for K = 1 LiDAR sweep (the paper's setting) and
for K motion-compensated sweeps.

Each keyframe's points come straight from the depth_targets stage's ``compute`` on the source's
index (no store is built per K); the validation view (the whole image resized to the teacher's
input size, no augmentation) is min-pooled onto cells of ``stride`` pixels, as training does.

    .venv/bin/python bench/depth_density.py [--source synth-demo] [--sweeps 1 5 10]
        [--grid 112x208/4 224x416/4] [--keyframes 0 (all)]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_grid(text: str) -> tuple[tuple[int, int], int]:
    """'112x208/4' -> ((112, 208), 4): the teacher's input (H, W) and output stride."""
    size, stride = text.split("/")
    h, w = size.split("x")
    return (int(h), int(w)), int(stride)


def densities(record: dict, points: list[tuple[np.ndarray, np.ndarray]], grids) -> list[float]:
    """Per grid: labelled cells / cells, over the six cameras of one keyframe (validation view)."""
    from pipeline.stages import depth_targets
    from pipeline.train import augment

    out = []
    for out_hw, stride in grids:
        labelled = cells = 0
        for c, (uv, depth) in enumerate(points):
            a = augment.full_image_matrix(tuple(record["image_hw"][c]), out_hw)
            target = depth_targets.min_depth_grid(augment.apply_image_matrix(a, uv.astype(np.float64)), depth, out_hw, stride)
            labelled, cells = labelled + int((target > 0).sum()), cells + target.size
        out.append(labelled / cells)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", default=str(REPO / "data_catalog.yaml"))
    parser.add_argument("--source", default="synth-demo")
    parser.add_argument("--sweeps", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--grid", nargs="+", default=["112x208/4", "224x416/4"], help="teacher input HxW/stride")
    parser.add_argument("--keyframes", type=int, default=0, help="only the first N keyframes (0: all)")
    args = parser.parse_args()

    from pipeline.stages import Catalog, depth_targets
    from pipeline.stages.index import ensure_index

    catalog = Catalog.load(args.catalog)
    index, _ = ensure_index(catalog, args.source)
    rows = range(len(index))[: args.keyframes or None]
    grids = [parse_grid(g) for g in args.grid]
    base = catalog.artifact("depth_targets", args.source).params
    table = {}
    for k in args.sweeps:
        params = type(base).model_validate({**base.model_dump(), "sweeps": k})
        start, per_grid, points_per_image = time.perf_counter(), [], []
        for row in rows:
            record = index.record(row)
            values = depth_targets.compute(record, params)
            per_grid.append(densities(record, depth_targets.cameras(values), grids))
            points_per_image.append(values["counts"].mean())
        mean = np.mean(per_grid, axis=0)
        table[k] = {
            "density": {g: round(float(d), 4) for g, d in zip(args.grid, mean)},
            "points_per_image": round(float(np.mean(points_per_image)), 1),
            "seconds_per_keyframe": round((time.perf_counter() - start) / len(rows), 3),
        }
        print(f"K={k:2d}: " + "  ".join(f"{g}: {d:.4f}" for g, d in zip(args.grid, mean)) + f"  ({table[k]['points_per_image']:.0f} points/image)", flush=True)
    image_hw = index.record(0)["image_hw"][0]
    print(json.dumps({"source": args.source, "keyframes": len(rows), "image_hw": [int(v) for v in image_hw], "sweeps": table}, indent=2))


if __name__ == "__main__":
    main()
