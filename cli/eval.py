"""``hvd eval``: per-point mIoU of a fine-tuned model on the validation scenes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.options import CatalogOption, SourceOption
from cli.progress import bar_updater, console, progress_bar


def eval_command(
    run: Annotated[Path, typer.Argument(help="An `hvd train finetune` run folder or its checkpoint.pt.", show_default=False)],
    catalog: CatalogOption = None,
    source: SourceOption = None,
    split: Annotated[str, typer.Option("--split", help="val (the official validation scenes) or train.")] = "val",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="JSON file of the report. Default: eval-<split>.json in the run folder.", show_default=False)] = None,
    max_examples: Annotated[Optional[int], typer.Option("--max-examples", min=1, help="Score only the split's first N keyframes.", show_default=False)] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="DataLoader worker processes.")] = 1,
    export: Annotated[Optional[Path], typer.Option("--export", help="Also write the predictions in the nuScenes-lidarseg submission layout in this folder (lidarseg/<split>/<lidar token>_lidarseg.bin, <split>/submission.json), for the devkit's LidarSegEval or the benchmark server.", show_default=False)] = None,
) -> None:
    """Score a fine-tuned model: per-point predictions through the voxel inverse map against the
    nuScenes-lidarseg labels (16 classes, ignore excluded, no test-time augmentation).

    A run fine-tuned on SemanticKITTI (--dataset semantickitti) is scored on its validation sequence
    08 over the 19 classes; the run's config says which dataset, so no option is needed.

    Prints per-class IoU, mIoU and accuracy; writes them with the confusion matrix (rows: ground
    truth, columns: prediction) as JSON. The mIoU follows the devkit's LidarSegEval: a class counts
    when it is in the ground truth or predicted. Splits are the devkit's official ones
    (val = val / mini_val) when it knows the dataset's scenes.

    With --export DIR the same predictions are written as a lidarseg submission; score it with
    nuscenes.eval.lidarseg.evaluate.LidarSegEval(nusc, DIR, eval_set).

    Beside the JSON: <report>-confusion.png (the matrix, each ground-truth row normalised) and
    <report>-iou.png (a bar per class).
    """
    from pipeline.stages import Catalog
    from pipeline.train import evaluate, seg_metrics

    checkpoint = run / "checkpoint.pt" if run.is_dir() else run
    cat = Catalog.load(catalog) if catalog is not None else None  # None: the run's own catalog
    with progress_bar("eval", "keyframe") as bar:
        result = evaluate.evaluate(checkpoint, catalog=cat, source=source, split=split, max_examples=max_examples, num_workers=workers, on_progress=bar_updater(bar, split), export=export)
    console.print(seg_metrics.table(result), highlight=False)
    path = out or checkpoint.parent / f"eval-{split}.json"
    evaluate.write(result, path)
    console.print(f"report: {path}", highlight=False)
    from pipeline.viz.charts import write_eval_charts

    console.print(f"charts: {', '.join(str(p) for p in write_eval_charts(result, path))}", highlight=False)
    if "export" in result:
        done = result["export"]
        console.print(f"submission: {done['keyframes']} keyframes of {done['eval_set']} in {done['folder']}", highlight=False)
