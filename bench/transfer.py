"""The transfer experiment (METHOD.md sections 8-9): does pretraining help the downstream task?

On one synthetic source: pretrain PPKT (PPKT loss only), SLidR (IPV only) and HVDistill (IPV + BEV +
depth) with the same number of steps (per pretraining seed); then, for every downstream seed, linear
probing and few-label fine-tuning of each, and of a randomly initialised backbone ("scratch"), with
the same budget; score
every downstream model with per-point mIoU on the validation scenes. Writes ``docs/RESULTS.md``
(mean +- std per method, the exact configs) and ``docs/transfer.png`` (results and training curves).

Every run goes to its own folder under ``--out`` and is skipped when already complete, so a killed
experiment continues where it stopped. Prerequisites (``make transfer`` does all of it):

    hvd data synth --preset transfer --out data/synth-transfer
    hvd prep all --source synth-transfer
    .venv/bin/python bench/transfer.py
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_LOSSES = {
    "PPKT": {"ipv": False, "bev": False, "depth": False, "ppkt": True},
    "SLidR": {"ipv": True, "bev": False, "depth": False, "ppkt": False},
    "HVDistill": {"ipv": True, "bev": True, "depth": True, "ppkt": False},
}
METHODS = ("scratch", *PRETRAIN_LOSSES)
PROTOCOLS = ("linear", "finetune")


def pretrain_config(args, method: str, seed: int) -> dict:
    return {
        "data": {"catalog": args.catalog, "source": args.source, "batch_size": args.batch, "num_workers": 1},
        "losses": PRETRAIN_LOSSES[method],
        "optim": {"lr": args.pretrain_lr, "epochs": args.pretrain_epochs, "clip_grad_norm": 5.0},
        "run": {"out_dir": str(args.out / f"pretrain-{method}-s{seed}"), "seed": seed, "max_steps": args.pretrain_steps, "checkpoint_every": 50},
    }


def pretrain_seed(args, seed: int) -> int:
    """The pretraining run a downstream seed starts from: its own seed when pretrained with it."""
    return seed if seed in args.pretrain_seeds else args.pretrain_seeds[0]


def downstream_config(args, method: str, protocol: str, seed: int) -> dict:
    pretrained = None if method == "scratch" else str(args.out / f"pretrain-{method}-s{pretrain_seed(args, seed)}" / "checkpoint.pt")
    if protocol == "linear":  # frozen backbone, no augmentation: its features are computed once per keyframe
        data = {"label_fraction": args.linear_fraction, "augment": False}
        model = {"mode": "linear", "cache_frozen_features": True}
        optim = {"lr": args.linear_lr, "head_lr": args.linear_lr, "epochs": args.linear_epochs}
        steps = args.linear_steps
    else:
        data = {"label_fraction": args.label_fraction}
        model = {"mode": "finetune"}
        optim = {"lr": args.finetune_lr, "head_lr": args.head_lr, "epochs": args.downstream_epochs}
        steps = args.downstream_steps
    return {
        "data": {"catalog": args.catalog, "source": args.source, "batch_size": args.batch, "num_workers": 1, **data},
        "model": {"pretrained": pretrained, "bn_momentum": args.bn_momentum, **model},
        "optim": optim,
        "run": {"out_dir": str(args.out / f"{protocol}-{method}-s{seed}"), "seed": seed, "max_steps": steps, "checkpoint_every": 50},
    }


def _done(run_dir: Path, steps: int) -> bool:
    summary = run_dir / "summary.json"
    return summary.exists() and json.loads(summary.read_text())["steps"] >= steps


def _train(kind: str, config_dict: dict, catalog, steps: int) -> None:
    """Train one run (resuming a stopped one), logging every step's losses to curves.json."""
    run_dir = Path(config_dict["run"]["out_dir"])
    if _done(run_dir, steps):
        return
    if kind == "pretrain":
        from pipeline import pretrain_config as module
        from pipeline.train_pretrain import train
    else:
        from pipeline import finetune_config as module
        from pipeline.train_finetune import train
    config = module.build(None, None, config_dict)
    curves_path = run_dir / "curves.json"
    resume = (run_dir / "checkpoint.pt").exists()
    curves = json.loads(curves_path.read_text()) if resume and curves_path.exists() else []
    start = time.perf_counter()

    def on_step(step: int, total: int, metrics: dict) -> None:
        curves[:] = [c for c in curves if c["step"] < step] + [{"step": step, **metrics}]
        if step % 10 == 0 or step == total:
            print(f"  {run_dir.name}: step {step}/{total} " + " ".join(f"{k} {v:.3f}" for k, v in metrics.items()), flush=True)
            curves_path.parent.mkdir(parents=True, exist_ok=True)
            curves_path.write_text(json.dumps(curves))

    train(config, catalog=catalog, resume=resume, on_step=on_step)
    curves_path.write_text(json.dumps(curves))
    print(f"  {run_dir.name}: {time.perf_counter() - start:.0f} s", flush=True)


def _evaluate(run_dir: Path, catalog, max_examples: int | None) -> dict:
    from pipeline.evaluate import evaluate, write

    path = run_dir / "eval-val.json"
    if not path.exists():
        write(evaluate(run_dir, catalog=catalog, max_examples=max_examples, num_workers=1), path)
    return json.loads(path.read_text())


def run(args) -> dict:
    import torch

    from pipeline.catalog import Catalog

    torch.set_num_threads(args.threads)
    catalog = Catalog.load(args.catalog)
    results: dict = {}
    for seed in args.seeds:
        for method in PRETRAIN_LOSSES:
            if pretrain_seed(args, seed) == seed:
                print(f"pretrain {method} seed {seed}", flush=True)
                _train("pretrain", pretrain_config(args, method, seed), catalog, args.pretrain_steps)
        for method in METHODS:
            for protocol in PROTOCOLS:
                print(f"{protocol} {method} seed {seed}", flush=True)
                config = downstream_config(args, method, protocol, seed)
                _train("finetune", config, catalog, config["run"]["max_steps"])
                report = _evaluate(Path(config["run"]["out_dir"]), catalog, args.eval_examples)
                results.setdefault(protocol, {}).setdefault(method, {})[seed] = report
                print(f"  mIoU {100 * report['miou']:.2f}  accuracy {100 * report['accuracy']:.2f}", flush=True)
    return results


# --- the report -----------------------------------------------------------------------------------------


def _curves(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def _mean_curve(args, pattern: str, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    runs = [_curves(args.out / pattern.format(seed=s) / "curves.json") for s in args.seeds]
    runs = [r for r in runs if r and key in r[0]]
    if not runs:
        return None
    n = min(len(r) for r in runs)
    values = np.array([[c[key] for c in r[:n]] for r in runs])
    return np.arange(1, n + 1), values.mean(axis=0)


def _smooth(y: np.ndarray, k: int = 5) -> np.ndarray:
    if len(y) < k:
        return y
    return np.convolve(np.pad(y, (k // 2, k - 1 - k // 2), mode="edge"), np.ones(k) / k, mode="valid")


def plot(args, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    ax = axes[0]
    width = 0.38
    for p, protocol in enumerate(PROTOCOLS):
        means = [100 * np.mean([r["miou"] for r in results[protocol][m].values()]) for m in METHODS]
        stds = [100 * np.std([r["miou"] for r in results[protocol][m].values()]) for m in METHODS]
        ax.bar(np.arange(len(METHODS)) + (p - 0.5) * width, means, width, yerr=stds, capsize=3, label="linear probe" if protocol == "linear" else f"fine-tune {args.label_fraction:.0%} scenes")
    ax.set_xticks(np.arange(len(METHODS)), METHODS)
    ax.set_ylabel("val mIoU %")
    ax.set_title(f"downstream mIoU, mean ± std over {len(args.seeds)} seeds")
    ax.legend()
    for ax, keys, title in [
        (axes[1], [("SLidR", "ipv"), ("HVDistill", "ipv"), ("PPKT", "ppkt")], "pretraining: IPV / PPKT loss"),
        (axes[2], [("HVDistill", "bev"), ("HVDistill", "depth")], "pretraining: HVDistill BEV and depth losses"),
    ]:
        for method, key in keys:
            curve = _mean_curve(args, f"pretrain-{method}-s{{seed}}", key)
            if curve:
                ax.plot(curve[0], _smooth(curve[1]), label=f"{method} {key}")
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.legend()
    ax = axes[3]
    for method in METHODS:
        curve = _mean_curve(args, f"finetune-{method}-s{{seed}}", "total")
        if curve:
            ax.plot(curve[0], _smooth(curve[1]), label=method)
    ax.set_xlabel("step")
    ax.set_title("fine-tuning loss (CE + Lovász)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def _wall_minutes(out: Path) -> float:
    """Minutes from the first run folder's config to the newest evaluation report under ``out``."""
    starts = [p.stat().st_mtime for p in out.glob("*/config.yaml")]
    ends = [p.stat().st_mtime for p in out.glob("*/eval-val.json")]
    return (max(ends) - min(starts)) / 60 if starts and ends else float("nan")


def write_results(args, results: dict, path: Path, png: Path, elapsed_s: float) -> None:
    def cell(protocol: str, method: str) -> str:
        v = [100 * r["miou"] for r in results[protocol][method].values()]
        return f"{np.mean(v):.2f} ± {np.std(v):.2f}"

    def acc(protocol: str, method: str) -> str:
        v = [100 * r["accuracy"] for r in results[protocol][method].values()]
        return f"{np.mean(v):.1f}"

    per_seed = []
    for protocol in PROTOCOLS:
        for method in METHODS:
            per_seed.append(f"| {protocol} | {method} | " + " | ".join(f"{100 * results[protocol][method][s]['miou']:.2f}" for s in args.seeds) + " |")
    any_report = next(iter(results["linear"]["scratch"].values()))
    per_class = []
    for protocol in PROTOCOLS:
        for method in METHODS:
            ious = [[r["iou"][c] for r in results[protocol][method].values()] for c in any_report["classes_present"]]
            per_class.append(f"| {protocol} | {method} | " + " | ".join(f"{100 * np.mean(v):.1f}" for v in ious) + " |")
    command = " ".join(["python", "bench/transfer.py", *sys.argv[1:]])
    text = f"""# Transfer results: does pretraining help?

Produced by `bench/transfer.py` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {args.threads} CPU threads, no GPU;
{_wall_minutes(args.out):.0f} min of wall time from the first pretraining run to the last evaluation, on a 2-core VM
shared with other work). Plot: [transfer.png](transfer.png).

## Setting

- Data: the synthetic `{args.source}` source (`hvd data synth --preset transfer`: 8 scenes x 8 keyframes,
  320x180 cameras, a 32-beam LiDAR at 542 azimuth steps), its seeded scene split (6 training scenes,
  2 validation scenes); pretraining uses the training scenes only.
- Teacher: the stores' ResNet-50 cache. **No pretrained image weights can be downloaded on this machine**, so the
  teacher is the seeded random initialisation (`teacher_cache.weights: null`), at 64x112 input, PCA 64.
- Pretraining, each method the same budget: {args.pretrain_steps} steps of batch {args.batch} (SGD lr {args.pretrain_lr},
  momentum 0.9, dampening 0.1, wd 1e-4, gradient norm clipped at 5, all augmentations of METHOD.md section 3).
  PPKT: the PPKT loss only; SLidR: IPV only; HVDistill: IPV + 0.25 BEV + 60 depth.
- Downstream, each method the same budget, batch {args.batch}, CE + Lovász-softmax,
  BatchNorm momentum {args.bn_momentum} (short runs; METHOD.md's 0.05 would leave the running statistics half-initial):
  - linear probe: {args.linear_steps} steps ({args.linear_epochs} epochs), backbone frozen (eval mode), head lr {args.linear_lr},
    label fraction {args.linear_fraction} (every {round(1 / args.linear_fraction)}-th training scene), no augmentation, so
    the frozen features are computed once per keyframe (`model.cache_frozen_features`) -- the paper probes on every scene
    with augmentation, which this CPU budget does not allow;
  - fine-tune: {args.downstream_steps} steps, rotation/flip augmentation, backbone lr {args.finetune_lr}, head lr {args.head_lr}, label fraction
    {args.label_fraction} (every {round(1 / args.label_fraction)}-th training scene).
- Metric: per-point mIoU on {any_report['keyframes']} validation keyframes through the voxel inverse map, over the
  classes present there ({len(any_report['classes_present'])} of 16), ignore excluded.
- Seeds: downstream {', '.join(map(str, args.seeds))} (head initialisation, batch order, augmentation); pretraining
  {', '.join(map(str, args.pretrain_seeds))}{'' if args.pretrain_seeds == args.seeds else f' (the other downstream seeds start from pretraining seed {args.pretrain_seeds[0]}, so the spread is the downstream variance only)'}.

## Results (val mIoU %, mean ± std over {len(args.seeds)} seeds)

| method | linear probe | fine-tune ({args.label_fraction:.0%} of scenes) | accuracy % (linear / fine-tune) |
|---|---|---|---|
""" + "\n".join(f"| {m} | {cell('linear', m)} | {cell('finetune', m)} | {acc('linear', m)} / {acc('finetune', m)} |" for m in METHODS) + f"""

Per seed:

| protocol | method | {' | '.join(f'seed {s}' for s in args.seeds)} |
|---|---|{'---|' * len(args.seeds)}
""" + "\n".join(per_seed) + f"""

Per class (IoU %, mean over seeds):

| protocol | method | {' | '.join(any_report['classes_present'])} |
|---|---|{'---|' * len(any_report['classes_present'])}
""" + "\n".join(per_class) + f"""

![results and training curves](transfer.png)

## Reproduce

```
make transfer
# or, step by step:
.venv/bin/hvd data synth --preset transfer --out data/synth-transfer
.venv/bin/hvd prep all --source synth-transfer
{command}
```

Every run folder (`{args.out}/<protocol>-<method>-s<seed>/`) holds its `config.yaml`, `checkpoint.pt`,
`curves.json`, TensorBoard scalars and (downstream) `eval-val.json` with the confusion matrix.
"""
    path.write_text(text + "\n" + args.discussion)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default=str(REPO / "data_catalog.yaml"))
    parser.add_argument("--source", default="synth-transfer")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="downstream seeds (head, batch order, augmentation)")
    parser.add_argument("--pretrain-seeds", type=int, nargs="+", default=[0], help="pretraining seeds; downstream seeds not among them start from the first")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--pretrain-steps", type=int, default=24)
    parser.add_argument("--pretrain-epochs", type=int, default=4, help="the cosine schedule's length in epochs")
    parser.add_argument("--pretrain-lr", type=float, default=0.1)
    parser.add_argument("--downstream-steps", type=int, default=8, help="fine-tuning steps")
    parser.add_argument("--linear-steps", type=int, default=80, help="linear-probing steps")
    parser.add_argument("--linear-epochs", type=int, default=10, help="the linear probe's cosine schedule in epochs")
    parser.add_argument("--linear-fraction", type=float, default=0.34, help="label fraction of linear probing")
    parser.add_argument("--eval-examples", type=int, default=8, help="score only the first N validation keyframes")
    parser.add_argument("--downstream-epochs", type=int, default=2)
    parser.add_argument("--label-fraction", type=float, default=0.34)
    parser.add_argument("--linear-lr", type=float, default=0.2)
    parser.add_argument("--finetune-lr", type=float, default=0.02)
    parser.add_argument("--head-lr", type=float, default=0.2)
    parser.add_argument("--bn-momentum", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "transfer")
    parser.add_argument("--results", type=Path, default=REPO / "docs" / "RESULTS.md")
    parser.add_argument("--discussion", type=Path, default=REPO / "docs" / "transfer_discussion.md", help="appended to RESULTS.md (the analysis, written by people)")
    args = parser.parse_args()
    args.discussion = args.discussion.read_text() if args.discussion.exists() else ""
    args.pretrain_seeds = args.pretrain_seeds or args.seeds
    start = time.perf_counter()
    results = run(args)
    elapsed = time.perf_counter() - start
    png = args.results.parent / "transfer.png"
    plot(args, results, png)
    write_results(args, results, args.results, png, elapsed)
    summary = {p: {m: [results[p][m][s]["miou"] for s in args.seeds] for m in METHODS} for p in PROTOCOLS}
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
