"""The transfer experiment (docs/METHOD.md sections 8-9): does pretraining help, and does HVDistill
beat its own ablations?

On one synthetic source, for every pretraining seed: pretrain PPKT, SLidR (IPV), HVDistill (IPV + BEV
+ depth) and the ablations IPV + BEV and IPV + depth with the same budget; then linear-probe and
few-label fine-tune each of them -- and a randomly initialised backbone ("scratch") -- starting from
that seed's pretraining, with the same downstream budget; score every downstream model with
per-point mIoU on the validation scenes. Writes ``docs/RESULTS.md`` (mean +- std over pretraining
seeds, per-seed paired differences against SLidR, how far each backbone moved, whether the
pretraining curves flattened) and ``docs/transfer.png``.

Runs go to their own folders under ``--out`` and are skipped when complete (a stopped run resumes
from its checkpoint), so a killed experiment continues where it stopped. ``--jobs`` runs that many
at once, each in its own process on one thread (on 2 cores, two single-threaded runs do more work
per second than one run on two threads). Prerequisites (``make transfer`` does all of it):

    bash scripts/fetch_teacher_weights.sh
    hvd data synth --preset transfer --out data/synth-transfer
    hvd prep all --source synth-transfer
    .venv/bin/python bench/transfer.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_LOSSES = {
    "PPKT": {"ipv": False, "bev": False, "depth": False, "ppkt": True},
    "SLidR": {"ipv": True, "bev": False, "depth": False, "ppkt": False},
    "IPV+BEV": {"ipv": True, "bev": True, "depth": False, "ppkt": False},
    "IPV+depth": {"ipv": True, "bev": False, "depth": True, "ppkt": False},
    "HVDistill": {"ipv": True, "bev": True, "depth": True, "ppkt": False},
}
METHODS = ("scratch", *PRETRAIN_LOSSES)
# Not in the table: run with --diagnostic NAME (pretraining and the linear probe only). BEV+depth is
# HVDistill without the IPV loss: what the two extra losses teach the student on their own.
# random+BN is SLidR's run at learning rate 0: the weights stay at the initialisation and only the
# BatchNorm statistics adapt to the data, the baseline a frozen backbone's probe has to beat.
DIAGNOSTICS = {
    "BEV+depth": {"losses": {"ipv": False, "bev": True, "depth": True, "ppkt": False}},
    "random+BN": {"losses": PRETRAIN_LOSSES["SLidR"], "lr": 0.0},
}
PROTOCOLS = ("linear", "finetune")
LOSS_KEYS = ("ipv", "bev", "depth", "ppkt")


# --- the runs ---------------------------------------------------------------------------------------


def pretrain_config(args, method: str, seed: int) -> dict:
    return {
        "data": {"catalog": args.catalog, "source": args.source, "batch_size": args.batch, "num_workers": 0},
        "model": {"student_width": args.student_width, "bridge_channels": args.bridge_channels, "depth_channels": args.depth_channels},
        "losses": PRETRAIN_LOSSES[method] if method in PRETRAIN_LOSSES else DIAGNOSTICS[method]["losses"],
        "optim": {"lr": DIAGNOSTICS.get(method, {}).get("lr", args.pretrain_lr), "epochs": args.pretrain_epochs},
        "run": {"out_dir": str(args.out / f"pretrain-{method}-s{seed}"), "seed": seed, "checkpoint_every": 50},
    }


def downstream_config(args, method: str, protocol: str, seed: int) -> dict:
    pretrained = None if method == "scratch" else str(args.out / f"pretrain-{method}-s{seed}" / "checkpoint.pt")
    if protocol == "linear":  # frozen backbone, no augmentation: its features are computed once per keyframe
        data = {"label_fraction": args.linear_fraction, "augment": False}
        model = {"mode": "linear", "cache_frozen_features": True}
        optim = {"lr": args.linear_lr, "head_lr": args.linear_lr, "epochs": args.linear_epochs}
    else:
        data = {"label_fraction": args.label_fraction}
        model = {"mode": "finetune"}
        optim = {"lr": args.finetune_lr, "head_lr": args.head_lr, "epochs": args.finetune_epochs}
    return {
        "data": {"catalog": args.catalog, "source": args.source, "batch_size": args.batch, "num_workers": 0, **data},
        "model": {"pretrained": pretrained, "bn_momentum": args.bn_momentum, "width": args.student_width, **model},
        "optim": optim,
        "run": {"out_dir": str(args.out / f"{protocol}-{method}-s{seed}"), "seed": seed, "checkpoint_every": 50},
    }


def run_job(job: dict) -> None:
    """One run, in this process: train (resuming a stopped run), log every step to curves.json;
    pretraining also records how far the backbone moved, downstream runs are evaluated."""
    import torch

    from models.checkpoints import load_checkpoint
    from pipeline.stages import Catalog

    torch.set_num_threads(1)
    config_dict, kind = job["config"], job["kind"]
    run_dir = Path(config_dict["run"]["out_dir"])
    catalog = Catalog.load(config_dict["data"]["catalog"])
    if kind == "pretrain":
        from pipeline.train import pretrain_config as module
        from pipeline.train.pretrain import build_net, train
        from pipeline.train.pretrain_data import open_stores
    else:
        from pipeline.train import finetune_config as module
        from pipeline.train.finetune import train
    config = module.build(None, None, config_dict)
    if not (run_dir / "summary.json").exists():
        resume = (run_dir / "checkpoint.pt").exists()
        curves_path = run_dir / "curves.json"
        curves = json.loads(curves_path.read_text()) if resume and curves_path.exists() else []
        start = time.perf_counter()

        def on_step(step: int, total: int, metrics: dict) -> None:
            curves[:] = [c for c in curves if c["step"] < step] + [{"step": step, **metrics}]
            if step % 10 == 0 or step == total:
                losses = " ".join(f"{k} {v:.3f}" for k, v in metrics.items() if "/" not in k)
                print(f"  {run_dir.name}: step {step}/{total} {losses}", flush=True)
                curves_path.parent.mkdir(parents=True, exist_ok=True)
                curves_path.write_text(json.dumps(curves))

        train(config, catalog=catalog, resume=resume, on_step=on_step)
        curves_path.write_text(json.dumps(curves))
        print(f"  {run_dir.name}: {time.perf_counter() - start:.0f} s", flush=True)
    if kind == "pretrain" and not (run_dir / "moved.json").exists():
        initial = build_net(config, open_stores(catalog, config.data.source)).student.backbone.state_dict()
        trained = load_checkpoint(run_dir / "checkpoint.pt")["student"]
        (run_dir / "moved.json").write_text(json.dumps({"backbone_moved": backbone_moved(initial, trained)}))
    if kind != "pretrain" and not (run_dir / "eval-val.json").exists():
        from pipeline.train.evaluate import evaluate, write

        write(evaluate(run_dir, catalog=catalog, num_workers=0), run_dir / "eval-val.json")


def backbone_moved(initial: dict, trained: dict) -> float:
    """|backbone - initial| / |initial| over the backbone's parameters (BatchNorm statistics excluded)."""
    keys = [k for k in initial if initial[k].is_floating_point() and "running" not in k]
    moved = sum(float(((trained[f"backbone.{k}"] - initial[k]) ** 2).sum()) for k in keys) ** 0.5
    return moved / sum(float((initial[k] ** 2).sum()) for k in keys) ** 0.5


def _launch(job: dict) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, "--job", json.dumps(job)], cwd=REPO, env=env)
    if done.returncode:
        raise RuntimeError(f"{job['config']['run']['out_dir']} failed (exit {done.returncode}); re-run to resume")


def diagnostic(args, method: str) -> None:
    """Pretrain ``method`` (one of DIAGNOSTICS) for every seed, probe it linearly, and print its mIoU
    per seed beside SLidR's and scratch's from the same experiment folder."""
    jobs = [[{"kind": "pretrain", "config": pretrain_config(args, method, s)} for s in args.seeds],
            [{"kind": "linear", "config": downstream_config(args, method, "linear", s)} for s in args.seeds]]
    for phase in jobs:
        with ThreadPoolExecutor(args.jobs) as pool:
            for future in [pool.submit(_launch, job) for job in phase]:
                future.result()
    table = {}
    for m in (method, "SLidR", "scratch"):
        evals = {s: _json(args.out / f"linear-{m}-s{s}" / "eval-val.json") for s in args.seeds}
        table[m] = {s: None if e is None else round(100 * e["miou"], 2) for s, e in evals.items()}
    moved = {s: (_json(args.out / f"pretrain-{method}-s{s}" / "moved.json") or {}).get("backbone_moved") for s in args.seeds}
    result = {"linear probe mIoU % per seed": table, "backbone moved": moved}
    (args.out / f"diagnostic-{method}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def run(args) -> None:
    """Every pretraining run (the longest first), then every downstream run, ``args.jobs`` at a time."""
    pretrain = [{"kind": "pretrain", "config": pretrain_config(args, m, s)} for m in sorted(PRETRAIN_LOSSES, key=lambda m: -sum(PRETRAIN_LOSSES[m].values())) for s in args.seeds]
    downstream = [{"kind": p, "config": downstream_config(args, m, p, s)} for p in ("finetune", "linear") for m in METHODS for s in args.seeds]
    for phase in (pretrain, downstream):
        with ThreadPoolExecutor(args.jobs) as pool:
            for future in [pool.submit(_launch, job) for job in phase]:
                future.result()


# --- the report ---------------------------------------------------------------------------------------


def _json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def collect(args) -> dict:
    results: dict = {"eval": {}, "curves": {}, "moved": {}}
    for protocol in PROTOCOLS:
        for method in METHODS:
            for seed in args.seeds:
                results["eval"].setdefault(protocol, {}).setdefault(method, {})[seed] = _json(args.out / f"{protocol}-{method}-s{seed}" / "eval-val.json")
    for method in PRETRAIN_LOSSES:
        for seed in args.seeds:
            run_dir = args.out / f"pretrain-{method}-s{seed}"
            results["curves"].setdefault(method, {})[seed] = _json(run_dir / "curves.json") or []
            results["moved"].setdefault(method, {})[seed] = (_json(run_dir / "moved.json") or {}).get("backbone_moved")
    return results


def _smooth(y: np.ndarray, k: int = 15) -> np.ndarray:
    if len(y) < k:
        return y
    return np.convolve(np.pad(y, (k // 2, k - 1 - k // 2), mode="edge"), np.ones(k) / k, mode="valid")


def _mean_curve(curves: dict, key: str) -> np.ndarray | None:
    runs = [np.array([c[key] for c in run]) for run in curves.values() if run and key in run[0]]
    if not runs:
        return None
    n = min(len(r) for r in runs)
    return np.mean([r[:n] for r in runs], axis=0)


def flattening(curve: np.ndarray) -> tuple[float, float]:
    """(relative drop over the first half, over the last quarter) of a smoothed loss curve."""
    y = _smooth(curve)
    n = len(y)
    first, half, three_q, last = y[0], y[n // 2], y[3 * n // 4], y[-1]
    return (first - half) / abs(first), (three_q - last) / abs(three_q)


def miou(results: dict, protocol: str, method: str) -> np.ndarray:
    return np.array([100 * r["miou"] for r in results["eval"][protocol][method].values() if r])


def plot(args, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(22, 4.8))
    ax = axes[0]
    width = 0.38
    for p, protocol in enumerate(PROTOCOLS):
        values = [miou(results, protocol, m) for m in METHODS]
        ax.bar(np.arange(len(METHODS)) + (p - 0.5) * width, [v.mean() for v in values], width, yerr=[v.std() for v in values], capsize=3, label="linear probe" if protocol == "linear" else f"fine-tune {args.label_fraction:.0%} scenes")
    ax.set_xticks(np.arange(len(METHODS)), METHODS, rotation=20)
    ax.set_ylabel("val mIoU %")
    ax.set_title(f"downstream, mean ± std over {len(args.seeds)} pretraining seeds")
    ax.legend()
    for ax, key, title in [(axes[1], "ipv", "pretraining: IPV loss"), (axes[2], "bev", "pretraining: BEV loss (and depth x 100)")]:
        for method, curves in results["curves"].items():
            y = _mean_curve(curves, key)
            if y is not None:
                ax.plot(np.arange(1, len(y) + 1), _smooth(y), label=method)
        if key == "bev":
            for method in ("IPV+depth", "HVDistill"):
                y = _mean_curve(results["curves"].get(method, {}), "depth")
                if y is not None:
                    ax.plot(np.arange(1, len(y) + 1), 100 * _smooth(y), "--", label=f"{method} depth x 100")
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.legend(fontsize=8)
    ax = axes[3]
    for group in ("student_backbone", "student_heads", "decoder", "bridge", "depth_net"):
        y = _mean_curve(results["curves"].get("HVDistill", {}), f"grad_norm/{group}")
        if y is not None:
            ax.semilogy(np.arange(1, len(y) + 1), _smooth(y), label=group)
    ax.set_xlabel("step")
    ax.set_title("HVDistill: gradient norm per parameter group")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def _wall_minutes(out: Path) -> float:
    """From the first run's start to the last evaluation, over the table's runs (not the diagnostics)."""
    runs = [out / f"{kind}-{m}-s{s}" for kind in ("pretrain", *PROTOCOLS) for m in METHODS for s in range(100)]
    starts = [r.joinpath("config.yaml").stat().st_mtime for r in runs if r.joinpath("config.yaml").exists()]
    ends = [r.joinpath("eval-val.json").stat().st_mtime for r in runs if r.joinpath("eval-val.json").exists()]
    return (max(ends) - min(starts)) / 60 if starts and ends else float("nan")


def _teacher_line(args) -> str:
    from pipeline.stages import Catalog

    params = Catalog.load(args.catalog).artifact("teacher_cache", args.source).params
    if params.weights is None:
        return f"**RANDOM initialisation** of {params.encoder} (no weights file in the catalog): the teacher carries no learned image features"
    return f"{params.encoder} with the weights `{params.weights}` (sha256 {params.weights_sha256[:16]}…), input {params.input_size[0]}x{params.input_size[1]}, output stride {params.output_stride}, PCA {params.pca_channels or 'none'}"


def _pm(v: np.ndarray) -> str:
    return f"{v.mean():.2f} ± {v.std():.2f}" if len(v) else "—"


def write_results(args, results: dict, path: Path) -> None:
    seeds = args.seeds
    rows = []
    for m in METHODS:
        moved = np.array([v for v in results["moved"].get(m, {}).values() if v is not None])
        moved_text = f"{100 * moved.mean():.1f} %" if len(moved) else "—"
        rows.append(f"| {m} | {_pm(miou(results, 'linear', m))} | {_pm(miou(results, 'finetune', m))} | {moved_text} |")
    per_seed = [f"| {p} | {m} | " + " | ".join(f"{100 * results['eval'][p][m][s]['miou']:.2f}" if results["eval"][p][m][s] else "—" for s in seeds) + " |" for p in PROTOCOLS for m in METHODS]
    paired = []
    for m in METHODS:
        if m == "SLidR":
            continue
        cells = []
        for p in PROTOCOLS:
            a, b = miou(results, p, m), miou(results, p, "SLidR")
            d = a - b if len(a) == len(b) == len(seeds) else np.array([])
            cells.append((" ".join(f"{x:+.2f}" for x in d) + f" (mean {d.mean():+.2f} ± {d.std():.2f})") if len(d) else "—")
        paired.append(f"| {m} − SLidR | " + " | ".join(cells) + " |")
    curves = []
    for m, runs in results["curves"].items():
        for key in LOSS_KEYS:
            y = _mean_curve(runs, key)
            if y is not None:
                early, late = flattening(y)
                curves.append(f"| {m} | {key} | {_smooth(y)[0]:.3f} → {_smooth(y)[-1]:.3f} | {100 * early:.1f} % | {100 * late:.1f} % |")
    any_report = next(r for p in results["eval"].values() for m in p.values() for r in m.values() if r)
    per_class = []
    for p in PROTOCOLS:
        for m in METHODS:
            ious = [[r["iou"][c] for r in results["eval"][p][m].values() if r] for c in any_report["classes_present"]]
            per_class.append(f"| {p} | {m} | " + " | ".join(f"{100 * np.mean(v):.1f}" for v in ious) + " |")
    steps = args.pretrain_epochs * args.steps_per_epoch
    text = f"""# Transfer results: does pretraining help, and does HVDistill beat its ablations?

Produced by `bench/transfer.py` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPU cores, {args.jobs} runs at a time on one
thread each, no GPU; {_wall_minutes(args.out):.0f} min of wall time from the first pretraining run to the last evaluation, interruptions included).
Plot: [transfer.png](transfer.png).

## Setting

- Data: the synthetic `{args.source}` source (`hvd data synth --preset transfer`: 8 scenes x 8 keyframes, 320x180
  cameras, a 32-beam LiDAR at 542 azimuth steps), its scene split (6 training scenes, 2 validation scenes: the devkit's mini_train / mini_val);
  pretraining uses the training scenes only.
- Teacher: {_teacher_line(args)}.
- Networks, the same for every method: MinkUNet34C at **width {args.student_width}** (every plane scaled; same depth),
  and for the methods with BEV or depth the teacher heads with the bridge to **{args.bridge_channels} channels** and a
  **{args.depth_channels}-wide depth net** (published: the encoder's channels and 256). The published widths cost about
  3x more per step on this CPU (`bench/train.py`, docs/BENCHMARKS.md), which would not fit the budget.
- Pretraining, each method the same budget: {args.pretrain_epochs} epochs = {steps} steps of batch {args.batch} (SGD lr
  {args.pretrain_lr}, momentum 0.9, dampening 0.1, wd 1e-4, cosine over the run, **no gradient clipping**, fp32, all
  augmentations of [docs/METHOD.md](METHOD.md) section 3). Losses as published: IPV (weight 1), BEV (0.25, at most 4096 matched cells),
  depth (60, the reference's mean over labelled cells x bins); PPKT: 4096 point-pixel pairs.
- Downstream, each method the same budget, batch {args.batch}, CE + Lovász-softmax, BatchNorm momentum {args.bn_momentum}:
  - linear probe: {args.linear_epochs} epochs, backbone frozen (eval mode), lr {args.linear_lr}, label fraction
    {args.linear_fraction} (every {round(1 / args.linear_fraction)}-th training scene), no augmentation (the frozen
    features are computed once per keyframe, `model.cache_frozen_features`);
  - fine-tune: {args.finetune_epochs} epochs, rotation/flip augmentation, backbone lr {args.finetune_lr}, head lr
    {args.head_lr}, label fraction {args.label_fraction} (every {round(1 / args.label_fraction)}-th training scene).
- Metric: per-point mIoU on the {any_report['keyframes']} validation keyframes through the voxel inverse map, over the
  classes present there ({len(any_report['classes_present'])} of 16), ignore excluded.
- Seeds: pretraining {', '.join(map(str, seeds))}; each downstream run uses its pretraining run's seed (head
  initialisation, batch order, augmentation), so the ± below is the spread over pretraining seeds.

## Results (val mIoU %, mean ± std over {len(seeds)} pretraining seeds)

| method | linear probe | fine-tune ({args.label_fraction:.0%} of scenes) | backbone moved in pretraining |
|---|---|---|---|
""" + "\n".join(rows) + f"""

Paired by pretraining seed (seed {', '.join(map(str, seeds))}), difference against SLidR in mIoU points:

| | linear probe | fine-tune |
|---|---|---|
""" + "\n".join(paired) + f"""

Per seed:

| protocol | method | {' | '.join(f'seed {s}' for s in seeds)} |
|---|---|{'---|' * len(seeds)}
""" + "\n".join(per_seed) + f"""

Per class (IoU %, mean over seeds):

| protocol | method | {' | '.join(any_report['classes_present'])} |
|---|---|{'---|' * len(any_report['classes_present'])}
""" + "\n".join(per_class) + """

Pretraining curves (mean over seeds, smoothed over 15 steps): did they flatten? The drop over the
first half of the run against the drop over its last quarter.

| method | loss | start → end | drop, first half | drop, last quarter |
|---|---|---|---|---|
""" + "\n".join(curves) + f"""

![results and training curves](transfer.png)

## Reproduce

```
make transfer
# or, step by step:
bash scripts/fetch_teacher_weights.sh
.venv/bin/hvd data synth --preset transfer --out data/synth-transfer
.venv/bin/hvd prep all --source synth-transfer
{' '.join(['.venv/bin/python', 'bench/transfer.py', *sys.argv[1:]])}
```

Every run folder (`runs/transfer/<pretrain|linear|finetune>-<method>-s<seed>/`) holds its `config.yaml`,
`checkpoint.pt`, `curves.json` (losses and per-group gradient norms of every step), TensorBoard scalars, and
`moved.json` (pretraining) or `eval-val.json` with the confusion matrix (downstream).
"""
    path.write_text(text + "\n" + args.discussion)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", default=str(REPO / "data_catalog.yaml"))
    parser.add_argument("--source", default="synth-transfer")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="pretraining seeds; each downstream run uses its pretraining's")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--student-width", type=float, default=0.5)
    parser.add_argument("--bridge-channels", type=int, default=256)
    parser.add_argument("--depth-channels", type=int, default=64)
    parser.add_argument("--pretrain-epochs", type=int, default=8, help="pretraining length (the cosine schedule spans it)")
    parser.add_argument("--pretrain-lr", type=float, default=0.1)
    parser.add_argument("--linear-epochs", type=int, default=20)
    parser.add_argument("--linear-fraction", type=float, default=1.0)
    parser.add_argument("--linear-lr", type=float, default=0.2)
    parser.add_argument("--finetune-epochs", type=int, default=8)
    parser.add_argument("--label-fraction", type=float, default=0.34)
    parser.add_argument("--finetune-lr", type=float, default=0.02)
    parser.add_argument("--head-lr", type=float, default=0.2)
    parser.add_argument("--bn-momentum", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "transfer")
    parser.add_argument("--results", type=Path, default=REPO / "docs" / "RESULTS.md")
    parser.add_argument("--discussion", type=Path, default=REPO / "docs" / "transfer_discussion.md", help="appended to RESULTS.md (the analysis, written by people)")
    parser.add_argument("--report-only", action="store_true", help="write RESULTS.md and the plot from the finished runs")
    parser.add_argument("--diagnostic", choices=sorted(DIAGNOSTICS), help="pretrain and linearly probe this loss combination only (not in the table)")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        run_job(json.loads(args.job))
        return
    if args.diagnostic:
        diagnostic(args, args.diagnostic)
        return
    args.discussion = args.discussion.read_text() if args.discussion.exists() else ""
    if not args.report_only:
        run(args)
    from pipeline.stages import Catalog
    from pipeline.stages.index import ensure_index

    index, _ = ensure_index(Catalog.load(args.catalog), args.source)
    args.steps_per_epoch = len(index.rows("train")) // args.batch
    results = collect(args)
    plot(args, results, args.results.parent / "transfer.png")
    write_results(args, results, args.results)
    summary = {p: {m: miou(results, p, m).tolist() for m in METHODS} for p in PROTOCOLS}
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
