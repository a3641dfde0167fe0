"""Teacher-cache benchmark: encoder throughput of the stage, random reads of cached images, and
bytes per image with and without PCA, each measured in one run.

1. Throughput (images/s) of the frozen dilated ResNet-50 at the demo setting (112x208) and the
   nuScenes setting (224x416, output stride 4): float32 eager against the stage's fast path --
   channels-last + float16 autocast on a GPU, channels-last float32 on the CPU (bfloat16 autocast
   is timed too: faster on some CPUs, but less precise than the float16 the cache stores).
2. Random single-image reads from teacher-cache stores with 0, 2 and 4 DataLoader workers (what the
   training stage does): ms per image and MB/s of decoded features.
3. Bytes per image on disk (Blosc-zstd, bitshuffle) at both settings, with and without PCA.

    .venv/bin/python bench/teacher.py [--images 6] [--reads 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.resnet import ResNet50, frozen_teacher  # noqa: E402
from pipeline.store.rowstore import _codecs  # noqa: E402


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def throughput(hw: tuple[int, int], images: int, device: str) -> dict[str, float]:
    model = frozen_teacher(ResNet50(output_stride=4)).to(device)
    x = torch.rand(images, 3, *hw, device=device)
    variants = {"float32 eager": (torch.contiguous_format, None)}
    if device == "cuda":
        variants["channels-last + float16 autocast (stage)"] = (torch.channels_last, torch.float16)
    else:
        variants["channels-last float32 (stage)"] = (torch.channels_last, None)
        variants["bfloat16 autocast"] = (torch.contiguous_format, torch.bfloat16)
    out = {}
    for name, (layout, dtype) in variants.items():
        m = model.to(memory_format=layout)
        xi = x.contiguous(memory_format=layout)
        with torch.inference_mode(), torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            m(xi[:1])  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            m(xi)
            if device == "cuda":
                torch.cuda.synchronize()
        out[name] = images / (time.perf_counter() - start)
    return out


def _features(hw: tuple[int, int], images: int) -> np.ndarray:
    """Real encoder outputs (random weights) of smooth random images: what the store compresses."""
    torch.manual_seed(0)
    model = frozen_teacher(ResNet50(output_stride=4))
    x = torch.nn.functional.interpolate(torch.rand(images, 3, hw[0] // 8, hw[1] // 8), size=hw, mode="bilinear")
    with torch.inference_mode():
        return model(x).numpy()


def _pca(features: np.ndarray, channels: int) -> np.ndarray:
    vectors = features.transpose(0, 2, 3, 1).reshape(-1, features.shape[1])
    mean = vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(vectors[:: max(1, len(vectors) // 4096)] - mean, full_matrices=False)
    return np.einsum("kc,bchw->bkhw", vt[:channels], features - mean[None, :, None, None])


def _store(path: str, images: np.ndarray, copies: int):
    """A teacher-cache-like zarr array: one chunk per image, float16, Blosc-zstd bitshuffle."""
    import zarr

    n, c, h, w = images.shape
    array = zarr.create_array(path, shape=(n * copies, c, h, w), chunks=(1, c, h, w), dtype="float16", compressors=_codecs())
    for i in range(n * copies):
        array[i] = images[i % n].astype(np.float16)
    return array


def _bytes_on_disk(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


class _Reads(torch.utils.data.Dataset):
    def __init__(self, path: str, order: np.ndarray) -> None:
        self.path, self.order, self.array = path, order, None

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> torch.Tensor:
        import zarr

        if self.array is None:  # opened per worker
            self.array = zarr.open_array(self.path, mode="r")
        return torch.from_numpy(self.array[int(self.order[i])].astype(np.float32))


def random_reads(path: str, n_images: int, reads: int, workers: int) -> tuple[float, float]:
    order = np.random.default_rng(0).integers(0, n_images, reads)
    loader = torch.utils.data.DataLoader(_Reads(path, order), batch_size=None, num_workers=workers, shuffle=False)
    start = time.perf_counter()
    decoded = sum(t.numel() * 2 for t in loader)  # float16 bytes decoded
    seconds = time.perf_counter() - start
    return 1000 * seconds / reads, decoded / seconds / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6, help="images per throughput measurement")
    parser.add_argument("--reads", type=int, default=200, help="random image reads per DataLoader setting")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"# bench/teacher.py on {_device_name()}, torch {torch.__version__}\n")

    print("| setting | variant | images/s | vs float32 eager |\n|---|---|---|---|")
    for label, hw in (("demo 112x208", (112, 208)), ("nuScenes 224x416", (224, 416))):
        rates = throughput(hw, args.images, device)
        base = rates["float32 eager"]
        for name, rate in rates.items():
            print(f"| {label} | {name} | {rate:.2f} | {rate / base:.2f} |")

    print("\n| store | channels x grid | raw per image | on disk per image | ratio |\n|---|---|---|---|---|")
    stores = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, hw, copies in (("demo", (112, 208), 8), ("nuScenes", (224, 416), 8)):
            feats = _features(hw, 4)
            for channels in (2048, 128, 64):
                data = feats if channels == 2048 else _pca(feats, channels)
                path = os.path.join(tmp, f"{label}-{channels}.zarr")
                _store(path, data, copies if channels == 2048 else 4 * copies)
                n = len(data) * (copies if channels == 2048 else 4 * copies)
                raw = data[0].size * 2
                disk = _bytes_on_disk(path) / n
                stores[(label, channels)] = (path, n)
                print(f"| {label} | {channels} x {data.shape[2]}x{data.shape[3]} | {raw / 2**20:.2f} MiB | {disk / 2**20:.2f} MiB | {raw / disk:.2f} |")

        print("\n| random reads | DataLoader workers | ms per image | MB/s decoded |\n|---|---|---|---|")
        for key in (("nuScenes", 2048), ("nuScenes", 64), ("demo", 64)):
            path, n = stores[key]
            for workers in (0, 2, 4):
                ms, mbs = random_reads(path, n, args.reads if key[1] != 2048 else args.reads // 4, workers)
                print(f"| {key[0]} {key[1]} ch | {workers} | {ms:.1f} | {mbs:.0f} |")


if __name__ == "__main__":
    main()
