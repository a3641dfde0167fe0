"""``hvd train``: pretraining (and, later, fine-tuning) from the stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.options import CatalogOption, SourceOption
from cli.progress import console, progress_bar

app = typer.Typer(help="Training: pretrain the LiDAR student from the stores.", no_args_is_help=True)


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
    from pipeline import pretrain_config
    from pipeline.catalog import Catalog
    from pipeline.train_pretrain import train

    overrides: dict = {"data": {}, "run": {}}
    if catalog is not None:
        overrides["data"]["catalog"] = str(catalog)
    if source is not None:
        overrides["data"]["source"] = source
    if out is not None:
        overrides["run"]["out_dir"] = str(out)
    if max_steps is not None:
        overrides["run"]["max_steps"] = max_steps
    cfg = pretrain_config.build(preset, config, overrides)
    if preset is None and config is None:
        cfg = pretrain_config.build("demo", None, overrides)
    cat = Catalog.load(cfg.data.catalog)
    with progress_bar("pretrain", "step") as bar:
        task = None

        def on_step(step: int, total: int, metrics: dict) -> None:
            nonlocal task
            if task is None:
                task = bar.add_task("", total=total)
            losses = " ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "examples_per_s")
            bar.update(task, completed=step, description=f"{losses} | {metrics['examples_per_s']:.2f} ex/s")

        result = train(cfg, catalog=cat, resume=resume, on_step=on_step)
    if result["first"]:
        first = " ".join(f"{k} {v:.3f}" for k, v in result["first"].items() if k != "examples_per_s")
        last = " ".join(f"{k} {v:.3f}" for k, v in result["last"].items() if k != "examples_per_s")
        console.print(f"{result['steps']} steps; first step: {first}; last step: {last}", highlight=False)
    console.print(f"run folder: {result['out_dir']} (config.yaml, checkpoint.pt, tensorboard/)", highlight=False)
