"""BEV-pooling memory benchmark: peak memory and wall time of one BEV-branch forward + backward
(``bev_pool`` with loss = bev.square().sum()) at the nuScenes shapes -- 6 images, D = 118 depth
bins, 56 x 104 feature cells, 64 context channels, batch 1 -- for our chunked ``bev_pool`` and
the materialising ``bev_pool_reference``, each in a fresh subprocess, in the same run.

Memory: on CUDA ``torch.cuda.max_memory_allocated`` above what the inputs hold; on the CPU the
peak resident set (VmHWM, which is ``ru_maxrss`` without the parent's share; see
``_peak_bytes_cpu``) above the process's peak just before the computation.
(The peak mark is first lowered to the current RSS through /proc/self/clear_refs, where Linux
allows it, so that memory freed after the set-up does not hide part of the peak.)
The frustum cells come from ``models.frustum.frustum_cells`` for a six-camera ring (224 x 416
images, f = 0.8 * 416 px, cameras 1.8 m above the ground, 60 degrees apart).

    .venv/bin/python bench/bev_memory.py [--device cpu|cuda]
    .venv/bin/python bench/bev_memory.py --worker ours   # one measurement, one JSON line
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.frustum import N_DEPTH_BINS, frustum_cells  # noqa: E402
from models.lss import bev_pool, bev_pool_reference  # noqa: E402

IMAGES, IMAGE_HW, STRIDE, CHANNELS = 6, (224, 416), 4, 64
IMPLEMENTATIONS = {"ours": bev_pool, "reference": bev_pool_reference}


def camera_ring(images: int = IMAGES, hw: tuple[int, int] = IMAGE_HW, height_m: float = 1.8):
    """Identity image augmentations (N, 3, 3), intrinsics (N, 3, 3) and camera -> LiDAR (N, 4, 4)
    of ``images`` cameras looking outwards, evenly spaced in yaw, ``height_m`` above the ground
    (LiDAR frame: x forward, y left, z up; camera frame: x right, y down, z forward)."""
    f = 0.8 * hw[1]
    k = torch.tensor([[f, 0.0, (hw[1] - 1) / 2], [0.0, f, (hw[0] - 1) / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    cam_axes = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64)  # cam -> "forward" frame
    mats = []
    for n in range(images):
        yaw = 2 * math.pi * n / images
        c, s = math.cos(yaw), math.sin(yaw)
        m = torch.eye(4, dtype=torch.float64)
        m[:3, :3] = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64) @ cam_axes
        m[:3, 3] = torch.tensor([0.5 * c, 0.5 * s, height_m], dtype=torch.float64)
        mats.append(m)
    return torch.eye(3, dtype=torch.float64).expand(images, 3, 3), k.expand(images, 3, 3), torch.stack(mats)


def nuscenes_inputs(device: str, *, seed: int = 0):
    """depth_probs (6, 118, 56, 104) and context (6, 64, 56, 104), float32, requiring grad; cells
    of the camera ring; one example."""
    img_aug, intrinsic, cam_to_lidar = camera_ring()
    cams = [slice(n, n + 1) for n in range(IMAGES)]  # one camera at a time: a smaller transient peak
    cells = torch.cat([frustum_cells(IMAGE_HW, STRIDE, img_aug[n], intrinsic[n], cam_to_lidar[n]) for n in cams]).to(device)
    h, w = IMAGE_HW[0] // STRIDE, IMAGE_HW[1] // STRIDE
    gen = torch.Generator().manual_seed(seed)
    depth = torch.randn(IMAGES, N_DEPTH_BINS, h, w, generator=gen).softmax(1).to(device).requires_grad_()
    context = torch.randn(IMAGES, CHANNELS, h, w, generator=gen).to(device).requires_grad_()
    return depth, context, cells, torch.zeros(IMAGES, dtype=torch.long, device=device)


def _peak_bytes_cpu() -> int:
    """This process's peak resident set: VmHWM on Linux, else ru_maxrss. On Linux ru_maxrss also
    carries the peak of the process that spawned this one (kept by the kernel across fork/exec),
    so a worker started from a large parent -- pytest -- would read the parent's figure."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux and BSD report KiB


def _reset_peak_rss() -> bool:
    """Lower the peak-RSS mark to the current RSS (Linux >= 4.0), so that transient memory of the
    set-up is not mistaken for headroom of the measured computation. False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(impl: str, device: str) -> dict:
    """Peak bytes above the inputs, and wall seconds, of one forward + backward of ``impl``."""
    pool = IMPLEMENTATIONS[impl]
    inputs = nuscenes_inputs(device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        gc.collect()
        reset = _reset_peak_rss()
        baseline = _peak_bytes_cpu()
    start = time.perf_counter()
    bev = pool(*inputs, 1)
    bev.square().sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else _peak_bytes_cpu()
    valid = (inputs[2] >= 0).float().mean().item()
    result = {"impl": impl, "device": device, "peak_bytes": peak - baseline, "seconds": seconds, "valid_fraction": valid}
    return result if device == "cuda" else result | {"peak_reset": reset}


def _run_worker(impl: str, device: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", impl, "--device", device], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {impl} worker failed (exit {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", choices=sorted(IMPLEMENTATIONS), help="measure one implementation in this process, print JSON")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.device)))
        return
    results = {impl: _run_worker(impl, args.device) for impl in ("ours", "reference")}
    lifted = IMAGES * N_DEPTH_BINS * (IMAGE_HW[0] // STRIDE) * (IMAGE_HW[1] // STRIDE) * CHANNELS * 4
    what = "torch.cuda.max_memory_allocated above the inputs" if args.device == "cuda" else "peak RSS above the baseline"
    print(f"BEV pooling, one forward + backward, nuScenes shapes (I=6, D=118, 56x104, C=64, B=1) on {_device_name(args.device)}")
    print(f"lifted tensor if materialised: {lifted / 1e9:.2f} GB fp32; frustum points on the grid: {results['ours']['valid_fraction']:.1%}\n")
    print(f"| implementation | peak memory ({what}) | wall time |")
    print("|---|---|---|")
    for impl, r in results.items():
        print(f"| {impl} | {r['peak_bytes'] / 1e6:,.0f} MB | {r['seconds']:.2f} s |")
    ratio = results["reference"]["peak_bytes"] / max(results["ours"]["peak_bytes"], 1)
    speed = results["reference"]["seconds"] / results["ours"]["seconds"]
    print(f"| reference / ours | {ratio:.1f}x | {speed:.2f}x |")


if __name__ == "__main__":
    main()
