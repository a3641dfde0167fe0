"""``hvd train``: pretraining (and, later, fine-tuning) from the stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.options import CatalogOption, SourceOption
from cli.progress import console, progress_bar

app = typer.Typer(help="Training: pretrain the LiDAR student from the stores; fine-tune or linear-probe it on labels.", no_args_is_help=True)


@app.command()
def pretrain(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file of a PretrainConfig (data, losses, optim, run); overrides the preset.", show_default=False)] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="demo (the synthetic demo, minutes on a CPU) or nuscenes (the paper's setting).", show_default=False)] = None,
    catalog: CatalogOption = None,
    source: SourceOption = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (config, checkpoints, TensorBoard).", show_default=False)] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", min=1, help="Stop after this many steps.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run folder's checkpoint, exactly where it stopped.")] = False,
) -> None:
    """Pretrain the MinkUNet34C student by distilling the cached image teacher (IPV + BEV + depth).

    Reads only the stores (`hvd prep all` builds them) and refuses missing or stale ones, naming the
    command to run. Writes config.yaml, checkpoint.pt (student, heads, optimiser, scheduler, position,
    random states, config) and TensorBoard scalars to the run folder. For several GPUs or CPU
    processes: torchrun --nproc-per-node N -m cli.main train pretrain ...
    """
    from pipeline.train import pretrain_config
    from pipeline.train.pretrain import train

    overrides = _overrides(catalog, source, out, max_steps)
    cfg = pretrain_config.build(preset, config, overrides)
    if preset is None and config is None:
        cfg = pretrain_config.build("demo", None, overrides)
    result = _run(train, cfg, "pretrain", resume=resume)
    console.print(f"run folder: {result['out_dir']} (config.yaml, checkpoint.pt, tensorboard/)", highlight=False)


def _run(train, cfg, label: str, **kwargs) -> dict:
    """Run a training loop under a progress bar (losses and examples/s); print the first and last losses."""
    from pipeline.stages import Catalog

    cat = Catalog.load(cfg.data.catalog)
    with progress_bar(label, "step") as bar:
        task = None

        def on_step(step: int, total: int, metrics: dict) -> None:
            nonlocal task
            if task is None:
                task = bar.add_task("", total=total)
            losses = " ".join(f"{k} {v:.3f}" for k, v in _losses(metrics).items())
            bar.update(task, completed=step, description=f"{losses} | {metrics['examples_per_s']:.2f} ex/s")

        result = train(cfg, catalog=cat, on_step=on_step, **kwargs)
    if result["first"]:
        first = " ".join(f"{k} {v:.3f}" for k, v in _losses(result["first"]).items())
        last = " ".join(f"{k} {v:.3f}" for k, v in _losses(result["last"]).items())
        console.print(f"{result['steps']} steps; first step: {first}; last step: {last}", highlight=False)
    return result


def _losses(metrics: dict) -> dict:
    """The loss values of a step's metrics (not its speed, not the gradient norms TensorBoard gets)."""
    return {k: v for k, v in metrics.items() if k != "examples_per_s" and not k.startswith("grad_norm/")}


def _overrides(catalog, source, out, max_steps) -> dict:
    overrides: dict = {"data": {}, "run": {}}
    if catalog is not None:
        overrides["data"]["catalog"] = str(catalog)
    if source is not None:
        overrides["data"]["source"] = source
    if out is not None:
        overrides["run"]["out_dir"] = str(out)
    if max_steps is not None:
        overrides["run"]["max_steps"] = max_steps
    return overrides


@app.command()
def finetune(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file of a FinetuneConfig (data, model, optim, run); overrides the preset.", show_default=False)] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="nuscenes-1pct (few-label fine-tuning), nuscenes-linear (linear probing), demo, demo-linear.", show_default=False)] = None,
    pretrained: Annotated[Optional[Path], typer.Option("--pretrained", help="An `hvd train pretrain` run folder or checkpoint (or a backbone state dict); omit to train from scratch.", show_default=False)] = None,
    linear: Annotated[Optional[bool], typer.Option("--linear/--full", help="Linear probing (backbone frozen) or full fine-tuning; default: the preset's.", show_default=False)] = None,
    label_fraction: Annotated[Optional[float], typer.Option("--label-fraction", min=0.0001, max=1.0, help="Keep every k-th training scene, k = round(1 / fraction), counted as SLidR does: the k-th, 2k-th, ... in scene.json order (0.01: the 7 scenes of the published 1 % tables).", show_default=False)] = None,
    catalog: CatalogOption = None,
    source: SourceOption = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (config, checkpoints, TensorBoard).", show_default=False)] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", min=1, help="Stop after this many steps.", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the head, the batch order and the augmentations.", show_default=False)] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="nuscenes (nuScenes-lidarseg, 16 classes) or semantickitti (19 classes; the source must be a SemanticKITTI one: synth-kitti-demo, semantickitti). Default: the preset's (nuscenes); alone, it picks the demo-semantickitti preset.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run folder's checkpoint, exactly where it stopped.")] = False,
) -> None:
    """Train a segmentation model on nuScenes-lidarseg (or SemanticKITTI) labels: the MinkUNet34C
    backbone (pretrained weights loaded by name and shape, or from scratch) with a new 1x1 head over
    the 16 classes (SemanticKITTI's 19).

    Cross-entropy + Lovasz-softmax, SGD with a cosine schedule and a separate head learning rate;
    a fraction of the devkit's training scenes (every k-th, as SLidR counts) for few-label
    fine-tuning, or the backbone frozen for linear probing. The input convention (voxels, intensity
    scale) is the pretrained weights' own. Prints which pretrained tensors were loaded and which were not. Score the
    result with `hvd eval RUN_FOLDER`.

    SemanticKITTI (--dataset semantickitti, preset semantickitti-1pct for the published setting): the
    same model, losses and input convention with a head over its 19 classes; sequences 00-07 and 09-10
    train, 08 validates; a label fraction keeps every k-th training frame from the first (0.01: every
    100th).
    """
    from pipeline.train import finetune_config
    from pipeline.train.finetune import train

    overrides = _overrides(catalog, source, out, max_steps)
    overrides["model"] = {}
    if pretrained is not None:
        path = pretrained / "checkpoint.pt" if pretrained.is_dir() else pretrained
        overrides["model"]["pretrained"] = str(path)
    if linear is not None:
        overrides["model"]["mode"] = "linear" if linear else "finetune"
    if label_fraction is not None:
        overrides["data"]["label_fraction"] = label_fraction
    if seed is not None:
        overrides["run"]["seed"] = seed
    if dataset is not None:
        if dataset not in ("nuscenes", "semantickitti"):
            from pipeline.errors import HvdError

            raise HvdError(f"unknown --dataset {dataset!r}; choose nuscenes or semantickitti")
        overrides["data"]["dataset"] = dataset
    default = "demo-semantickitti" if dataset == "semantickitti" else "demo"
    cfg = finetune_config.build(preset or (default if config is None else None), config, overrides)

    def on_loaded(report: dict | None, resolved) -> None:
        console.print(report["summary"] if report else "no pretrained weights: training from scratch", highlight=False)
        console.print(f"input: {resolved.model.input.describe()}", highlight=False)

    result = _run(train, cfg, "finetune", resume=resume, on_loaded=on_loaded)
    console.print(f"{result['examples']} {result['unit']} of {len(result['scenes'])} {result['split_source']} training {result['group']}; run folder: {result['out_dir']} (config.yaml, checkpoint.pt, tensorboard/)", highlight=False)
