"""Training-step benchmark: a pretraining step reading the teacher cache, against the same step
running the frozen teacher on the raw camera images (the reference's way), in one run.

Both use the same student, heads, losses and batches (the validation view, so the teacher sees the
same full images the cache was computed from); each runs in its own process so peak memory is its
own. Reports examples/s and peak memory (CPU: peak RSS above the process baseline; CUDA:
max_memory_allocated) and the ratios.

    .venv/bin/python bench/train.py [--source synth-demo] [--batch 2] [--steps 3]
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


def worker(mode: str, source: str, batch_size: int, steps: int) -> dict:
    import numpy as np
    import torch

    from pipeline import teacher_cache
    from pipeline.augment import AugmentConfig
    from pipeline.catalog import Catalog
    from pipeline.pretrain_config import LossSettings
    from pipeline.pretrain_data import DataConfig, PretrainDataset, collate, open_stores
    from pipeline.sensor_data import load_image
    from pipeline.train_pretrain import PretrainNet, loss_config
    from models.losses import total

    catalog = Catalog.load("data_catalog.yaml")
    stores = open_stores(catalog, source)
    params = stores.artifacts["teacher_cache"].params
    tc = stores.open()["teacher_cache"]
    pca = (torch.from_numpy(tc.read_shared("pca_mean")), torch.from_numpy(tc.read_shared("pca_components"))) if params.pca_channels else None
    dataset = PretrainDataset(stores, DataConfig(source=source, split="train", augment=AugmentConfig(enabled=False)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    net = PretrainNet(loss_config(LossSettings()), tuple(params.input_size), params.output_stride, pca).to(device)
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
                feats = teacher_cache.project(feats, pca[0].numpy(), pca[1].numpy())
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="synth-demo")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.source, args.batch, args.steps)))
        return
    results = {}
    for mode in ("ours", "reference"):
        done = subprocess.run([sys.executable, __file__, "--worker", mode, "--source", args.source, "--batch", str(args.batch), "--steps", str(args.steps)], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    ours, ref = results["ours"], results["reference"]
    device = ours["device"] if ours["device"] != "cpu" else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    print(f"# bench/train.py on {args.source}, batch {args.batch}, {args.steps} timed steps, {device}\n")
    print("| training step | examples/s | peak memory | \n|---|---|---|")
    print(f"| reference: frozen teacher on the raw images every step | {ref['examples_per_s']:.3f} | {ref['peak_bytes'] / 2**20:.0f} MiB |")
    print(f"| ours: teacher features read from the cache | {ours['examples_per_s']:.3f} | {ours['peak_bytes'] / 2**20:.0f} MiB |")
    print(f"| ours / reference | {ours['examples_per_s'] / ref['examples_per_s']:.2f}x faster | {ours['peak_bytes'] / max(ref['peak_bytes'], 1):.2f}x the memory |")


if __name__ == "__main__":
    main()
