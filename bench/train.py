"""Training-step benchmarks, each measured against its baseline in the same run.

1. The step profile (``--profile``, the default): where one HVDistill pretraining step (IPV + BEV +
   depth, training augmentation) spends its time -- data loading, student forward + backward, the
   teacher heads (decoder, bridge, depth net), BEV pooling, the losses, the optimiser -- and the
   examples/s of the whole step, for the published network widths ("before": MinkUNet34C, the
   bridge back to the encoder's channels, a 256-wide depth net) and for the narrower widths of the
   CPU transfer experiment ("after", ``--student-width``, ``--bridge-channels``, ``--depth-channels``).
   Each part is timed on its own (forward and backward of that part alone, on the step's real
   tensors), so the parts add up to about the whole step.
2. Cache vs teacher (``--teacher``): a pretraining step reading the teacher cache, against the same
   step running the frozen teacher on the raw camera images (the reference's way). Same student,
   heads, losses and batches (the validation view, so the teacher sees the full images the cache was
   computed from); each runs in its own process so peak memory is its own (CPU: peak RSS above the
   process baseline; CUDA: max_memory_allocated).

    .venv/bin/python bench/train.py [--source synth-transfer] [--batch 2] [--steps 3] [--teacher] [--published-widths]

On a GPU (scripts/gpu_check.sh): --source synth-gpu --batch 4 --published-widths --teacher, the
nuScenes image size and the paper's batch per GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _stores(source: str, catalog: str):
    from pipeline.stages import Catalog
    from pipeline.train.pretrain_data import open_stores

    return open_stores(Catalog.load(catalog), source)


def worker(mode: str, source: str, catalog: str, batch_size: int, steps: int) -> dict:
    """Cache vs teacher: examples/s and peak memory of ``steps`` steps (after one warm-up step)."""
    import numpy as np
    import torch

    from models.losses import total
    from pipeline.data.sensor_data import load_image
    from pipeline.stages import teacher_cache
    from pipeline.train import pretrain_config
    from pipeline.train.pretrain import build_net
    from pipeline.train.pretrain_data import PretrainDataset, collate

    stores = _stores(source, catalog)
    params = stores.artifacts["teacher_cache"].params
    config = pretrain_config.build(None, None, {"data": {"catalog": catalog, "source": source, "batch_size": batch_size, "augment": {"enabled": False}}})
    dataset = PretrainDataset(stores, config.data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = build_net(config, stores).to(device)
    pca = (net.pca_mean.cpu().numpy(), net.pca_components.cpu().numpy()) if hasattr(net, "pca_mean") else None
    optimiser = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    batches = [collate([dataset[(s * batch_size + i) % len(dataset)] for i in range(batch_size)]) for s in range(steps + 1)]
    if mode == "reference":
        teacher_cache.encoder(params)  # build the frozen teacher once, as the reference does

    def step(batch) -> None:
        if mode == "reference":  # the teacher on every image of the step
            rows = [dataset.stores.index.record(int(np.flatnonzero(np.array(dataset.stores.index.tokens) == t)[0])) for t in batch["tokens"]]
            images = np.stack([load_image(p, params.input_size) for r in rows for p in r["cam_paths"]])
            feats = teacher_cache.encode(params, images)
            if pca is not None:
                feats = teacher_cache.project(feats, *pca)
            batch["features"] = torch.from_numpy(feats.astype(np.float32))
        parts = net(batch, torch.Generator(device=device).manual_seed(0))
        optimiser.zero_grad()
        total(parts, net.losses).backward()
        optimiser.step()

    step(batches[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    _reset_peak()
    baseline = _peak_rss()
    start = time.perf_counter()
    for batch in batches[1:]:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _peak_rss() - baseline
    return {"examples_per_s": steps * batch_size / seconds, "peak_bytes": peak, "device": str(device)}


# --- the step profile --------------------------------------------------------------------------------

PARTS = (
    "data loading (read stores, augment, voxelise, collate)",
    "student forward + backward (MinkUNet34C + final_1 + BEV head)",
    "frustum geometry (BEV cell of every frustum point)",
    "teacher heads forward + backward (decoder, bridge, depth net)",
    "BEV pooling forward + backward (before: the whole 256 x 256 grid; after: the student's cells)",
    "losses forward + backward (IPV, BEV, depth)",
    "optimiser step (SGD, all parameters)",
)


def _timed(fn, device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def profile_worker(source: str, catalog: str, batch_size: int, steps: int, network: dict, pooling: str) -> dict:
    """Seconds per step of each part of an HVDistill step and of the whole step, mean over ``steps``
    steps after a warm-up; each part runs forward and backward alone on the step's real tensors.
    ``pooling``: "grid" pools the whole BEV grid and reads the loss's cells from it (the way before
    ``bev_pool_cells``; the whole step then runs that way too), "cells" pools at those cells only."""
    import torch
    import torch.nn.functional as F

    from models import frustum
    from models.frustum import BEV_SIZE
    from models.losses import bev_matched_loss, depth_loss, ipv_loss, total
    from models.lss import bev_pool, bev_pool_cells
    from models.student import sparse_input
    from models.teacher_heads import BEV_NORM_EPS, camera_vector
    from pipeline.train import pretrain_config
    from pipeline.train.pretrain import build_net
    from pipeline.train.pretrain_data import PretrainDataset, collate

    stores = _stores(source, catalog)
    config = pretrain_config.build(None, None, {"data": {"catalog": catalog, "source": source, "batch_size": batch_size}, "model": network})
    dataset = PretrainDataset(stores, config.data, seed=0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = build_net(config, stores).to(device).train()
    if pooling == "grid":  # the whole step as before bev_pool_cells: the grid is pooled, then read at the cells
        net.heads.forward = _grid_pooling(net.heads)
    optimiser = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    pca = (net.pca_mean, net.pca_components) if hasattr(net, "pca_mean") else None
    g = torch.Generator().manual_seed(0)

    def rand_like(t):
        return torch.randn(t.shape, generator=g).to(t.device, t.dtype)

    times = {part: 0.0 for part in (*PARTS, "whole step")}
    examples = torch.randperm(len(dataset), generator=g).tolist()
    for s in range(steps + 1):
        chosen = [examples[(s * batch_size + i) % len(examples)] for i in range(batch_size)]
        t: dict[str, float] = {}
        batch = None

        def load():
            nonlocal batch
            batch = collate([dataset[i] for i in chosen])

        t[PARTS[0]] = _timed(load, device)
        x = lambda: sparse_input(batch["coords"], [f.to(device) for f in batch["feats"]])  # noqa: E731
        out = None

        def student():
            nonlocal out
            out = net.student(x())
            ((out.voxel_features * rand_like(out.voxel_features)).sum() + (out.bev_features * rand_like(out.bev_features)).sum()).backward()

        t[PARTS[1]] = _timed(student, device)
        cells = camera = None

        def geometry():
            nonlocal cells, camera
            with torch.no_grad():
                cells = frustum.frustum_cells(net.out_hw, net.stride, batch["img_aug"], batch["intrinsics"], batch["cam_to_lidar"]).to(device)
            camera = camera_vector(batch["intrinsics"], batch["img_aug"], batch["cam_to_ego"]).float().to(device)

        t[PARTS[2]] = _timed(geometry, device)
        heads = net.heads
        pixel = depth = context = None

        def teacher_heads():
            nonlocal pixel, depth, context
            pixel = heads.decoder(batch["features"].to(device), pca)
            depth, context = heads.depthnet(heads.bridge(pixel), camera)
            ((pixel * rand_like(pixel)).sum() + (depth * rand_like(depth)).sum() + (context * rand_like(context)).sum()).backward()

        t[PARTS[3]] = _timed(teacher_heads, device)
        depth, context = depth.detach().requires_grad_(), context.detach().requires_grad_()
        bev = None

        index = out.bev_index
        rows = (index[:, 0] * BEV_SIZE + index[:, 1]) * BEV_SIZE + index[:, 2]

        def pool():
            nonlocal bev
            image_batch = batch["image_batch"].to(device)
            if pooling == "grid":
                grid = F.normalize(bev_pool(depth, context, cells, image_batch, batch["size"]), dim=1, eps=BEV_NORM_EPS)
                bev = grid.permute(0, 2, 3, 1)[index[:, 0], index[:, 1], index[:, 2]]
            else:
                bev = F.normalize(bev_pool_cells(depth, context, cells, image_batch, batch["size"], rows), dim=1, eps=BEV_NORM_EPS)
            (bev * rand_like(bev)).sum().backward()

        t[PARTS[4]] = _timed(pool, device)
        point_features = out.voxel_features.detach()[batch["inverse"].to(device)].requires_grad_()
        pixel, bev, student_bev = pixel.detach().requires_grad_(), bev.detach().requires_grad_(), out.bev_features.detach().requires_grad_()
        pairs = (batch["pair_point"].to(device), batch["pair_image"].to(device), batch["pair_pixel"].to(device))

        def losses():
            parts = {
                "ipv": ipv_loss(point_features, pixel, batch["superpixels"].to(device), batch["sp_count"].to(device), *pairs),
                "bev": bev_matched_loss(student_bev, bev, generator=torch.Generator(device=device).manual_seed(0)),
                "depth": depth_loss(depth, batch["depth_target"].to(device)),
            }
            total(parts, net.losses).backward()

        t[PARTS[5]] = _timed(losses, device)
        t[PARTS[6]] = _timed(optimiser.step, device)
        optimiser.zero_grad(set_to_none=True)

        def whole():
            load()
            parts = net(batch, torch.Generator(device=device).manual_seed(0))
            optimiser.zero_grad(set_to_none=True)
            total(parts, net.losses).backward()
            optimiser.step()

        t["whole step"] = _timed(whole, device)
        if s:  # the first step warms up
            for key, value in t.items():
                times[key] += value / steps
    params = {"student": sum(p.numel() for p in net.student.parameters()), "heads": sum(p.numel() for p in net.heads.parameters())}
    return {"seconds": times, "examples_per_s": batch_size / times["whole step"], "parameters": params, "device": str(device), "network": config.model.model_dump()}


def _grid_pooling(heads):
    """``heads.forward`` as it was before ``bev_pool_cells``: the whole grid, read at ``bev_rows``."""
    forward = heads.forward

    def whole_grid(*args, bev_rows=None, **kwargs):
        out = forward(*args, bev_rows=None, **kwargs)
        if bev_rows is not None and out.bev is not None:
            out.bev = out.bev.permute(0, 2, 3, 1).reshape(-1, out.bev.shape[1])[bev_rows]
        return out

    return whole_grid


def _run_worker(args, *extra: str) -> dict:
    command = [sys.executable, __file__, "--source", args.source, "--catalog", args.catalog, "--batch", str(args.batch), "--steps", str(args.steps), *extra]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _device(result: dict) -> str:
    return result["device"] if result["device"] != "cpu" else f"CPU ({platform.machine()}, {os.cpu_count()} cores, {os.environ.get('OMP_NUM_THREADS', 'all')} threads)"


def print_profile(args) -> None:
    narrow = {"student_width": args.student_width, "bridge_channels": args.bridge_channels, "depth_channels": args.depth_channels}
    networks = {
        "before (published widths, whole-grid pooling)": ({}, "grid"),
        # --published-widths: both at the published widths, so that only the pooling differs (a GPU)
        "after (published widths, pooling at the cells)" if args.published_widths else "after (experiment widths, pooling at the cells)": ({} if args.published_widths else narrow, "cells"),
    }
    results = {name: _run_worker(args, "--profile-worker", json.dumps(network), "--pooling", pooling) for name, (network, pooling) in networks.items()}
    before, after = results.values()
    print(f"# bench/train.py step profile on {args.source}, HVDistill (IPV + BEV + depth), batch {args.batch}, mean of {args.steps} steps, {_device(before)}\n")
    print("| part of one step | " + " | ".join(f"{name}: s" for name in results) + " | share after |")
    print("|---|" + "---|" * (len(results) + 1))
    for part in (*PARTS, "whole step"):
        print(f"| {part} | " + " | ".join(f"{r['seconds'][part]:.3f}" for r in results.values()) + f" | {after['seconds'][part] / after['seconds']['whole step']:.0%} |")
    print("| examples/s | " + " | ".join(f"{r['examples_per_s']:.3f}" for r in results.values()) + " | |")
    print("| parameters: student / teacher heads (M) | " + " | ".join(f"{r['parameters']['student'] / 1e6:.1f} / {r['parameters']['heads'] / 1e6:.1f}" for r in results.values()) + " | |")
    print(f"\nafter / before: {after['examples_per_s'] / before['examples_per_s']:.2f}x the examples/s; networks: " + "; ".join(f"{name}: {r['network']}" for name, r in results.items()))


def print_teacher_comparison(args) -> None:
    results = {mode: _run_worker(args, "--worker", mode) for mode in ("ours", "reference")}
    ours, ref = results["ours"], results["reference"]
    print(f"\n# bench/train.py cache vs teacher on {args.source}, batch {args.batch}, {args.steps} timed steps, {_device(ours)}\n")
    print("| training step | examples/s | peak memory | \n|---|---|---|")
    print(f"| reference: frozen teacher on the raw images every step | {ref['examples_per_s']:.3f} | {ref['peak_bytes'] / 2**20:.0f} MiB |")
    print(f"| ours: teacher features read from the cache | {ours['examples_per_s']:.3f} | {ours['peak_bytes'] / 2**20:.0f} MiB |")
    print(f"| ours / reference | {ours['examples_per_s'] / ref['examples_per_s']:.2f}x faster | {ours['peak_bytes'] / max(ref['peak_bytes'], 1):.2f}x the memory |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="synth-transfer")
    parser.add_argument("--catalog", default=str(Path(__file__).resolve().parents[1] / "data_catalog.yaml"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--student-width", type=float, default=0.5, help="'after': the student's width multiplier")
    parser.add_argument("--bridge-channels", type=int, default=256, help="'after': the bridge's output channels")
    parser.add_argument("--depth-channels", type=int, default=64, help="'after': the depth net's inner width")
    parser.add_argument("--published-widths", action="store_true", help="'after' at the published widths too: only the BEV pooling differs")
    parser.add_argument("--teacher", action="store_true", help="also: the cache vs running the teacher every step")
    parser.add_argument("--no-profile", action="store_true", help="skip the step profile")
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--profile-worker", help=argparse.SUPPRESS)
    parser.add_argument("--pooling", choices=["grid", "cells"], default="cells", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.source, args.catalog, args.batch, args.steps)))
        return
    if args.profile_worker is not None:
        print(json.dumps(profile_worker(args.source, args.catalog, args.batch, args.steps, json.loads(args.profile_worker), args.pooling)))
        return
    if not args.no_profile:
        print_profile(args)
    if args.teacher:
        print_teacher_comparison(args)


if __name__ == "__main__":
    main()
