"""``hvd export``: a pretraining run's student in another codebase's checkpoint format."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.progress import console


class ExportFormat(str, Enum):
    slidr = "slidr"


def export_command(
    run: Annotated[Path, typer.Argument(help="An `hvd train pretrain` run folder or its checkpoint.pt.", show_default=False)],
    format: Annotated[ExportFormat, typer.Option("--format", help="slidr: SLidR's pretraining checkpoint (also read by HVDistill's and SLidR's downstream code).")] = ExportFormat.slidr,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The file to write. Default: <run folder>/checkpoint-<format>.pt.", show_default=False)] = None,
) -> None:
    """Write the student of a pretraining run as a SLidR checkpoint.

    The file is {"model_points": the backbone and final_1 under SLidR's names (conv0p1s1 ... block8,
    final), "epoch", "config"}, the layout SLidR's fine-tuning loads. Its config records the run's
    input convention: SLidR's downstream code checks voxel_size and cylindrical_coordinates, and
    intensity_divisor says how hvd scaled the intensity (SLidR feeds the raw value). The BEV head has
    no place in SLidR's network and is left out. `hvd train finetune` reads the file back as it is.
    """
    import torch

    from models.checkpoints import load_checkpoint
    from models.slidr import to_slidr_checkpoint

    checkpoint = run / "checkpoint.pt" if run.is_dir() else run
    exported, dropped = to_slidr_checkpoint(load_checkpoint(checkpoint), str(checkpoint))
    path = out or checkpoint.parent / f"checkpoint-{format.value}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save(exported, partial)
    partial.replace(path)  # a killed export leaves no half-written file under the real name
    config = exported["config"]
    voxels = "cylindrical" if config["cylindrical_coordinates"] else "cartesian"
    console.print(f"wrote {len(exported['model_points'])} tensors (SLidR names, epoch {exported['epoch']}) to {path}", highlight=False)
    console.print(f"input: {voxels} voxels of {config['voxel_size']} m, intensity / {config['intensity_divisor']:g} (config.intensity_divisor)", highlight=False)
    if dropped:
        heads = sorted({key.split(".")[0] for key in dropped})
        console.print(f"not exported: {len(dropped)} tensors of {', '.join(heads)} (no counterpart in SLidR's network)", highlight=False)
