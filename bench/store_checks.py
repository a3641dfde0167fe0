"""What verifying row checksums costs a reader: raw zarr reads (what the stages' readers did before
rows had checksums) against ``RowStore``'s verified reads, on row stores shaped like nuScenes'
(random data of the real sizes), interleaved in one process so machine load hits both alike.

- teacher cache: one camera image per read, (64, 56, 104) float16 (64-channel PCA at 224x416,
  stride 4), one chunk per image;
- correspondences: a ragged row of 30000 pairings (point int32, uvd float32 (n, 3)) in chunks of
  32768 of a 6 x 35840 capacity, and its counts, read as ``correspondences.read`` does.

A verified read costs one more small chunk per row and store (the row's ``check``, kept for the
next read of that row) and a CRC-32 of the bytes read.

    .venv/bin/python bench/store_checks.py [--rows 16] [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.store.rowstore import ArraySpec, RowStore  # noqa: E402
from pipeline.store.stores import StoreMeta, code_version, utc_now  # noqa: E402

HASH = "ab" * 32


def _meta() -> StoreMeta:
    return StoreMeta(
        fingerprint="f" * 64, stage="bench", version=1, source="bench", params={}, inputs={}, created=utc_now(),
        code_version=code_version(), rows_total=0, rows_done=0, complete=False,
    )


def _store(root: Path, name: str, specs: dict[str, ArraySpec], rows: int, make) -> RowStore:
    store = RowStore.open_or_create(str(root / name), _meta(), specs)
    store.assign([f"token-{i}" for i in range(rows)])
    for row in range(rows):
        store.write(row, make(np.random.default_rng(row)), HASH)
    return RowStore.open(store.path)


def _teacher(rng) -> dict[str, np.ndarray]:
    return {"features": rng.normal(size=(6, 64, 56, 104)).astype(np.float16)}


def _pairs(rng, n: int = 30000) -> dict[str, np.ndarray]:
    per_camera = np.full(6, n // 6, dtype=np.int32)
    return {
        "point": rng.integers(0, 35000, n).astype(np.int32),
        "uvd": rng.uniform(0, 900, (n, 3)).astype(np.float32),
        "counts": np.array([34000, *per_camera], dtype=np.int32),
    }


def _raw_pairs(store: RowStore, row: int):
    counts = store.array("counts")[row]
    total = int(counts[1:].sum())
    return store.array("point")[row, :total], store.array("uvd")[row, :total]


def _checked_pairs(store: RowStore, row: int):
    counts = store.read("counts", row)
    total = int(counts[1:].sum())
    return store.read("point", row, total), store.read("uvd", row, total)


def _ab(raw, checked, rows: int, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """ms per call of each, alternating which goes first."""
    a, b = [], []
    for rep in range(repeats):
        for row in range(rows):
            order = ((raw, a), (checked, b)) if (rep + row) % 2 else ((checked, b), (raw, a))
            for f, out in order:
                start = time.perf_counter()
                f(row)
                out.append(time.perf_counter() - start)
    return np.array(a) * 1e3, np.array(b) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        teacher = _store(root, "teacher.zarr", {"features": ArraySpec((6, 64, 56, 104), "float16", chunk=(1, 64, 56, 104))}, args.rows, _teacher)
        pairs = _store(
            root,
            "pairs.zarr",
            {"point": ArraySpec((6 * 35840,), "int32", chunk=(32768,)), "uvd": ArraySpec((6 * 35840, 3), "float32", chunk=(32768, 3)), "counts": ArraySpec((7,), "int32")},
            args.rows,
            _pairs,
        )
        cases = {
            "teacher cache, one camera image (0.75 MB)": (
                lambda r: teacher.array("features")[r, r % 6],
                lambda r: teacher.read_entry("features", r, r % 6),
            ),
            "teacher cache, the six images of a row": (
                lambda r: [teacher.array("features")[r, c] for c in range(6)],
                lambda r: [teacher.read_entry("features", r, c) for c in range(6)],
            ),
            "correspondences row (30000 pairings)": (lambda r: _raw_pairs(pairs, r), lambda r: _checked_pairs(pairs, r)),
        }
        print("| read | raw ms (median / min) | verified ms (median / min) | overhead of the medians |")
        print("|---|---|---|---|")
        for label, (raw, checked) in cases.items():
            a, b = _ab(raw, checked, args.rows, args.repeats)
            overhead = f"{np.median(b) - np.median(a):+.2f} ms ({100 * (np.median(b) / np.median(a) - 1):+.0f} %)"
            print(f"| {label} | {np.median(a):.2f} / {a.min():.2f} | {np.median(b):.2f} / {b.min():.2f} | {overhead} |")
    image = np.random.default_rng(0).normal(size=(64, 56, 104)).astype(np.float16)
    start = time.perf_counter()
    for _ in range(200):
        zlib.crc32(image)
    seconds = (time.perf_counter() - start) / 200
    print(f"\nCRC-32 of one image: {seconds * 1e3:.2f} ms ({image.nbytes / seconds / 1e9:.1f} GB/s)")


if __name__ == "__main__":
    main()
